"""Tonight's backups and their forecast: what `permafrost plan window`, the dashboard's window
panel and `/api/window` show.

Tonight is the next time `BACKUP_WINDOW` opens (or the window open now). Its backups are, today,
a logical backup of every database of `DB_NAME` (or, with none named, of every database with a
completed one) and a base backup of `CLUSTER_NAME` when `BASE_BACKUP_SCHEDULE` fires inside the
window, all on one source named after the cluster; a sources file will add more sources as more
`Planned` items. Each is expected to take the median of its last seven completed backups.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from permafrost.backup.forecast import Forecast, Limits, Planned, forecast
from permafrost.catalog.reads import recent_durations
from permafrost.catalog.store import Catalog
from permafrost.config.schedule import schedules
from permafrost.config.settings import Settings
from permafrost.repo.manifest import Kind

RECENT = 7  # backups whose median duration is the expectation


def window_forecast(
    settings: Settings, catalog: Catalog, workers: int, now: datetime
) -> tuple[Forecast, datetime]:
    """Tonight's forecast with `workers` workers, and when tonight's window opens."""
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
    items = tonight(settings, durations, opens)
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
