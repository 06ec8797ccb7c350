"""Row counts taken while pg_restore is still working, so the check after it is shorter.

A restore counts every table's rows before it renames the staging database (engine.py). Done
after pg_restore exits, that is one more pass over every table with nothing else running: a
quarter of a second on the benchmark's 1.1 GB database, longer on a larger one. But a table's
rows are final once pg_restore's COPY into it has committed (what follows, in the post-data
section, is indexes, constraints and triggers), and pg_restore then goes on with the next table
or the indexes, mostly on one core. So a thread watches `pg_stat_progress_copy` (PostgreSQL 14
and newer) in the staging database: a table seen there being loaded and then no longer is
counted at once, on its own connection, while pg_restore goes on.

What it finds is only ever a shortcut: a table is taken as checked when its early count equals
the manifest's, since rows another session sees are committed and nothing in a restore removes
them afterwards. Any other early count (a COPY seen ending just before its commit, a table not
seen at all, a server older than 14) leaves the table to the count after pg_restore, as before;
and when its session did not last the whole restore (an error, or a restore that started again
from a copy, whose new staging database ended every session in the old one), nothing it
counted is used. Counting never holds up pg_restore for long: each count waits at most LOCK_WAIT for
its table's lock (pg_restore's ALTER TABLE takes the table for itself) and gives up otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from permafrost.postgres import ddl
from permafrost.repo.manifest import TableCount

if TYPE_CHECKING:
    from permafrost.postgres.tools import Connection

log = logging.getLogger("permafrost")
POLL_S = 0.1
LOCK_WAIT = "200ms"

Key = tuple[str, str]


class EarlyCounts:
    """Counts tables as pg_restore finishes loading them; `stop()` returns those that matched."""

    def __init__(
        self, connect: Callable[[], Connection], tables: list[TableCount], expected: dict[Key, int]
    ) -> None:
        self._connect = connect
        self._wanted = {(t.schema, t.table) for t in tables}
        self._expected = expected
        self._checked: dict[Key, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="early-counts", daemon=True)

    def start(self) -> EarlyCounts:
        self._thread.start()
        return self

    def stop(self) -> dict[Key, int]:
        """The tables whose early count equals the manifest's, with that count."""
        self._stop.set()
        self._thread.join()
        return dict(self._checked)

    def _run(self) -> None:
        try:
            conn = self._connect()
        except Exception as exc:  # the count after pg_restore does it all, as before
            log.debug("early row counts: no connection: %s", exc)
            return
        try:
            self._watch(conn)
        except Exception as exc:
            # Its session ended (a restore that starts again from a copy drops and makes the
            # staging database anew, ending every session in it) or failed: nothing it counted
            # is trusted; the count after pg_restore does it all.
            log.debug("early row counts stopped: %s", exc)
            self._checked.clear()
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _watch(self, conn: Connection) -> None:
        if ddl.tables_being_loaded(conn) is None:
            return  # before PostgreSQL 14: no pg_stat_progress_copy
        conn.execute(f"SET lock_timeout = '{LOCK_WAIT}'")
        loading: set[Key] = set()
        while not self._stop.wait(POLL_S):
            now = ddl.tables_being_loaded(conn) or set()
            for key in sorted(loading - now):
                if key in self._wanted and key not in self._checked:
                    rows = ddl.count_rows_unless_locked(conn, *key)  # None: pg_restore has it
                    if rows is not None and rows == self._expected.get(key):
                        self._checked[key] = rows
            loading = now
        conn.execute("SELECT 1")  # the session lasted the whole restore (see _run)
