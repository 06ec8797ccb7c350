"""The metadata store: PostgreSQL, schema `permafrost`, all of Permafrost's SQL.

`Catalog` is one object over one connection, composed of one class per table family, each in
its own module with its own SQL: backups (and verifications, usage), jobs, tasks, wal,
heartbeats, audit, and the advisory locks and migrations of db.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from permafrost.catalog import db
from permafrost.catalog.audit import AuditRows
from permafrost.catalog.backups import BackupRows
from permafrost.catalog.db import Locks, Rows
from permafrost.catalog.heartbeats import HeartbeatRows
from permafrost.catalog.jobs import JobRows
from permafrost.catalog.tasks import TASK_CHANNEL, TaskRows
from permafrost.catalog.wal import WalRows
from permafrost.config.settings import Secret
from permafrost.errors import CatalogUnavailable

__all__ = ["TASK_CHANNEL", "Catalog", "connect", "connect_leader"]


def connect(url: Secret | None) -> Catalog:
    if url is None:
        raise CatalogUnavailable(
            "METADATA_DATABASE_URL is not set: the catalog lives in a PostgreSQL database "
            "(for example postgresql://permafrost@metadata/permafrost)"
        )
    catalog = Catalog(db.open_connection(url))
    catalog.migrate()
    return catalog


def connect_leader(url: Secret, application_name: str) -> Catalog:
    """The catalog on a session that holds a leader's lock (see db.open_leader_session)."""
    catalog = Catalog(db.open_leader_session(url, application_name))
    catalog.migrate()
    return catalog


class _AlertRows(Rows):
    def raise_alert(
        self, key: str, severity: str, summary: str, details: dict[str, Any] | None = None
    ) -> bool:
        """Make an alert active (or refresh it); True when it was not active before."""
        with self._errors("raise an alert"):
            row = self.conn.execute(
                "INSERT INTO alerts (key, severity, summary, details) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (key) WHERE status = 'active' DO UPDATE SET last_seen = now(),"
                " severity = EXCLUDED.severity, summary = EXCLUDED.summary,"
                " details = EXCLUDED.details RETURNING (xmax = 0)",
                (key, severity, summary, Jsonb(details or {})),
            ).fetchone()
        return bool(row and row[0])

    def resolve_alert(self, key: str) -> bool:
        with self._errors("resolve an alert"):
            cur = self.conn.execute(
                "UPDATE alerts SET status = 'resolved', resolved_at = now()"
                " WHERE key = %s AND status = 'active'",
                (key,),
            )
        return cur.rowcount > 0

    def alerts(self, *, active: bool | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = "SELECT * FROM alerts"
        if active is not None:
            query += " WHERE status = 'active'" if active else " WHERE status = 'resolved'"
        with self._errors("read alerts"), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query + " ORDER BY last_seen DESC LIMIT %s", (limit,)).fetchall()


class Catalog(BackupRows, JobRows, TaskRows, WalRows, HeartbeatRows, AuditRows, _AlertRows, Locks):
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def migrate(self) -> list[str]:
        """Apply the migrations this database has not seen; return their names."""
        return db.migrate(self.conn)
