"""What a backup is asked to be: of which database (or cluster), into which tier, and why."""

from __future__ import annotations

from dataclasses import dataclass, field

from permafrost import layout
from permafrost.backup import sources
from permafrost.config.fleet import Fleet
from permafrost.config.settings import SourceSettings
from permafrost.errors import UsageError
from permafrost.repo.manifest import Kind


@dataclass(frozen=True)
class BackupRequest:
    database: str  # for a base backup, the cluster's name
    tier: str = "standard"
    description: str = ""
    tags: tuple[str, ...] = ()
    backup_id: str = field(default_factory=layout.new_backup_id)
    kind: Kind = Kind.LOGICAL
    trigger: str = "manual"  # manual, schedule or task: recorded with the job run
    # A base backup taken against the newest base backup of its cluster (PostgreSQL 17+:
    # pg_basebackup --incremental, backup/incremental.py); kind stays Kind.BASE.
    incremental: bool = False
    # The server to back up when it is not the configured source: a restore's safety backup
    # of the target it is about to replace.
    source: SourceSettings | None = None
    # The SQLite file to back up when it is not a configured source (a restore's safety backup).
    path: str | None = None


def refuse_unconfigured(source: SourceSettings, database: str, fleet: Fleet | None = None) -> None:
    """A backup asked for by name must be of a configured database (DB_NAME, or DATABASE_URL's,
    or a SOURCES_FILE source's SOURCE.DATABASE): a typo is refused here, not left to fail, and
    alert, on every later run."""
    if fleet is not None and fleet.from_file is not None:
        if sources.configured(fleet, database) or source.sqlite_source(database) is not None:
            return
        raise UsageError(
            f"database {database!r} is not one SOURCES_FILE backs up: name it SOURCE.DATABASE "
            f"(the sources are {', '.join(fleet.names)}), or add it to the file"
        )
    configured = source.backed_up
    if configured and database not in configured:
        raise UsageError(
            f"database {database!r} is not configured for backups; the configured ones are "
            f"{', '.join(configured)} (DB_NAME, SQLITE_DATABASES): name one of them, or add it"
        )


def kind_of(source: SourceSettings, name: str) -> Kind:
    """A configured SQLite file's backups are `sqlite`; every other database's `logical`."""
    return Kind.SQLITE if source.sqlite_source(name) is not None else Kind.LOGICAL
