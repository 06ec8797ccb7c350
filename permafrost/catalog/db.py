"""The metadata store's connection: opening it, the schema's migrations, advisory locks, and
database errors, translated in one place.

Migrations are the numbered files in migrations/, applied in order, each once, in one
transaction under an advisory lock, so several services starting together do not race.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from typing import Any

import psycopg

from permafrost.config.settings import Secret
from permafrost.errors import CatalogUnavailable
from permafrost.text import first_line

SCHEMA = "permafrost"
MIGRATION_LOCK = 0x7065726D  # 'perm'

# What a caller outside the catalog catches for "the metadata store is gone", so that it need
# not import the driver: the translated error and any database error not (yet) translated.
STORE_ERRORS: tuple[type[Exception], ...] = (CatalogUnavailable, psycopg.Error)


class db_errors:
    """Turn a lost or failing metadata connection into CatalogUnavailable: the one translation.

    `with db_errors("list backups"): ...` around every statement the catalog runs.
    """

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            raise CatalogUnavailable(
                f"metadata store failed to {self.action}: {first_line(exc)}"
            ) from exc


# UTF8 on the wire whatever the database's encoding: in a SQL_ASCII database psycopg would
# otherwise hand back bytes for every text value (and a snapshot id would read b'...').
CONNECT_OPTIONS: dict[str, Any] = {
    "autocommit": True,
    "connect_timeout": 5,
    "client_encoding": "UTF8",
}


def open_connection(url: Secret, **options: Any) -> psycopg.Connection:
    """An autocommit connection to the metadata store, or CatalogUnavailable saying why not."""
    try:
        return psycopg.connect(url.reveal(), **{**CONNECT_OPTIONS, **options})
    except psycopg.Error as exc:
        raise CatalogUnavailable(f"cannot reach the metadata store: {first_line(exc)}") from None


def open_leader_session(url: Secret, application_name: str) -> psycopg.Connection:
    """A connection whose death the server notices within about half a minute.

    The scheduler's leadership is an advisory lock held by this session: a leader that vanishes
    without closing its connection must lose the session, and so the lock, soon, on both ends.
    """
    try:
        conn = open_connection(
            url,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            tcp_user_timeout=30000,  # a write stuck on a dead link fails within 30 s
            application_name=application_name,
        )
        conn.execute("SET tcp_keepalives_idle = 10")
        conn.execute("SET tcp_keepalives_interval = 5")
        conn.execute("SET tcp_keepalives_count = 3")
    except psycopg.Error as exc:
        raise CatalogUnavailable(f"cannot reach the metadata store: {first_line(exc)}") from None
    return conn


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply the migrations this database has not seen; return their names."""
    applied: list[str] = []
    with db_errors("migrate"), conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(f"SET LOCAL search_path TO {SCHEMA}")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY,"
            " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, text in migrations():
            if version not in done:
                conn.execute(text)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
                applied.append(name)
    conn.execute(f"SET search_path TO {SCHEMA}")
    return applied


def migrations() -> Iterator[tuple[int, str, str]]:
    """(version, file name, SQL) of each migration file, in order."""
    folder = resources.files("permafrost.catalog") / "migrations"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            yield int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()


def filters(**values: str | None) -> tuple[list[str], list[Any]]:
    """`column = %s` conditions for the values given (None: no condition) and their params."""
    where = [f"{name} = %s" for name, value in values.items() if value is not None]
    return where, [value for value in values.values() if value is not None]


class Rows:
    """One table family's statements over the catalog's one shared connection."""

    conn: psycopg.Connection

    def _errors(self, action: str) -> db_errors:
        return db_errors(action)


class Locks(Rows):
    """Session advisory locks: one backup per database, one leading scheduler, one WAL stream
    per cluster."""

    def try_lock(self, space: int, name: str) -> bool:
        """A session advisory lock on (space, hashtext(name)); False when someone holds it."""
        with self._errors("take a lock"):
            row = self.conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (space, name)
            ).fetchone()
        return bool(row and row[0])

    def unlock(self, space: int, name: str) -> None:
        with self._errors("release a lock"):
            self.conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (space, name))

    def holds(self, space: int, name: str) -> bool:
        """Whether this session still holds the lock (space, hashtext(name)): a statement, so a
        lost session answers CatalogUnavailable rather than a stale yes."""
        with self._errors("check a lock"):
            row = self.conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                " AND pid = pg_backend_pid() AND granted AND objsubid = 2"
                " AND classid = %s::oid AND objid = hashtext(%s)::oid)",
                (space, name),
            ).fetchone()
        return bool(row and row[0])
