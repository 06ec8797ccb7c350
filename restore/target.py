"""The database a restore writes into: where it is, whether it may be written, and DDL on it.

A target is a server (the source server by default, or `--target-url`) and a database name.
It is never the metadata store, and never the backed-up database itself while it exists, unless
the operator named its server with --target-url and asked for --drop-existing. When the backed-up
database is gone (dropped), it may be recreated in place, after a confirmation (restore/cli.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from permafrost import layout
from permafrost.config.fleet import load_fleet
from permafrost.config.settings import Settings, SourceSettings, source_from_url
from permafrost.errors import SourceError, TargetError, UsageError
from permafrost.postgres import ddl
from permafrost.postgres import tools as pgtools
from permafrost.repo.manifest import TableCount

if TYPE_CHECKING:
    from permafrost.postgres.tools import Connection

MAINTENANCE_DB = "postgres"


@dataclass(frozen=True)
class Target:
    server: SourceSettings
    database: str
    explicit: bool  # named by --target-url rather than defaulting to the source server

    @property
    def where(self) -> str:
        return f"{self.database} on {pgtools.where(self.server)}"

    def with_database(self, database: str) -> Target:
        return replace(self, database=database)


def resolve_target(
    settings: Settings, database: str, url: str | None, backup_database: str | None = None
) -> Target:
    """--target-url's server, else the server the backup came from: a fleet source's (by the
    backup's SOURCE.DATABASE name), else the configured source."""
    layout.check_name(database, "target database")
    if url is None:
        return Target(_home_server(settings, backup_database), database, explicit=False)
    server = source_from_url(url, "--target-url")
    return Target(server, database, explicit=True)


def own_name(settings: Settings, backup_database: str) -> str:
    """The server's name for a backup's database: a fleet source's SOURCE.DATABASE is DATABASE
    there (what the refusals to restore over the source compare with)."""
    fleet = load_fleet(settings)
    source = fleet.source_of(backup_database) if fleet.from_file is not None else None
    return (source.database_of(backup_database) if source else None) or backup_database


def _home_server(settings: Settings, backup_database: str | None) -> SourceSettings:
    fleet = load_fleet(settings)
    source = fleet.source_of(backup_database) if backup_database else None
    if fleet.from_file is None or source is None:
        return settings.source
    return replace(source.server, databases=(source.maintenance_db,))


def refuse_unsafe(
    target: Target, backup_database: str, drop_existing: bool, target_exists: bool
) -> None:
    """The rules that keep a restore from overwriting what it must not."""
    if not target_exists:
        return  # recreating a dropped database: nothing to overwrite (confirmed by the CLI)
    if target.database == backup_database and not (target.explicit and drop_existing):
        raise UsageError(
            f"refusing to restore over {target.database}, the database this backup was taken "
            "from: choose another --target-db, or name its server with --target-url and add "
            "--drop-existing"
        )


def maintenance(target: Target) -> AbstractContextManager[Connection]:
    """A connection to the target server's maintenance database, for CREATE and DROP."""
    return _connected(target, maintenance_database(target))


def server_target(settings: Settings, url: str | None) -> Target:
    """A whole server as a target (restore --globals): --target-url, else the source server."""
    if url is None:  # DB_NAME's database may not exist yet on a rebuilt server: postgres then
        return Target(replace(settings.source, databases=()), MAINTENANCE_DB, explicit=False)
    server = source_from_url(url, "--target-url")
    return Target(server, MAINTENANCE_DB, explicit=True)


def maintenance_database(target: Target) -> str:
    # --target-url's own database (or the source's), if it names one and it is not the target
    # itself (a dropped database being recreated), else the usual maintenance database
    named = target.server.databases[0] if target.server.databases else MAINTENANCE_DB
    return MAINTENANCE_DB if named == target.database else named


def recreates_source(target: Target, backup_database: str, target_exists: bool) -> bool:
    """Whether this restore recreates, on the source server, the dropped database the backup
    was taken from (asked to confirm). On a server named by --target-url, that is simply a new
    database, as on the new server of a disaster plan."""
    return target.database == backup_database and not target_exists and not target.explicit


def is_metadata_store(target: Target) -> bool:
    """Whether the database holds Permafrost's own catalog (restoring over it is refused)."""
    with _connected(target) as conn:
        return ddl.relation_exists(conn, "permafrost.schema_migrations")


def staging_name(database: str) -> str:
    return f"{database[:40]}_pfrestore_{secrets.token_hex(3)}"


@contextmanager
def _connected(target: Target, database: str | None = None) -> Iterator[Connection]:
    try:
        conn = pgtools.connect(target.server, database or target.database, autocommit=True)
    except SourceError as exc:
        raise TargetError(f"restore target unreachable: {exc}") from None
    try:
        yield conn
    finally:
        conn.close()


def count_rows(target: Target, tables: list[TableCount]) -> dict[tuple[str, str], int | None]:
    """Rows now in each table (None where the table is missing)."""
    with _connected(target) as conn:
        return ddl.count_rows(conn, tables)


def drop_tables_except(target: Target, keep: set[tuple[str, str]]) -> None:
    """Remove the tables a selective restore did not ask for (and what depends on them)."""
    with _connected(target) as conn:
        ddl.drop_tables_except(conn, keep)
