"""Backups queued for the workers: one task per database (or cluster), carrying its source
label and its subject (the backup lock it will take), so the claim can keep the limits.

The source label is one field on the task: the SOURCES_FILE source the database belongs to
(config/fleet.py), or for the single-server settings the fleet of one, named by CLUSTER_NAME;
`source_label` is the one place that says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from permafrost import layout
from permafrost.backup.request import kind_of
from permafrost.catalog.jobs import BASE_JOBS, JobName, backup_lock_name
from permafrost.config.fleet import load_fleet
from permafrost.config.settings import Settings
from permafrost.repo.manifest import Kind

if TYPE_CHECKING:
    from permafrost.catalog.store import Catalog

BACKUP_TASK = "backup"


@dataclass(frozen=True)
class Queued:
    """A backup put in the queue (or found already waiting there)."""

    task_id: int
    job: JobName
    name: str
    source: str
    already: bool = False

    def json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "job": str(self.job),
            "database": self.name,
            "source": self.source,
            "already_queued": self.already,
        }


def source_label(settings: Settings, name: str) -> str:
    """The name of the source a backup of `name` (a database's catalog name, or a cluster's)
    reads: its SOURCES_FILE source, else the one server's, named by CLUSTER_NAME."""
    fleet = load_fleet(settings)
    for source in fleet.sources:
        if source.cluster == name:
            return source.name
    return fleet.owner(name) or settings.cluster_name


def queue_backup(
    catalog: Catalog,
    settings: Settings,
    job: JobName,
    name: str,
    requested_by: str,
    trigger: str = "schedule",
) -> Queued:
    """One backup queued for the workers, unless the same backup already waits in the queue."""
    kind = Kind.BASE if job in BASE_JOBS else kind_of(settings.source, name)
    layout.check_name(name, "cluster" if kind == Kind.BASE else "database")
    subject = backup_lock_name(kind, name)
    source = source_label(settings, name)
    waiting = catalog.queued_like(BACKUP_TASK, subject, str(job))
    if waiting is not None:
        return Queued(waiting, job, name, source, already=True)
    payload = {"job": str(job), "database": name, "trigger": trigger}
    task_id = catalog.enqueue(BACKUP_TASK, payload, requested_by, source=source, subject=subject)
    return Queued(task_id, job, name, source)


def queue_all(
    catalog: Catalog, settings: Settings, job: JobName, requested_by: str
) -> list[Queued]:
    """Every configured database's backup of this job queued (a base backup: the cluster's)."""
    names = [settings.cluster_name] if job in BASE_JOBS else list(settings.source.backed_up)
    return [queue_backup(catalog, settings, job, name, requested_by, "manual") for name in names]


def task_labels(settings: Settings, kind: str, payload: dict[str, Any]) -> dict[str, str]:
    """The source and subject of a task queued by the API or the dashboard, so the workers'
    limits hold for it too: a backup naming one database (or the cluster) has both; a backup of
    every database has its source only (it runs them one after another); other tasks neither."""
    if kind != BACKUP_TASK:
        return {}
    labels = {"source": settings.cluster_name}
    if payload.get("kind") == "base":
        cluster = payload.get("cluster") or settings.cluster_name
        labels = {"source": source_label(settings, cluster)}
        labels["subject"] = backup_lock_name(Kind.BASE, cluster)
    elif payload.get("database"):
        name = str(payload["database"])
        labels = {"source": source_label(settings, name)}
        labels["subject"] = backup_lock_name(kind_of(settings.source, name), name)
    return labels
