"""SOURCES_FILE (YAML) read into a Fleet: every field checked, and a bad one refused with the
file, the line and the field named (ConfigError), from PyYAML's node marks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from permafrost.config import schedule
from permafrost.config.env import Secret
from permafrost.config.fleet_model import (
    DEFAULT_KINDS,
    RETENTION_KEYS,
    SCHEDULE_KEYS,
    SOURCE_NAME,
    BackupKind,
    Fleet,
    FleetSource,
)
from permafrost.config.settings import RetentionSettings, ScheduleSettings, Settings
from permafrost.config.source import SourceSettings, source_from_url
from permafrost.errors import ConfigError
from permafrost.layout import valid_name

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
