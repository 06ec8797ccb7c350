"""Statements a restore runs on its target server: databases made, dropped, renamed; rows counted.

Identifiers are always composed with psycopg.sql.Identifier, never formatted into the text.
A statement the server refuses is a TargetError with the server's first line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from permafrost.errors import TargetError
from permafrost.repo.manifest import TableCount
from permafrost.text import first_line

if TYPE_CHECKING:
    import psycopg
    from psycopg.sql import Composed

_TABLES = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
    " ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')"
    " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg\\_toast%'"
)


def database_exists(conn: psycopg.Connection, database: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
    return row is not None


def database_names(conn: psycopg.Connection) -> set[str]:
    """Every database on the server (a name a restore should not take)."""
    import psycopg  # imported here: commands that never connect start faster without it

    try:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database").fetchall()}
    except psycopg.Error as exc:
        raise TargetError(f"cannot list the databases: {first_line(exc)}") from None


def relation_exists(conn: psycopg.Connection, name: str) -> bool:
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(found and found[0])


def create_database(conn: psycopg.Connection, database: str) -> None:
    from psycopg import sql  # imported here: commands that never connect start faster without it

    _ddl(conn, sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(database)))


def drop_database(conn: psycopg.Connection, database: str) -> None:
    from psycopg import sql  # imported here: commands that never connect start faster without it

    query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
    _ddl(conn, query)


def rename_database(conn: psycopg.Connection, old: str, new: str) -> None:
    from psycopg import sql  # imported here: commands that never connect start faster without it

    query = sql.SQL("ALTER DATABASE {} RENAME TO {}")
    _ddl(conn, query.format(sql.Identifier(old), sql.Identifier(new)))


def _ddl(conn: psycopg.Connection, query: Composed) -> None:
    import psycopg  # imported here: commands that never connect start faster without it

    try:
        conn.execute(query)
    except psycopg.Error as exc:
        raise TargetError(f"{first_line(exc)}") from None


def count_rows(
    conn: psycopg.Connection, tables: list[TableCount]
) -> dict[tuple[str, str], int | None]:
    """Rows now in each table (None where the table is missing)."""
    from psycopg import sql  # imported here: commands that never connect start faster without it

    counts: dict[tuple[str, str], int | None] = {}
    for table in tables:
        found = conn.execute("SELECT to_regclass(%s)", (_qualified(table),)).fetchone()
        if not found or found[0] is None:
            counts[(table.schema, table.table)] = None
            continue
        query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
            sql.Identifier(table.schema), sql.Identifier(table.table)
        )
        row = conn.execute(query).fetchone()
        counts[(table.schema, table.table)] = int(row[0]) if row else 0
    return counts


_LOADING = """
    SELECT n.nspname, c.relname
    FROM pg_stat_progress_copy p
    JOIN pg_class c ON c.oid = p.relid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND p.pid <> pg_backend_pid()
      AND p.command = 'COPY FROM'
"""


def tables_being_loaded(conn: psycopg.Connection) -> set[tuple[str, str]] | None:
    """The tables other sessions are loading with COPY in this database now (None before
    PostgreSQL 14, which has no pg_stat_progress_copy)."""
    if conn.info.server_version < 140000:
        return None
    return {(str(s), str(t)) for s, t in conn.execute(_LOADING).fetchall()}


def count_rows_unless_locked(conn: psycopg.Connection, schema: str, table: str) -> int | None:
    """A table's rows, or None when its lock is not granted within the session's lock_timeout
    (another session is changing the table)."""
    from psycopg import errors, sql

    query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
        sql.Identifier(schema), sql.Identifier(table)
    )
    try:
        row = conn.execute(query).fetchone()
    except errors.LockNotAvailable:
        return None
    return int(row[0]) if row else 0


def drop_tables_except(conn: psycopg.Connection, keep: set[tuple[str, str]]) -> None:
    """Remove the tables not in keep (and, CASCADE, what depends on them)."""
    from psycopg import sql  # imported here: commands that never connect start faster without it

    for schema, table in conn.execute(_TABLES).fetchall():
        if (schema, table) not in keep:
            conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}.{} CASCADE").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            )


def _qualified(table: TableCount) -> str:
    return _quote(table.schema) + "." + _quote(table.table)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def role_names(conn: psycopg.Connection) -> set[str]:
    """The roles that exist on the server (a globals restore skips them)."""
    return {row[0] for row in conn.execute("SELECT rolname FROM pg_roles").fetchall()}


def tablespace_names(conn: psycopg.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT spcname FROM pg_tablespace").fetchall()}
