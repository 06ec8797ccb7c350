"""Tonight's backups and their forecast: what `permafrost plan window`, the dashboard's window
panel and `/api/window` show.

Tonight is the next time `BACKUP_WINDOW` opens (or the window open now). Its backups are, today,
a logical backup of every database of `DB_NAME` (or, with none named, of every database with a
completed one) and a base backup of `CLUSTER_NAME` when `BASE_BACKUP_SCHEDULE` fires inside the
window, all on one source named after the cluster; with SOURCES_FILE, each source's databases
and its cluster's base backup, under the source's name (`fleet_tonight`; `plan window --source
NAME` keeps one source's). Each is expected to take the median of its last seven completed
backups.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from permafrost.backup.forecast import Forecast, Limits, Planned, forecast
from permafrost.backup.sources import known_names
from permafrost.catalog.reads import recent_durations
from permafrost.catalog.store import Catalog
from permafrost.config.fleet import BackupKind, FleetSource, load_fleet
from permafrost.config.schedule import schedules
from permafrost.config.settings import Settings
from permafrost.repo.manifest import Kind

RECENT = 7  # backups whose median duration is the expectation


def window_forecast(
    settings: Settings, catalog: Catalog, workers: int, now: datetime, source: str | None = None
) -> tuple[Forecast, datetime]:
    """Tonight's forecast with `workers` workers, and when tonight's window opens; with
    `source`, of that SOURCES_FILE source's backups only (as if the workers were its own)."""
    opens = window_opens(settings, now)
    durations = {
        (row["database"], row["kind"]): float(row["seconds"])
        for row in recent_durations(catalog, RECENT)
    }
    limits = Limits(
        workers=workers,
        per_worker=settings.window.max_concurrent,
        per_source=settings.window.max_concurrent_per_source,
    )
    fleet = load_fleet(settings)
    if fleet.from_file is None:
        fleet.select(source)  # --source: the fleet of one's own name, or refused
        items = tonight(settings, durations, opens)
    else:
        items = fleet_tonight(settings, catalog, fleet.select(source), durations, opens)
    return forecast(items, limits, settings.window.seconds), opens


def window_opens(settings: Settings, now: datetime) -> datetime:
    """When tonight's window opens: the window open now, or the next one."""
    local = now.astimezone(ZoneInfo(settings.schedules.timezone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    length = timedelta(seconds=settings.window.seconds)
    for day in (-1, 0):  # yesterday's window may still be open past midnight
        opens = midnight + timedelta(days=day, minutes=settings.window.opens)
        if opens + length > local:
            return opens
    return midnight + timedelta(days=1, minutes=settings.window.opens)


def tonight(
    settings: Settings, durations: dict[tuple[str, str], float], opens: datetime
) -> list[Planned]:
    """The backups tonight, each with its expected seconds (None: never completed)."""
    source = settings.cluster_name
    databases = settings.source.databases or sorted(
        name for name, kind in durations if kind == Kind.LOGICAL
    )
    items = [
        Planned(source, name, durations.get((name, Kind.LOGICAL)), Kind.LOGICAL)
        for name in databases
    ]
    if _base_backup_tonight(settings, opens):
        cluster = settings.cluster_name
        items.append(Planned(source, cluster, durations.get((cluster, Kind.BASE)), Kind.BASE))
    return items


def fleet_tonight(
    settings: Settings,
    catalog: Catalog,
    chosen: tuple[FleetSource, ...],
    durations: dict[tuple[str, str], float],
    opens: datetime,
) -> list[Planned]:
    """A SOURCES_FILE fleet's backups tonight: each source's databases (the file's list, or
    what its last listing found) under the source's name, and its cluster's base backup when
    the source's own base backup schedule fires inside the window."""
    items = []
    for source in chosen:
        if BackupKind.LOGICAL in source.kinds:
            items += [
                Planned(source.name, name, durations.get((name, Kind.LOGICAL)), Kind.LOGICAL)
                for name in known_names(catalog, source)
            ]
        own = replace(settings, schedules=source.schedules)
        if source.cluster and BackupKind.BASE in source.kinds and _base_backup_tonight(own, opens):
            seconds = durations.get((source.cluster, Kind.BASE))
            items.append(Planned(source.name, source.cluster, seconds, Kind.BASE))
    return items


def _base_backup_tonight(settings: Settings, opens: datetime) -> bool:
    fire = schedules(settings)["base_backup"].next_after(opens - timedelta(seconds=1))
    return fire is not None and fire < opens + timedelta(seconds=settings.window.seconds)


def forecast_json(result: Forecast, opens: datetime) -> dict[str, Any]:
    """The forecast as `plan window --json` and `/api/window` give it."""

    def at(seconds: float) -> str:
        return (opens + timedelta(seconds=seconds)).isoformat(timespec="seconds")

    return {
        "window_opens": opens.isoformat(timespec="seconds"),
        "window_closes": at(result.window_seconds),
        "workers": result.limits.workers,
        "max_concurrent": result.limits.per_worker,
        "max_concurrent_per_source": result.limits.per_source,
        "finishes": at(result.finish),
        "fits": result.fits,
        "workers_needed": result.workers_needed,
        "bottleneck": (
            {"source": result.bottleneck[0], "seconds": round(result.bottleneck[1], 1)}
            if result.bottleneck
            else None
        ),
        "backups": [
            {
                "source": run.item.source,
                "database": run.item.database,
                "kind": run.item.kind,
                "expected_seconds": round(run.end - run.start, 1),
                "worker": run.worker,
                "starts": at(run.start),
                "ends": at(run.end),
                "misses_window": run.end > result.window_seconds,
            }
            for run in result.runs
        ],
        "unmeasured": [
            {"source": i.source, "database": i.database, "kind": i.kind} for i in result.unmeasured
        ],
    }
