"""PostgreSQL client programs and source connections.

Finds pg_dump and pg_restore of a major version that can read the server, connects with the
password passed to libpq out of band (never on a command line, where `ps` would show it), and
holds the exported snapshot in which row counts are taken while pg_dump reads the same data.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from permafrost.config.settings import SourceSettings
from permafrost.errors import SourceError
from permafrost.postgres import installations
from permafrost.repo.manifest import TableCount
from permafrost.text import first_line

if TYPE_CHECKING:
    import psycopg

    Connection = psycopg.Connection  # for modules that hold a connection but never import psycopg


def find_tool(bin_dirs: tuple[str, ...], name: str, minimum_major: int = 0) -> installations.Choice:
    """`name` of the server's major, else the newest newer one (pg_dump, pg_dumpall, psql)."""
    return installations.at_least(installations.installed(bin_dirs), name, minimum_major)


def cluster_tool(
    bin_dirs: tuple[str, ...], name: str, major: int, why: str
) -> installations.Choice:
    """`name` of exactly the cluster's major (pg_basebackup, pg_receivewal, postgres...)."""
    return installations.exact(installations.installed(bin_dirs), name, major, why)


def tool_version(tool: str) -> str:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"(\d+(?:\.\d+)*)", out)
    return match.group(1) if match else "unknown"


def tool_major(tool: str) -> int:
    return major_of(tool_version(tool))


def major_of(version: str) -> int:
    """15 of "15.18", "15.18 (Debian 15.18-0+deb12u1)" or "15"; 0 when it has no number."""
    head = version.split(".")[0].split()[0] if version.strip() else ""
    return int(head) if head.isdigit() else 0


def conninfo(source: SourceSettings, database: str) -> str:
    """A libpq connection string without the password."""
    from psycopg.conninfo import make_conninfo  # imported here: start-up cost, as in connect

    return make_conninfo("", **source.conninfo(database))


def libpq_env(source: SourceSettings) -> dict[str, str]:
    """The environment for a child program: the password goes here, not on its command line."""
    env = dict(os.environ)
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    if source.password:
        env["PGPASSWORD"] = source.password.reveal()
    return env


def connect(
    source: SourceSettings, database: str, *, autocommit: bool = False, timeout: int = 10
) -> psycopg.Connection:
    import psycopg  # imported here: commands that never connect start faster without it

    password = source.password.reveal() if source.password else None
    try:
        return psycopg.connect(
            conninfo(source, database),
            password=password,
            connect_timeout=timeout,
            autocommit=autocommit,
            client_encoding="UTF8",  # a SQL_ASCII database would otherwise read as bytes
        )
    except psycopg.OperationalError as exc:
        raise SourceError(
            f"cannot connect to database {database} at {where(source)}: {first_line(exc)}"
        ) from None


def server_major(source: SourceSettings, database: str) -> int:
    """The server's major version, asked before a backup writes anything (its tools must fit)."""
    with connect(source, database, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    return int(row[0]) // 10000 if row else 0


def setting_on(source: SourceSettings, name: str) -> bool:
    """Whether a boolean server setting (summarize_wal) is on; an unknown one reads as off."""
    with connect(source, cluster_database(source), autocommit=True) as conn:
        row = conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()
    return row is not None and row[0] == "on"


def cluster_database(source: SourceSettings) -> str:
    """The database a cluster-level command connects to: the first DB_NAME, else postgres."""
    return source.databases[0] if source.databases else "postgres"


def switch_wal(conn: psycopg.Connection) -> str | None:
    """pg_switch_wal(), which completes the segment being written; that segment's name."""
    import psycopg  # imported here: commands that never connect start faster without it

    try:
        switched = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    except psycopg.Error as exc:
        raise SourceError(
            f"cannot call pg_switch_wal(): {first_line(exc)} (grant it with "
            "GRANT EXECUTE ON FUNCTION pg_switch_wal() TO the backup user)"
        ) from None
    return str(switched[0]) if switched else None


def where(source: SourceSettings) -> str:
    host = source.host or "the local socket"
    return f"{host}:{source.port}" if source.port else host


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot_id: str
    server_version: str
    server_major: int


_USER_TABLES = """
SELECT n.nspname, c.relname, pg_catalog.pg_table_size(c.oid)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass
                    AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class TableSize:
    schema: str
    table: str
    bytes: int


class Snapshot:
    """A read-only transaction whose snapshot pg_dump imports; counts rows in that snapshot."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def export(self) -> SnapshotInfo:
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = self.conn.execute(
            "SELECT pg_export_snapshot(), current_setting('server_version'),"
            " current_setting('server_version_num')::int / 10000"
        ).fetchone()
        assert row is not None
        return SnapshotInfo(row[0], row[1], row[2])

    def table_sizes(self) -> list[TableSize]:
        """Every table row_counts counts, with its size on disk (TOAST included) in bytes."""
        rows = self.conn.execute(_USER_TABLES).fetchall()
        return [TableSize(schema, table, int(size or 0)) for schema, table, size in rows]

    def row_counts(self) -> list[TableCount]:
        from psycopg import sql  # imported here: start-up cost, as in connect

        tables = self.conn.execute(_USER_TABLES).fetchall()
        counts = []
        for schema, table, _size in tables:
            query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            row = self.conn.execute(query).fetchone()
            counts.append(TableCount(schema, table, int(row[0]) if row else 0))
        return counts


@contextmanager
def exported_snapshot(source: SourceSettings, database: str) -> Iterator[Snapshot]:
    conn = connect(source, database, autocommit=True)
    try:
        yield Snapshot(conn)
    finally:
        conn.close()
