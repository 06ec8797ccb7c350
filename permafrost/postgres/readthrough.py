"""Proving a restored cluster reads: pg_amcheck over every database, and every table read.

A test restore of a base backup ends here: a server started on the restored data directory
(a Unix socket only) is checked by `pg_amcheck --all` (heap and B-tree indexes, the amcheck
extension installed where missing: the cluster is a scratch copy), and every row of every
table of every database is read with COPY, which detoasts every value. A damaged page or
index is an IntegrityError; a server that cannot be reached is a TargetError.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from permafrost.config.settings import SourceSettings
from permafrost.errors import IntegrityError, TargetError
from permafrost.postgres import tools as pgtools
from permafrost.text import first_line

Say = Callable[[str], None]

_DATABASES = "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname"
_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND c.relispopulated
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class ReadThrough:
    databases: int
    tables: int
    rows: int
    bytes: int  # COPY text read


def databases(source: SourceSettings) -> list[str]:
    """Every database that takes connections (template0 does not)."""
    with pgtools.connect(source, "postgres", autocommit=True) as conn:
        return [str(row[0]) for row in conn.execute(_DATABASES).fetchall()]


def read_every_table(source: SourceSettings, names: list[str]) -> ReadThrough:
    tables = rows = size = 0
    for database in names:
        with pgtools.connect(source, database, autocommit=True) as conn:
            for schema, table in conn.execute(_TABLES).fetchall():
                count, read = _read_table(conn, database, schema, table)
                tables, rows, size = tables + 1, rows + count, size + read
    return ReadThrough(len(names), tables, rows, size)


def _read_table(
    conn: pgtools.Connection, database: str, schema: str, table: str
) -> tuple[int, int]:
    import psycopg  # imported here: start-up cost, as in tools.connect
    from psycopg import sql

    query = sql.SQL("COPY (SELECT * FROM ONLY {}.{}) TO STDOUT").format(
        sql.Identifier(schema), sql.Identifier(table)
    )
    read = 0
    try:
        with conn.cursor() as cur:
            with cur.copy(query) as copy:
                for block in copy:
                    read += len(block)
            return max(cur.rowcount, 0), read
    except psycopg.Error as exc:
        raise IntegrityError(
            f"reading {database}: {schema}.{table} of the restored cluster failed: "
            f"{first_line(exc)}"
        ) from None


def amcheck_available(source: SourceSettings) -> bool:
    """The server has the amcheck extension to install (contrib)."""
    with pgtools.connect(source, "postgres", autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'amcheck'"
        ).fetchone()
    return bool(row and row[0])


def amcheck(tool: str, source: SourceSettings) -> None:
    """`pg_amcheck --all`: exit 2 is corruption found (IntegrityError), 1 a failure to run."""
    command = [
        tool,
        "--all",
        "--install-missing",
        "--no-password",
        f"--host={source.host}",
        f"--port={source.port}",
        f"--username={source.user}",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, env=pgtools.libpq_env(source)
    )
    if result.returncode == 0:
        return
    lines = (result.stdout + result.stderr).strip().splitlines() or ["no output"]
    if result.returncode == 2:
        raise IntegrityError(
            f"pg_amcheck found corruption in the restored cluster ({len(lines)} lines): {lines[0]}"
        )
    raise TargetError(f"pg_amcheck could not check the restored cluster: {lines[-1]}")
