"""Who holds a replication slot on the source, and ending a stale stream of ours.

A wal-receive (or its pg_receivewal) that outlived its scheduler keeps the slot active, and a
new stream through it fails. The new leader reads the holder from pg_replication_slots joined
with pg_stat_activity (application name, client address, since when) and, when the name says
it is one of ours (STREAM_APPLICATION), ends its backend with pg_terminate_backend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from permafrost.config.settings import SourceSettings
from permafrost.errors import SourceError
from permafrost.postgres import tools as pgtools
from permafrost.text import first_line

STREAM_APPLICATION = "permafrost-wal-receive"  # + "/host:pid" of the wal-receive process

_HOLDER = """
SELECT s.active_pid, a.application_name, a.client_addr::text, a.backend_start
FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
WHERE s.slot_name = %s AND s.active
"""


@dataclass(frozen=True)
class SlotHolder:
    """The backend streaming through a slot now, as the server sees it."""

    pid: int
    application: str
    client: str | None
    since: datetime | None

    @property
    def ours(self) -> bool:
        return self.application.startswith(STREAM_APPLICATION)

    @property
    def owner(self) -> tuple[str, int] | None:
        """The host and pid of the wal-receive that opened the stream, when it is ours."""
        _, _, tail = self.application.partition("/")
        host, _, pid = tail.rpartition(":")
        return (host, int(pid)) if self.ours and host and pid.isdigit() else None


def stream_application(host: str, pid: int) -> str:
    """The application_name wal-receive gives pg_receivewal's connection (at most 63 bytes)."""
    return f"{STREAM_APPLICATION}/{host[:40]}:{pid}"


def stream_conninfo(source: SourceSettings, database: str, application: str) -> str:
    """pg_receivewal's connection string, with the application name we recognise it by."""
    from psycopg.conninfo import make_conninfo  # imported here: start-up cost, as in tools

    return make_conninfo(pgtools.conninfo(source, database), application_name=application)


def slot_holder(source: SourceSettings, slot: str) -> SlotHolder | None:
    """The backend holding `slot` active, or None when the slot is free (or absent)."""
    import psycopg  # imported here: wal-push imports this module and never needs it

    with pgtools.connect(source, pgtools.cluster_database(source), autocommit=True) as conn:
        try:
            row = conn.execute(_HOLDER, (slot,)).fetchone()
        except psycopg.Error as exc:
            raise SourceError(f"cannot read pg_replication_slots: {first_line(exc)}") from None
    if row is None or row[0] is None:
        return None
    return SlotHolder(int(row[0]), row[1] or "", row[2], row[3])


def end_stream(source: SourceSettings, slot: str, holder: SlotHolder, wait: float = 10) -> bool:
    """Terminate the holder's backend and wait for the slot to be free; whether it is."""
    import psycopg  # imported here, as in slot_holder

    with pgtools.connect(source, pgtools.cluster_database(source), autocommit=True) as conn:
        try:
            conn.execute("SELECT pg_terminate_backend(%s)", (holder.pid,))
        except psycopg.Error as exc:  # another role's backend needs pg_signal_backend
            raise SourceError(f"pg_terminate_backend({holder.pid}): {first_line(exc)}") from None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        current = slot_holder(source, slot)
        if current is None or current.pid != holder.pid:
            return current is None
        time.sleep(0.2)
    return False
