"""The fleet's model: its sources (FleetSource), the fleet (Fleet), what a source may back up
(BackupKind). config/fleet.py loads it; config/sources_file.py reads it from SOURCES_FILE."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum

from permafrost.config.settings import RetentionSettings, ScheduleSettings
from permafrost.config.source import SourceSettings
from permafrost.errors import ConfigError

SOURCE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,39}")  # no dot: it splits catalog names
TEMPLATES = ("template0", "template1")


class BackupKind(StrEnum):
    """What a source's `kinds` may name: the jobs that run for it."""

    LOGICAL = "logical"  # the daily pg_dump of each database (BACKUP_SCHEDULE)
    COMPLIANCE = "compliance"  # the monthly one into the compliance tier
    BASE = "base"  # pg_basebackup of the cluster (needs `cluster`)
    INCREMENTAL = "incremental"  # incremental base backups (PostgreSQL 17+, needs `cluster`)


DEFAULT_KINDS = frozenset({BackupKind.LOGICAL, BackupKind.COMPLIANCE})
# A source's `schedules:` keys, and the ScheduleSettings field each overrides.
SCHEDULE_KEYS = {
    "backup": "backup",
    "compliance": "compliance",
    "base_backup": "base_backup",
    "incremental": "incremental",
}
RETENTION_KEYS = {"daily": 0, "weekly": 0, "monthly": 0, "min_keep": 1}  # key: its minimum


@dataclass(frozen=True)
class FleetSource:
    """One PostgreSQL server of the fleet and what is backed up of it."""

    name: str
    server: SourceSettings  # host, port, user, password, options; `databases` unused
    maintenance_db: str = "postgres"  # where `databases: all` is listed from
    databases: tuple[str, ...] | None = None  # None: `all`, listed at each run
    exclude: tuple[str, ...] = ()
    cluster: str | None = None  # physical backups and WAL, when `kinds` has base
    kinds: frozenset[BackupKind] = DEFAULT_KINDS
    schedules: ScheduleSettings = field(default_factory=ScheduleSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    plain_names: bool = False  # databases keep their bare names (the fleet of one)
    line: int = 0  # where the file defines it (0: from the environment)

    @property
    def lists_all(self) -> bool:
        return self.databases is None

    @property
    def wal(self) -> str:
        """How its cluster's WAL is archived: its `wal:`, else WAL_ARCHIVING; off without a
        cluster (kept in its schedules, so base backups and drills follow it)."""
        return self.schedules.wal_archiving if self.cluster is not None else "off"

    def cluster_server(self) -> SourceSettings:
        """The server, for cluster-level work (base backups, WAL): its maintenance database."""
        return replace(self.server, databases=(self.maintenance_db,))

    def catalog_name(self, database: str) -> str:
        """The name this source's database has in keys, the catalog, locks and alerts."""
        return database if self.plain_names else f"{self.name}.{database}"

    def database_of(self, name: str) -> str | None:
        """The server's database a catalog name is, when it is one of this source's."""
        if self.plain_names:
            return name
        head, dot, rest = name.partition(".")
        return rest if dot and head == self.name and rest else None

    def wanted(self, database: str) -> bool:
        """Whether a database of the server is backed up (listed, or `all` and not excluded)."""
        if database in self.exclude or database in TEMPLATES:
            return False
        return self.databases is None or database in self.databases

    def server_for(self, names: tuple[str, ...] | list[str]) -> SourceSettings:
        """The server, connecting each catalog name to its database (SourceSettings.aliases)."""
        aliases = tuple((n, self.database_of(n) or n) for n in names)
        return replace(self.server, databases=tuple(names), aliases=aliases)


@dataclass(frozen=True)
class Fleet:
    sources: tuple[FleetSource, ...]
    from_file: str | None = None  # SOURCES_FILE, or None for the fleet of one

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sources)

    def source(self, name: str) -> FleetSource:
        """The source of that name, or a ConfigError listing those there are."""
        for source in self.sources:
            if source.name == name:
                return source
        where = f"in {self.from_file}" if self.from_file else "(no SOURCES_FILE: one source)"
        raise ConfigError(
            f"no source named {name!r} {where}; the sources are: {', '.join(self.names)}"
        )

    def source_of(self, catalog_name: str) -> FleetSource | None:
        """The source a catalog name belongs to: a qualified name's, else the plain one's."""
        plain = None
        for source in self.sources:
            if source.plain_names:
                plain = source
            elif source.database_of(catalog_name) is not None:
                return source
        return plain

    def owner(self, catalog_name: str) -> str | None:
        """The name of the source a catalog name belongs to (None: no source has it)."""
        source = self.source_of(catalog_name)
        return source.name if source is not None else None

    def owns(self, source: str | None, catalog_name: str) -> bool:
        """Whether `--source NAME` (None: every source) covers this database or cluster."""
        if source is None:
            return True
        chosen = self.source(source)
        return self.owner(catalog_name) == source or catalog_name == chosen.cluster

    def select(self, name: str | None) -> tuple[FleetSource, ...]:
        """Every source, or only the one `--source NAME` names."""
        return self.sources if name is None else (self.source(name),)

    def of_cluster(self, cluster: str) -> FleetSource | None:
        """The source whose `cluster:` this is (None: no source's)."""
        return next((s for s in self.sources if s.cluster == cluster), None)

    def clusters(self, source: str | None = None, *, archived: bool = False) -> tuple[str, ...]:
        """The clusters of every source (or of the one `--source NAME` names); with
        `archived`, only those whose WAL is archived (a base backup of another could not be
        recovered: its WAL is nowhere)."""
        chosen = self.select(source)
        return tuple(s.cluster for s in chosen if s.cluster and (s.wal != "off" or not archived))

    def wal_clusters(self) -> tuple[tuple[str, str], ...]:
        """Each cluster whose WAL is archived, and how (`receive` or `push`): what the
        wal_lag, wal_gap and wal_queue alerts watch."""
        return tuple((s.cluster, s.wal) for s in self.sources if s.cluster and s.wal != "off")

    def archived(self, mode: str) -> tuple[FleetSource, ...]:
        """The sources whose cluster's WAL is archived this way (`receive`, `push`)."""
        return tuple(s for s in self.sources if s.wal == mode)
