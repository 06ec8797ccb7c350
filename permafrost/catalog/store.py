"""The metadata store: PostgreSQL, schema `permafrost`, all of Permafrost's SQL.

`Catalog` is one object over one connection, composed of one class per table family, each in
its own module with its own SQL: backups (and verifications, usage), jobs, tasks, wal,
heartbeats, audit, alerts, and the advisory locks and migrations of db.
"""

from __future__ import annotations

import psycopg

from permafrost.catalog import db
from permafrost.catalog.alerts import AlertRows
from permafrost.catalog.audit import AuditRows
from permafrost.catalog.backups import BackupRows
from permafrost.catalog.copies import CopyRows
from permafrost.catalog.db import Locks
from permafrost.catalog.drills import DrillRows
from permafrost.catalog.heartbeats import HeartbeatRows
from permafrost.catalog.jobs import JobRows
from permafrost.catalog.repositories import RepositoryRows
from permafrost.catalog.sources import SourceRows
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


class Catalog(
    BackupRows,
    JobRows,
    TaskRows,
    WalRows,
    HeartbeatRows,
    AuditRows,
    AlertRows,
    RepositoryRows,
    DrillRows,
    SourceRows,
    CopyRows,
    Locks,
):
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def migrate(self) -> list[str]:
        """Apply the migrations this database has not seen; return their names.

        A scoped session steps out of its scope for them: they are about the tables."""
        scoped = self.scoped
        if scoped:
            self.unscope()
        applied = db.migrate(self.conn)
        if scoped:
            self.rescope()
        return applied
