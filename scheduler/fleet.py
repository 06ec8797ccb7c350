"""The scheduler's jobs for a SOURCES_FILE fleet: per source, one job per kind it runs, at the
source's own schedules; each backs up the source's databases one after the other (jobs.py
`source_backups`), listed at the run for `databases: all`."""

from __future__ import annotations

from dataclasses import replace

from permafrost.catalog.jobs import JobName
from permafrost.config import schedule
from permafrost.config.fleet import BackupKind, Fleet, FleetSource
from permafrost.config.settings import Settings
from scheduler.jobs import JobSpec

# Each kind a source may run and the job that takes it; logical kinds back up every database
# of the source (a job per source), physical ones its cluster.
LOGICAL_JOBS = {
    BackupKind.LOGICAL: JobName.BACKUP,
    BackupKind.COMPLIANCE: JobName.COMPLIANCE_BACKUP,
}
PHYSICAL_JOBS = {
    BackupKind.BASE: JobName.BASE_BACKUP,
    BackupKind.INCREMENTAL: JobName.INCREMENTAL_BACKUP,
}


def fleet_specs(settings: Settings, fleet: Fleet) -> list[tuple[JobSpec, schedule.Schedule]]:
    out: list[tuple[JobSpec, schedule.Schedule]] = []
    for source in fleet.sources:
        crons = source_schedules(settings, source)
        for kind, job in LOGICAL_JOBS.items():
            if kind in source.kinds:
                spec = JobSpec(f"{job}:@{source.name}", job, None, "critical", source.name)
                out.append((spec, crons[job]))
        for kind, job in PHYSICAL_JOBS.items():
            if kind in source.kinds and source.cluster is not None:
                spec = JobSpec(f"{job}:{source.cluster}", job, source.cluster, "critical")
                out.append((replace(spec, source=source.name), crons[job]))
        if BackupKind.BASE in source.kinds and source.cluster is not None:
            # The drill of the cluster (off where its WAL or base backups are: drill_schedule)
            drill = JobName.PITR_DRILL
            spec = JobSpec(f"{drill}:{source.cluster}", drill, source.cluster, source=source.name)
            out.append((spec, crons[drill]))
    return out


def source_schedules(settings: Settings, source: FleetSource) -> dict[str, schedule.Schedule]:
    """The source's schedules (its overrides over the environment's), by job name, each
    named after the file's field so a message says where to look."""
    crons = schedule.schedules(replace(settings, schedules=source.schedules))
    named = {}
    for job, cron in crons.items():
        named[job] = replace(cron, variable=f"{cron.variable} (source {source.name})")
    return named
