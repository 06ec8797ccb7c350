"""The repositories table, and the scope that makes every lookup see one repository's rows.

A repository's id is in its permafrost.json; `backups`, `wal_archive` and `storage_usage` record
it on each row (migration 0014). A connection is scoped with `scope(id)`: temporary views named
like those tables then stand in front of them on this session alone (PostgreSQL searches
`pg_temp` first), showing only the rows of that repository and of none ('': recorded before
repositories had ids, adopted by the first write that gives the repository its id), and
inserting with its id. So every statement of every table family, the monitor's and the alerts'
included, is scoped without each one repeating a condition. An unscoped connection sees every
row, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from permafrost.catalog.db import SCHEMA, Rows

SCOPED_TABLES = ("backups", "wal_archive", "storage_usage", "drills", "backup_tallies")
LEGACY = ""  # the repository_id of rows recorded before repositories had ids


@dataclass(frozen=True)
class KnownRepository:
    """A repository the catalog knows for this deployment (id '' : only rows from before ids)."""

    id: str
    location: str | None


class RepositoryRows(Rows):
    scoped_to: str | None = None  # the repository id this session's lookups see
    scoped: bool = False
    _scope: sql.Composable | None = None

    def scope(self, repository_id: str | None) -> None:
        """See (and record into) only this repository's rows, and those from before ids."""
        if self.scoped and self._scope is not None and self.scoped_to == repository_id:
            return
        self._apply(sql.Literal(repository_id) if repository_id is not None else None)
        self.scoped_to = repository_id

    def scope_to_location(self, location: str) -> None:
        """Scope to the repository last seen at this location, looked up at each query (so a
        repository made later is followed); none known there: only the rows from before ids."""
        self._apply(
            sql.SQL("coalesce({}.repository_at({}), {})").format(
                sql.Identifier(SCHEMA), sql.Literal(location), sql.Literal(LEGACY)
            )
        )
        self.scoped_to = None

    def rescope(self) -> None:
        """Apply the last scope again (after the tables changed: a migration)."""
        self._apply(self._scope)

    def _apply(self, repository: sql.Composable | None) -> None:
        with self._errors("scope the catalog to the repository"), self.conn.transaction():
            for table in SCOPED_TABLES:
                self.conn.execute(_drop_view(table))
                for statement in _scoped_view(table, repository):
                    self.conn.execute(statement)
        self._scope, self.scoped = repository, True

    def unscope(self) -> None:
        with self._errors("unscope the catalog"):
            for table in SCOPED_TABLES:
                self.conn.execute(_drop_view(table))
        self.scoped = False

    def repository_at(self, location: str) -> str | None:
        with self._errors("read the repositories"):
            row = self.conn.execute(
                f"SELECT id FROM {SCHEMA}.repositories WHERE location = %s"
                " ORDER BY seen_at DESC LIMIT 1",
                (location,),
            ).fetchone()
        return str(row[0]) if row else None

    def register_repository(self, repository_id: str, location: str) -> None:
        """The repository was opened at this location: remember where it is."""
        with self._errors("record the repository"):
            self.conn.execute(
                f"INSERT INTO {SCHEMA}.repositories (id, location) VALUES (%s, %s)"
                " ON CONFLICT (id) DO UPDATE SET location = EXCLUDED.location, seen_at = now()",
                (repository_id, location),
            )

    def adopt(self, repository_id: str) -> int:
        """Give the rows recorded before repository ids to this repository; how many backups."""
        with self._errors("adopt the catalogued backups"), self.conn.transaction():
            cur = self.conn.execute(
                f"UPDATE {SCHEMA}.backups SET repository_id = %s WHERE repository_id = %s",
                (repository_id, LEGACY),
            )
            self.conn.execute(
                f"UPDATE {SCHEMA}.drills SET repository_id = %s WHERE repository_id = %s",
                (repository_id, LEGACY),
            )
            for table, key in (("wal_archive", "cluster"), ("storage_usage", "tier, database")):
                self.conn.execute(_adopt_rows(table, key), (repository_id, LEGACY, repository_id))
            return cur.rowcount

    def known_repository(self) -> KnownRepository | None:
        """The repository this deployment's catalog knows (the one seen last), if any."""
        with self._errors("read the repositories"):
            row = self.conn.execute(
                f"SELECT id, location FROM {SCHEMA}.repositories ORDER BY seen_at DESC LIMIT 1"
            ).fetchone()
            if row is not None:
                return KnownRepository(str(row[0]), str(row[1]))
            old = self.conn.execute(
                f"SELECT EXISTS (SELECT 1 FROM {SCHEMA}.backups)"
                f" OR EXISTS (SELECT 1 FROM {SCHEMA}.wal_archive)"
            ).fetchone()
        return KnownRepository(LEGACY, None) if old and old[0] else None


def _adopt_rows(table: str, key: str) -> sql.Composed:
    """Old rows of a table keyed per repository, adopted unless the repository has its own."""
    return sql.SQL(
        "UPDATE {schema}.{table} t SET repository_id = %s WHERE repository_id = %s"
        " AND NOT EXISTS (SELECT 1 FROM {schema}.{table} o WHERE o.repository_id = %s"
        " AND (o.{key}) = (t.{key}))"
    ).format(schema=sql.Identifier(SCHEMA), table=sql.Identifier(table), key=sql.SQL(key))


def _drop_view(table: str) -> sql.Composed:
    return sql.SQL("DROP VIEW IF EXISTS pg_temp.{}").format(sql.Identifier(table))


def _scoped_view(table: str, repository: sql.Composable | None) -> list[sql.Composed]:
    """The view of one repository's rows (None: of none, only the old ones), inserting its id."""
    # The repository as a scalar subquery: an InitPlan, worked out once per statement, not once
    # per row (a location's scope calls repository_at, a query of its own).
    ids = (
        [sql.Literal(LEGACY)]
        if repository is None
        else [sql.SQL("(SELECT {})").format(repository), sql.Literal(LEGACY)]
    )
    view = sql.Identifier(table)
    statements = [
        sql.SQL("CREATE TEMP VIEW {} AS SELECT * FROM {}.{} WHERE repository_id IN ({})").format(
            view, sql.Identifier(SCHEMA), view, sql.SQL(", ").join(ids)
        )
    ]
    if repository is not None:
        statements.append(
            sql.SQL("ALTER VIEW pg_temp.{} ALTER COLUMN repository_id SET DEFAULT {}").format(
                view, repository
            )
        )
    return statements
