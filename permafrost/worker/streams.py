"""One WAL stream per cluster, on whichever process holds the cluster's stream lock.

The lock is a session advisory lock (WAL_STREAM_LOCK, the cluster's name) on a metadata
connection of the holder's own, with TCP keepalives (`connect_leader`), as the scheduler's
leadership is: a holder killed with -9 closes its session, a vanished machine's session is
dropped within about half a minute, and either way the lock is free. Every candidate tries for it
every `poll` seconds; the one that gets it runs `permafrost wal-receive` (wal/supervisor.py)
until it stops, or until its session is lost, when it stops the stream at once, since another
process may already hold the lock. Its children die with it (PR_SET_PDEATHSIG), so the
replication slot is free for the next holder's pg_receivewal.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from permafrost.catalog.db import STORE_ERRORS
from permafrost.catalog.store import Catalog, connect_leader
from permafrost.config.settings import Settings
from permafrost.errors import CatalogUnavailable
from permafrost.logs import Say
from permafrost.text import first_line

WAL_STREAM_LOCK = 0x77616C73  # 'wals'
Stream = Callable[[threading.Event], None]  # runs until the event is set


class StreamHolder:
    """Try for the cluster's stream lock; while held, run the stream; start over when lost."""

    def __init__(
        self,
        settings: Settings,
        say: Say,
        cluster: str,
        stream: Stream,
        stop: threading.Event,
        poll: float = 5.0,
    ) -> None:
        self.settings, self.say, self.cluster = settings, say, cluster
        self.stream, self.stop, self.poll = stream, stop, poll
        self.holding = False

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"wal-stream:{self.cluster}", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        """Until `stop`: hold the lock and stream, or wait for the holder to go."""
        assert self.settings.metadata_url is not None
        while not self.stop.is_set():
            catalog = None
            try:
                catalog = connect_leader(self.settings.metadata_url, "permafrost-wal-stream")
                while not self.stop.is_set():
                    if catalog.try_lock(WAL_STREAM_LOCK, self.cluster):
                        self._hold(catalog)
                        return
                    self.stop.wait(self.poll)
            except STORE_ERRORS as exc:
                self.say(f"WAL stream of cluster {self.cluster}: {first_line(exc)}; trying again")
                self.stop.wait(self.poll)
            finally:
                self.holding = False
                if catalog is not None:
                    with contextlib.suppress(Exception):
                        catalog.close()

    def _hold(self, catalog: Catalog) -> None:
        """Stream while the lock is ours: its session checked every `poll` seconds."""
        self.holding = True
        self.say(
            f"holding the WAL stream of cluster {self.cluster}",
            event="wal_stream_taken",
            cluster=self.cluster,
        )
        term = threading.Event()
        streaming = threading.Thread(target=self.stream, args=[term], daemon=True)
        streaming.start()
        try:
            while not self.stop.wait(self.poll) and streaming.is_alive():
                if not catalog.holds(WAL_STREAM_LOCK, self.cluster):
                    break
        finally:
            term.set()  # stopped, or the session (and so the lock) is gone: stop streaming now
            streaming.join(timeout=max(self.settings.schedules.stop_grace, 30) + 5)
            self.say(
                f"released the WAL stream of cluster {self.cluster}",
                event="wal_stream_released",
                cluster=self.cluster,
            )
        if not self.stop.is_set():  # the caller connects again and tries for the lock
            raise CatalogUnavailable(
                f"lost the session holding the WAL stream lock of {self.cluster}"
            )
