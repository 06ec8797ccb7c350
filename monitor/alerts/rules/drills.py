"""pitr_drill:{cluster}: the newest PITR drill failed (critical), or none has succeeded for
twice the drill schedule's interval (warning). The next successful drill resolves it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from monitor.alerts.findings import Finding, Severity, summary
from monitor.alerts.run import Run
from permafrost.catalog.records import DrillRecord, DrillStatus
from permafrost.config.fleet import BackupKind, load_fleet
from permafrost.config.schedule import drill_interval
from permafrost.config.settings import Settings
from permafrost.text import iso, one_line, spoken_duration


def pitr_drill(run: Run) -> list[Finding]:
    newest = {d.cluster: d for d in run.catalog.newest_drills()}
    good = {d.cluster: d for d in run.catalog.newest_drills(DrillStatus.SUCCEEDED)}
    out = [
        failed_drill_finding(drill, good.get(cluster))
        for cluster, drill in sorted(newest.items())
        if not drill.succeeded
    ]
    failed = {f.details["cluster"] for f in out}
    for cluster, settings in drilled(run.settings):
        if cluster not in failed:
            out += _overdue(run, cluster, good.get(cluster), settings)
    return out


def drilled(settings: Settings) -> list[tuple[str, Settings]]:
    """The clusters drills are scheduled for, each with the settings of its schedule: CLUSTER_NAME,
    or each SOURCES_FILE source's cluster with base backups (its own schedules and `wal:`)."""
    fleet = load_fleet(settings)
    if fleet.from_file is None:
        return [(settings.cluster_name, settings)]
    return [
        (s.cluster, replace(settings, schedules=s.schedules))
        for s in fleet.sources
        if s.cluster is not None and BackupKind.BASE in s.kinds
    ]


def failed_drill_finding(drill: DrillRecord, good: DrillRecord | None) -> Finding:
    cluster = drill.cluster
    error = one_line(drill.error or "no error recorded", 120)
    return Finding(
        f"pitr_drill:{cluster}",
        Severity.CRITICAL,
        summary(f"the PITR drill of cluster {cluster} failed: {error}"),
        {
            "cluster": cluster,
            "started_at": iso(drill.started_at),
            "base_backup_id": drill.base_backup_id,
            "target_time": iso(drill.target_time),
            "error": one_line(drill.error or "", 1000),
            "last_successful_drill_at": iso(good.started_at) if good else None,
        },
        f"permafrost wal verify --cluster {cluster}\npermafrost drill --cluster {cluster}",
    )


def _overdue(run: Run, cluster: str, good: DrillRecord | None, settings: Settings) -> list[Finding]:
    """No success for twice the schedule's interval (since the first base backup, if never)."""
    interval = drill_interval(settings, run.now)
    if interval is None:
        return []
    since = good.started_at if good else run.catalog.first_base_backup_at(cluster)
    if since is None or run.now - since <= 2 * interval:
        return []
    return [overdue_finding(cluster, since, good is not None, interval, run.now)]


def overdue_finding(
    cluster: str, since: datetime, drilled: bool, interval: timedelta, now: datetime
) -> Finding:
    age = spoken_duration((now - since).total_seconds())
    what = f"for {age}" if drilled else f"ever (base backups exist for {age})"
    return Finding(
        f"pitr_drill:{cluster}",
        Severity.WARNING,
        summary(f"no PITR drill of cluster {cluster} has succeeded {what}"),
        {
            "cluster": cluster,
            "last_successful_drill_at": iso(since) if drilled else None,
            "schedule_interval": spoken_duration(interval.total_seconds()),
        },
        f"permafrost status\npermafrost drill --cluster {cluster}",
    )
