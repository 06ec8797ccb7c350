"""The fleet: every PostgreSQL server backed up, from `SOURCES_FILE` (YAML) or, without it, the
single-server variables of before (`DATABASE_URL`, `DB_*`, `CLUSTER_NAME`) as a fleet of one.

A database is known to the bucket, the catalog, job runs, locks and alerts by its *catalog
name*: `SOURCE.DATABASE` for a source of the file (a source's name has no dot, so the first dot
splits it), or the bare database name for the fleet of one and for the one source of a file
that says `plain_names: true` (the server that was backed up before the file). Two sources may
then each have a database `app`: `orders-eu.app` and `billing.app` never meet. Keys keep their
shape (`standard/{name}/{id}/...`), so retention, pins, tiers and `catalog sync` need nothing
new, and the catalog rebuilt from the bucket still knows each backup's source.

The file is read once per process (`load_fleet`), and a bad one is refused with the file, the
line and the field named (ConfigError), before anything runs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from permafrost.config import schedule
from permafrost.config.env import Secret
from permafrost.config.settings import RetentionSettings, ScheduleSettings, Settings
from permafrost.config.source import SourceSettings, source_from_url
from permafrost.errors import ConfigError, UsageError
from permafrost.layout import valid_name

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


_lock = threading.Lock()
_cache: dict[str, Fleet] = {}


def load_fleet(settings: Settings) -> Fleet:
    """The fleet: SOURCES_FILE's (read once per process), else the fleet of one."""
    path = settings.sources_file
    if path is None:
        return single_fleet(settings)
    with _lock:
        if path not in _cache:
            _refuse_single_server(settings, path)
            _cache[path] = read_sources_file(path, settings)
        return _cache[path]


def retention_for(settings: Settings) -> Callable[[str], RetentionSettings]:
    """A database's (or a cluster's base backups') retention rules: its file source's
    `retention:`, else the environment's."""
    fleet = load_fleet(settings)

    def policy(name: str) -> RetentionSettings:
        source = None
        if fleet.from_file is not None:
            source = fleet.of_cluster(name) or fleet.source_of(name)
        return source.retention if source is not None else settings.retention

    return policy


def cluster_settings(settings: Settings, cluster: str) -> Settings:
    """The settings a cluster's WAL and base backup commands run with: for the cluster of a
    SOURCES_FILE source, that source's server and CLUSTER_NAME; else the settings as given (the
    single server of DATABASE_URL / DB_*)."""
    fleet = load_fleet(settings)
    source = fleet.of_cluster(cluster) if fleet.from_file is not None else None
    if source is None:
        return replace(settings, cluster_name=cluster)
    schedules = replace(settings.schedules, wal_archiving=source.wal)
    return replace(
        settings, source=source.cluster_server(), cluster_name=cluster, schedules=schedules
    )


def chosen_cluster(settings: Settings, cluster: str | None, source: str | None) -> str:
    """The cluster `--cluster NAME` or `--source NAME` names (not both), else CLUSTER_NAME."""
    if cluster and source:
        raise UsageError("--cluster and --source both name a cluster: give one")
    if cluster:
        return cluster
    if source is None:
        return _default_cluster(settings)
    chosen = load_fleet(settings).source(source)
    if chosen.cluster is None:
        raise UsageError(
            f"source {source} has no cluster: physical backups and WAL need `cluster:` in "
            "its SOURCES_FILE entry"
        )
    return chosen.cluster


def _default_cluster(settings: Settings) -> str:
    """CLUSTER_NAME, unless SOURCES_FILE's sources have clusters and it is none of them: then
    which one is meant is asked, not guessed."""
    fleet = load_fleet(settings)
    clusters = fleet.clusters() if fleet.from_file is not None else ()
    if clusters and settings.cluster_name not in clusters:
        raise UsageError(
            f"which cluster? CLUSTER_NAME={settings.cluster_name} is no source's in "
            f"{fleet.from_file}: pass --source NAME or --cluster NAME ({', '.join(clusters)})"
        )
    return settings.cluster_name


def forget_cached() -> None:
    """Read SOURCES_FILE again at the next load_fleet (tests that rewrite it)."""
    with _lock:
        _cache.clear()


def single_fleet(settings: Settings) -> Fleet:
    """DATABASE_URL / DB_* and CLUSTER_NAME as a fleet of one, named after the cluster, whose
    databases keep their bare names: keys and catalog rows are those of before."""
    source = settings.source
    one = FleetSource(
        name=settings.cluster_name if SOURCE_NAME.fullmatch(settings.cluster_name) else "main",
        server=source,
        databases=source.databases,
        cluster=settings.cluster_name if source.postgres else None,
        kinds=frozenset(BackupKind),
        schedules=settings.schedules,
        retention=settings.retention,
        plain_names=True,
    )
    return Fleet((one,))


def _refuse_single_server(settings: Settings, path: str) -> None:
    """SOURCES_FILE and DB_NAME (or a database in DATABASE_URL) both say what to back up."""
    if settings.source.postgres and settings.source.databases:
        raise ConfigError(
            f"SOURCES_FILE={path} and DB_NAME (or DATABASE_URL's database) both name databases "
            "to back up: put that server in the sources file (plain_names: true keeps its "
            "keys) and unset DB_NAME"
        )


# --- reading the file -----------------------------------------------------------------------


class _Where:
    """Messages that name the file, the line and the field."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, node: Any, field_name: str, text: str) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else 1
        return ConfigError(f"SOURCES_FILE {self.path}, line {line}, {field_name}: {text}")


def read_sources_file(path: str, settings: Settings) -> Fleet:
    """Parse and check SOURCES_FILE; every refusal names the file, the line and the field."""
    import yaml  # imported here: only a fleet reads YAML

    where = _Where(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"SOURCES_FILE={path} cannot be read: {exc.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"SOURCES_FILE {path}, line {line}: not YAML: {problem}") from None
    top = _mapping(where, root, "", {"sources"})
    if "sources" not in top:
        raise where.error(root, "sources", "missing: the file is `sources:` and a list of servers")
    items = _sequence(where, top["sources"][1], "sources")
    if not items:
        raise where.error(top["sources"][1], "sources", "names no server")
    base = Path(path).resolve().parent
    sources = tuple(
        _source(where, node, f"sources[{i}]", settings, base) for i, node in enumerate(items)
    )
    _refuse_duplicates(where, items, sources)
    return Fleet(sources, from_file=path)


SOURCE_FIELDS = {
    "name",
    "url",
    "host",
    "port",
    "user",
    "database",
    "password_file",
    "databases",
    "exclude",
    "cluster",
    "kinds",
    "schedules",
    "retention",
    "plain_names",
    "wal",
}
WAL_MODES = ("receive", "push", "off")


def _source(where: _Where, node: Any, at: str, settings: Settings, base: Path) -> FleetSource:
    fields = _mapping(where, node, at, SOURCE_FIELDS)
    name = _name(where, fields, at)
    at = f"{at} ({name})"  # later messages say which source by its name too
    server, maintenance = _server(where, fields, at, base)
    databases, exclude = _databases(where, fields, at)
    cluster = None
    if "cluster" in fields:
        cluster = _text(where, fields["cluster"], f"{at}.cluster")
        if not valid_name(cluster):
            raise where.error(fields["cluster"][1], f"{at}.cluster", f"{cluster!r} {_USABLE}")
    kinds = _kinds(where, fields, at, cluster)
    schedules = _schedules(where, fields, at, settings.schedules)
    schedules = replace(schedules, wal_archiving=_wal(where, fields, at, cluster, schedules))
    return FleetSource(
        name=name,
        server=server,
        maintenance_db=maintenance,
        databases=databases,
        exclude=exclude,
        cluster=cluster,
        kinds=kinds,
        schedules=schedules,
        retention=_retention(where, fields, at, settings.retention),
        plain_names=_flag(where, fields, "plain_names", at),
        line=node.start_mark.line + 1,
    )


_USABLE = "is not a usable name (letters, digits, '_', '.', '-'; at most 63 characters)"


def _name(where: _Where, fields: dict[str, tuple[Any, Any]], at: str) -> str:
    if "name" not in fields:
        raise where.error(_first_node(fields), f"{at}.name", "missing: every source has a name")
    name = _text(where, fields["name"], f"{at}.name")
    if not SOURCE_NAME.fullmatch(name):
        raise where.error(
            fields["name"][1],
            f"{at}.name",
            f"{name!r} is not a source name (letters, digits, '_', '-'; no dot; at most 40)",
        )
    return name


def _server(
    where: _Where, fields: dict[str, tuple[Any, Any]], at: str, base: Path
) -> tuple[SourceSettings, str]:
    """The connection: `url`, or host/port/user[/database]; the password from password_file
    (else the URL's, else libpq's own PGPASSFILE / ~/.pgpass)."""
    parts = [k for k in ("host", "port", "user", "database") if k in fields]
    if "url" in fields and parts:
        raise where.error(
            fields[parts[0]][1], f"{at}.{parts[0]}", "give either url or host/port/user, not both"
        )
    if "url" in fields:
        url = _text(where, fields["url"], f"{at}.url")
        try:
            server = source_from_url(url, f"{at}.url")
        except ConfigError as exc:
            raise where.error(fields["url"][1], f"{at}.url", str(exc)) from None
        maintenance = server.databases[0] if server.databases else "postgres"
    elif "host" in fields:
        server = SourceSettings(
            host=_text(where, fields["host"], f"{at}.host"),
            port=_port(where, fields, at),
            user=_text(where, fields["user"], f"{at}.user") if "user" in fields else None,
            password=None,
            databases=(),
        )
        maintenance = (
            _text(where, fields["database"], f"{at}.database")
            if "database" in fields
            else "postgres"
        )
    else:
        raise where.error(
            _first_node(fields), f"{at}.url", "missing: give url, or host (with port, user)"
        )
    if "password_file" in fields:
        server = replace(server, password=_password(where, fields["password_file"], at, base))
    return replace(server, databases=()), maintenance


def _port(where: _Where, fields: dict[str, tuple[Any, Any]], at: str) -> int | None:
    if "port" not in fields:
        return None
    text = _text(where, fields["port"], f"{at}.port")
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise where.error(fields["port"][1], f"{at}.port", f"{text!r} is not a port (1 to 65535)")
    return int(text)


def _password(where: _Where, entry: tuple[Any, Any], at: str, base: Path) -> Secret:
    raw = _text(where, entry, f"{at}.password_file")
    path = Path(raw) if Path(raw).is_absolute() else base / raw
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise where.error(
            entry[1], f"{at}.password_file", f"{path} cannot be read: {exc.strerror}"
        ) from None
    if not value:
        raise where.error(entry[1], f"{at}.password_file", f"{path} is empty")
    return Secret(value)


def _databases(
    where: _Where, fields: dict[str, tuple[Any, Any]], at: str
) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    if "databases" not in fields:
        raise where.error(
            _first_node(fields), f"{at}.databases", "missing: say `all` or list the databases"
        )
    node = fields["databases"][1]
    databases: tuple[str, ...] | None
    if node.tag.endswith(":str") and node.value == "all":
        databases = None
    elif node.tag.endswith(":seq"):
        databases = _names(where, node, f"{at}.databases")
        if not databases:
            raise where.error(node, f"{at}.databases", "is empty: list a database, or say all")
    else:
        raise where.error(
            node, f"{at}.databases", f"expected `all` or a list of names, got {_shown(node)}"
        )
    exclude: tuple[str, ...] = ()
    if "exclude" in fields:
        exclude = _names(where, _sequence_node(where, fields["exclude"], f"{at}.exclude"), "")
    return databases, exclude


def _names(where: _Where, node: Any, at: str) -> tuple[str, ...]:
    out = []
    for item in node.value:
        if not item.tag.endswith(":str") or not valid_name(item.value):
            raise where.error(item, at, f"{_shown(item)} {_USABLE}")
        out.append(item.value)
    return tuple(out)


def _kinds(
    where: _Where, fields: dict[str, tuple[Any, Any]], at: str, cluster: str | None
) -> frozenset[BackupKind]:
    if "kinds" not in fields:
        return DEFAULT_KINDS | ({BackupKind.BASE} if cluster else set())
    node = _sequence_node(where, fields["kinds"], f"{at}.kinds")
    kinds = set()
    for item in node.value:
        if item.value not in tuple(BackupKind):
            allowed = ", ".join(BackupKind)
            raise where.error(item, f"{at}.kinds", f"{_shown(item)} is not one of {allowed}")
        kinds.add(BackupKind(item.value))
    physical = kinds & {BackupKind.BASE, BackupKind.INCREMENTAL}
    if physical and cluster is None:
        raise where.error(
            node, f"{at}.kinds", "base and incremental backups need the source's cluster: name"
        )
    return frozenset(kinds)


def _wal(
    where: _Where,
    fields: dict[str, tuple[Any, Any]],
    at: str,
    cluster: str | None,
    defaults: ScheduleSettings,
) -> str:
    """`wal: receive | push | off`: how this source's cluster's WAL is archived (default:
    WAL_ARCHIVING). receive: a worker (or the leading scheduler) streams it with wal-receive;
    push: the server's archive_command runs `permafrost wal-push --cluster CLUSTER`."""
    if "wal" not in fields:
        return defaults.wal_archiving
    node = fields["wal"][1]
    mode = _text(where, fields["wal"], f"{at}.wal").lower()
    if mode in ("false", "no"):  # YAML 1.1 reads a bare `off` as a boolean
        mode = "off"
    if mode not in WAL_MODES:
        raise where.error(node, f"{at}.wal", f"{_shown(node)} is not one of {', '.join(WAL_MODES)}")
    if mode != "off" and cluster is None:
        raise where.error(
            node,
            f"{at}.wal",
            f"{mode} archives a cluster's WAL: name it with the source's cluster:",
        )
    return mode


def _schedules(
    where: _Where, fields: dict[str, tuple[Any, Any]], at: str, defaults: ScheduleSettings
) -> ScheduleSettings:
    if "schedules" not in fields:
        return defaults
    entries = _mapping(where, fields["schedules"][1], f"{at}.schedules", set(SCHEDULE_KEYS))
    changes: dict[str, Any] = {}
    for key, entry in entries.items():
        text = _text(where, entry, f"{at}.schedules.{key}")
        try:
            schedule.parse(f"{at}.schedules.{key}", text, defaults.timezone)
        except ConfigError as exc:
            raise where.error(entry[1], f"{at}.schedules.{key}", str(exc)) from None
        changes[SCHEDULE_KEYS[key]] = text
    return replace(defaults, **changes)


def _retention(
    where: _Where, fields: dict[str, tuple[Any, Any]], at: str, defaults: RetentionSettings
) -> RetentionSettings:
    if "retention" not in fields:
        return defaults
    entries = _mapping(where, fields["retention"][1], f"{at}.retention", set(RETENTION_KEYS))
    changes: dict[str, Any] = {}
    for key, entry in entries.items():
        text = _text(where, entry, f"{at}.retention.{key}")
        if not text.isdigit() or int(text) < RETENTION_KEYS[key]:
            raise where.error(
                entry[1],
                f"{at}.retention.{key}",
                f"{text!r} is not a whole number of at least {RETENTION_KEYS[key]}",
            )
        changes[key] = int(text)
    chosen = replace(defaults, **changes)
    span = max(chosen.daily, chosen.weekly * 7)
    if span > defaults.standard_days:  # lifecycle would expire what retention keeps
        raise where.error(
            fields["retention"][1],
            f"{at}.retention",
            f"keeps standard backups {span} days, longer than STANDARD_TIER_DAYS="
            f"{defaults.standard_days}: raise STANDARD_TIER_DAYS to {span} or keep fewer",
        )
    return chosen


def _flag(where: _Where, fields: dict[str, tuple[Any, Any]], key: str, at: str) -> bool:
    if key not in fields:
        return False
    node = fields[key][1]
    if not node.tag.endswith(":bool"):
        raise where.error(node, f"{at}.{key}", f"expected true or false, got {_shown(node)}")
    return bool(node.value.lower() in ("true", "yes", "on"))


def _refuse_duplicates(where: _Where, nodes: list[Any], sources: tuple[FleetSource, ...]) -> None:
    seen: dict[str, FleetSource] = {}
    clusters: dict[str, FleetSource] = {}
    plain = [s for s in sources if s.plain_names]
    for i, source in enumerate(sources):
        if source.name in seen:
            raise where.error(
                nodes[i],
                f"sources[{i}].name",
                f"{source.name!r} is used twice (first on line {seen[source.name].line})",
            )
        seen[source.name] = source
        if source.cluster and source.cluster in clusters:
            first = clusters[source.cluster]
            raise where.error(
                nodes[i],
                f"sources[{i}].cluster",
                f"{source.cluster!r} is also {first.name}'s (line {first.line}): one per server",
            )
        if source.cluster:
            clusters[source.cluster] = source
        _refuse_long_names(where, nodes[i], i, source)
    if len(plain) > 1:
        raise where.error(
            nodes[sources.index(plain[1])],
            f"sources[{sources.index(plain[1])}].plain_names",
            f"only one source may keep plain names ({plain[0].name} does already)",
        )


def _refuse_long_names(where: _Where, node: Any, i: int, source: FleetSource) -> None:
    for database in source.databases or ():
        if not valid_name(source.catalog_name(database)):
            raise where.error(
                node,
                f"sources[{i}].databases",
                f"{source.catalog_name(database)!r} (source.database) is longer than 63 "
                "characters: shorten the source's name",
            )


# --- YAML nodes -----------------------------------------------------------------------------


def _mapping(where: _Where, node: Any, at: str, allowed: set[str]) -> dict[str, tuple[Any, Any]]:
    """A mapping node's entries by key (key node, value node); unknown keys refused."""
    if node is None or not node.tag.endswith(":map"):
        raise where.error(node, at, f"expected a mapping (key: value lines), got {_shown(node)}")
    out: dict[str, tuple[Any, Any]] = {}
    for key, value in node.value:
        if key.value not in allowed:
            known = ", ".join(sorted(allowed))
            raise where.error(key, _join(at, key.value), f"unknown field (known: {known})")
        if key.value in out:
            raise where.error(key, _join(at, key.value), "given twice")
        out[key.value] = (key, value)
    return out


def _join(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _sequence(where: _Where, node: Any, at: str) -> list[Any]:
    if not node.tag.endswith(":seq"):
        raise where.error(node, at, f"expected a list (lines starting with -), got {_shown(node)}")
    return list(node.value)


def _sequence_node(where: _Where, entry: tuple[Any, Any], at: str) -> Any:
    _sequence(where, entry[1], at)
    return entry[1]


def _text(where: _Where, entry: tuple[Any, Any], at: str) -> str:
    node = entry[1]
    if not hasattr(node, "tag") or node.tag.endswith((":map", ":seq", ":null")):
        raise where.error(node, at, f"expected a value, got {_shown(node)}")
    text = str(node.value).strip()
    if not text:
        raise where.error(node, at, "is empty")
    return text


def _first_node(fields: dict[str, tuple[Any, Any]]) -> Any:
    return next(iter(fields.values()))[0] if fields else None


def _shown(node: Any) -> str:
    if node is None:
        return "nothing"
    if node.tag.endswith(":map"):
        return "a mapping"
    if node.tag.endswith(":seq"):
        return "a list"
    if node.tag.endswith(":null"):
        return "nothing"
    return repr(node.value)
