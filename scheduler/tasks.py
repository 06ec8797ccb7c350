"""The leader's task reader: `backup` tasks from the queue (the dashboard's "run now"), with
BACKUP_WORKERS=inline; and `run_backup_task`, the same backups run by `permafrost worker`
processes with BACKUP_WORKERS=queue.

It runs on a thread of its own with its own metadata connections (one to claim, one to LISTEN),
takes one task at a time, and ends when the leadership ends or the store is lost; the leader
starts it again.
"""

from __future__ import annotations

import threading
from typing import Any

from permafrost import layout
from permafrost.catalog.db import STORE_ERRORS
from permafrost.catalog.jobs import JobName
from permafrost.catalog.records import TaskRecord
from permafrost.catalog.store import Catalog
from permafrost.catalog.tasks import TaskListener
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.errors import PermafrostError, UsageError
from permafrost.logs import Say
from permafrost.text import first_line
from permafrost.worker.loop import Interrupted
from scheduler.jobs import Jobs, JobSpec, Running


class TaskReader:
    def __init__(
        self,
        settings: Settings,
        say: Say,
        instance: str,
        jobs: Jobs,
        running: Running,
        stop: threading.Event,
    ) -> None:
        self.settings, self.say, self.instance = settings, say, instance
        self.jobs, self.running, self.stop = jobs, running, stop

    def run(self, term: threading.Event) -> None:
        """Take tasks until `term` (the end of this leadership) or a lost metadata store."""
        ctx = Context(self.settings)
        listener = None
        try:
            catalog = ctx.catalog()
            assert self.settings.metadata_url is not None  # the catalog answered: it is set
            listener = TaskListener(self.settings.metadata_url)
            while not term.is_set():
                task = catalog.claim(["backup"], self.instance)
                if task is None:
                    listener.wait(2)
                    continue
                try:
                    self._task(catalog, task)
                except STORE_ERRORS:
                    raise
                except Exception as exc:  # a bad task fails alone
                    catalog.finish_task(task.id, f"{type(exc).__name__}: {exc}", {})
        except STORE_ERRORS as exc:
            if not self.stop.is_set():
                self.say(f"the task queue is unreachable ({first_line(exc)}); retrying soon")
        finally:
            if listener is not None:
                listener.close()
            ctx.close()

    def _task(self, catalog: Catalog, task: TaskRecord) -> None:
        job, names = self._targets(task)
        try:
            for name in names:
                layout.check_name(name)
        except PermafrostError as exc:
            catalog.finish_task(task.id, str(exc), {})
            return
        if not names:
            catalog.finish_task(task.id, "no database to back up: set DB_NAME", {})
            return
        self.say(
            f"task {task.id}: {job} of {', '.join(names)} requested by {task.requested_by}",
            event="task_taken",
            task_id=task.id,
            job=str(job),
            database=",".join(names),
        )
        payload = task.payload or {}
        with self.running.holding(f"task:{task.id}"):
            results, errors = self._back_up(
                job, names, str(payload.get("description", "")), tuple(payload.get("tags", ()))
            )
        if errors and not any("backup_id" in r for r in results) and self.stop.is_set():
            catalog.requeue(task.id)  # nothing was done: the next leader does it all
            self.say(
                f"task {task.id}: interrupted by the shutdown, back in the queue",
                event="task_requeued",
                task_id=task.id,
            )
            return
        catalog.finish_task(task.id, "; ".join(errors) or None, {"backups": results})
        self.say(
            f"task {task.id}: {'failed' if errors else 'succeeded'}",
            event="task_finished",
            task_id=task.id,
            status="failed" if errors else "succeeded",
        )

    def _targets(self, task: TaskRecord) -> tuple[JobName, list[str]]:
        return targets(self.settings, task)

    def _back_up(
        self, job: JobName, names: list[str], description: str = "", tags: tuple[str, ...] = ()
    ) -> tuple[list[dict[str, str]], list[str]]:
        return back_up(self.jobs, self.stop, job, names, "task", description, tags)


def targets(settings: Settings, task: TaskRecord) -> tuple[JobName, list[str]]:
    """The job a task asks for (its payload's `job`, else from its kind and tier) and the
    databases (or cluster) it names: every configured database when it names none."""
    payload = task.payload or {}
    if payload.get("job"):
        job = JobName(payload["job"])
        return job, [payload.get("database") or payload.get("cluster") or settings.cluster_name]
    if payload.get("kind", "logical") == "base":
        return JobName.BASE_BACKUP, [payload.get("cluster") or settings.cluster_name]
    job = JobName.COMPLIANCE_BACKUP if payload.get("tier") == "compliance" else JobName.BACKUP
    names = [payload["database"]] if payload.get("database") else []
    return job, names or list(settings.source.backed_up)


def back_up(
    jobs: Jobs,
    stop: threading.Event,
    job: JobName,
    names: list[str],
    trigger: str,
    description: str = "",
    tags: tuple[str, ...] = (),
) -> tuple[list[dict[str, str]], list[str]]:
    """Each database's outcome, and the errors of those that did not complete (a backup
    from `POST /backup/create` carries its description and tags)."""
    results, errors = [], []
    for name in names:
        if stop.is_set():
            errors.append(f"{name}: not started, stopping")
            continue
        spec = JobSpec(f"{job}:{name}", job, name, "critical")
        outcome = jobs.backup(spec, trigger, description, tags)
        results.append({"database": name, **outcome})
        if "error" in outcome:
            errors.append(f"{name}: {outcome['error']}")
    return results, errors


def run_backup_task(
    ctx: Context, task: TaskRecord, say: Say, stopping: threading.Event
) -> dict[str, Any]:
    """A `backup` task on a worker (BACKUP_WORKERS=queue): the scheduler's own backup job, with
    its alert, pings and incremental fallback. A backup the worker's shutdown aborted, with
    nothing completed, goes back to the queue (Interrupted); other failures fail the task."""
    job, names = targets(ctx.settings, task)
    for name in names:
        layout.check_name(name)
    if not names:
        raise UsageError("no database to back up: set DB_NAME")
    payload = task.payload or {}
    jobs = Jobs(ctx.settings, say, abort=stopping, stopping=stopping)
    trigger = str(payload.get("trigger") or "task")
    results, errors = back_up(
        jobs,
        stopping,
        job,
        names,
        trigger,
        str(payload.get("description", "")),
        tuple(payload.get("tags", ())),
    )
    if errors and stopping.is_set() and not any("backup_id" in r for r in results):
        raise Interrupted("; ".join(errors))
    if errors:
        raise PermafrostError("; ".join(errors))
    return {"backups": results}
