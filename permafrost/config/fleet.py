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

import threading
from collections.abc import Callable
from dataclasses import replace

from permafrost.config.fleet_model import (
    DEFAULT_KINDS,
    RETENTION_KEYS,
    SCHEDULE_KEYS,
    SOURCE_NAME,
    TEMPLATES,
    BackupKind,
    Fleet,
    FleetSource,
)
from permafrost.config.settings import RetentionSettings, Settings
from permafrost.config.sources_file import read_sources_file
from permafrost.errors import ConfigError, UsageError

__all__ = [
    "DEFAULT_KINDS",
    "RETENTION_KEYS",
    "SCHEDULE_KEYS",
    "SOURCE_NAME",
    "TEMPLATES",
    "BackupKind",
    "Fleet",
    "FleetSource",
    "chosen_cluster",
    "cluster_settings",
    "forget_cached",
    "load_fleet",
    "read_sources_file",
    "retention_for",
    "single_fleet",
]

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
