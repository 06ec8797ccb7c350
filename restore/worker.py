"""The restore worker: the restore container's main process.

It claims `verify`, `test_restore`, `restore` and `pitr_drill` tasks from the metadata store's
queue (FOR UPDATE SKIP LOCKED, so two workers never take the same task), sleeps on LISTEN until
one is queued, runs it, and records the outcome. A failing task fails alone; the worker goes
on. On SIGTERM it puts the task in hand back in the queue and exits; a task whose worker died is
requeued by the next worker that looks (the dead worker's advisory lock on it is gone).

It writes a heartbeat (service_heartbeats, service `worker`) every BEAT_SECONDS (or as often as
it polls) from a thread of its own, so a test restore that runs for hours is still alive to the
monitor; a clean stop (SIGTERM) marks its row stopped, so only a worker that vanished alerts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from permafrost.backup.lookup import resolve
from permafrost.catalog.drills import DRILL_TASK
from permafrost.catalog.heartbeats import Beating, Service
from permafrost.catalog.records import BackupRecord, TaskRecord
from permafrost.context import Context
from permafrost.errors import CatalogUnavailable, PermafrostError, UsageError
from permafrost.logs import Say
from restore.drills.cli import drill_json
from restore.drills.run import run_drill
from restore.engine import RestoreOptions, execute, plan_restore, refuse_base
from restore.sqlite_verify import verify_sqlite
from restore.trial import test_restore
from restore.verify import verify_backup

if TYPE_CHECKING:
    from permafrost.catalog.tasks import TaskListener

KINDS = ["verify", "test_restore", "restore", DRILL_TASK]
RECONNECT_MAX = 30.0  # seconds between attempts to reach a lost metadata store, at most
BEAT_SECONDS = 30.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_task(ctx: Context, task: TaskRecord, say: Say) -> dict[str, Any]:
    if task.kind == DRILL_TASK:
        return drill_json(run_drill(ctx, str(task.payload["cluster"]), task.requested_by, say))
    record = resolve(ctx, str(task.payload["backup_id"]))
    if record.kind == "sqlite":
        return _sqlite_task(ctx, record, task.kind)
    if task.kind == "restore":
        return restore_into_new(ctx, record, str(task.payload["target_db"]), say)
    if task.kind == "verify":
        verified = verify_backup(ctx, record)
        return {
            "backup_id": record.id,
            "seconds": round(verified.seconds, 3),
            "stored_bytes": verified.stored_bytes,
        }
    trial = test_restore(ctx, record, say)
    return {
        "backup_id": record.id,
        "seconds": round(trial.seconds, 3),
        "tables": trial.tables,
        "bytes_per_second": round(trial.bytes_per_second),
    }


def _subject(task: TaskRecord) -> object:
    """What a task is about: its backup, or for a drill its cluster."""
    return task.payload.get("backup_id") or task.payload.get("cluster")


def _sqlite_task(ctx: Context, record: BackupRecord, kind: str) -> dict[str, Any]:
    """A SQLite backup's named checks (seven for a test restore); a queued restore into a
    database does not apply to a file."""
    if kind == "restore":
        raise UsageError(
            f"backup {record.id} is of a SQLite file: restore it with "
            f"`permafrost restore {record.id} --target-path PATH`"
        )
    result = verify_sqlite(ctx, record, full=kind == "test_restore")
    if result.report.error is not None:
        raise result.report.error
    return {
        "backup_id": record.id,
        "seconds": round(result.seconds, 3),
        "checks": [o.check for o in result.report.outcomes],
    }


def restore_into_new(
    ctx: Context, record: BackupRecord, target_db: str, say: Say
) -> dict[str, Any]:
    """A restore queued through the API: into a database that does not exist, never over one
    (without drop_existing the plan refuses an existing target, however it came to exist)."""
    refuse_base(record, "the restore worker")
    options = RestoreOptions(target_db=target_db, jobs=ctx.settings.restore.jobs)
    result = execute(ctx, plan_restore(ctx, record, options), say)
    return {
        "backup_id": record.id,
        "target_db": target_db,
        "tables": len(result.counts),
        "rows": sum(n or 0 for n in result.counts.values()),
        "seconds": round(result.seconds, 3),
    }


class Worker:
    def __init__(self, ctx: Context, say: Say, poll_seconds: float = 30.0) -> None:
        self.ctx, self.say, self.poll_seconds = ctx, say, poll_seconds
        self.name = worker_name()
        self.done = 0
        self.current: int | None = None  # the task in hand, for the heartbeat

    def run(self, *, once: bool = False) -> int:
        """Work until SIGTERM (or, with once, until the queue is empty).

        A lost metadata store does not end the worker: it says so, waits with a doubling pause
        (1 s to RECONNECT_MAX), connects afresh and goes on; a task it had in hand is requeued
        by the first worker back, because its advisory lock went with the old connection.
        """
        if self.ctx.settings.metadata_url is None:
            self.ctx.catalog()  # not configured is a mistake to report, not an outage to wait out
        self.say(f"restore worker {self.name} waiting for {', '.join(KINDS)} tasks")
        beating = self._beating(once)
        try:
            return self._work(once)
        except KeyboardInterrupt:
            self.say(f"restore worker {self.name} stopping")
            if beating is not None:
                beating.stop(clean=True)
                beating = None
            return 0
        finally:
            if beating is not None:
                beating.stop(clean=False)

    def _beating(self, once: bool) -> Beating | None:
        """The heartbeat thread, started (not for `--once`, a command rather than a service)."""
        if once or self.ctx.settings.metadata_url is None:
            return None
        return Beating(
            self.ctx.settings.metadata_url,
            Service.WORKER,
            self.name,
            self._details,
            every=min(BEAT_SECONDS, self.poll_seconds),
        ).start()

    def _details(self) -> dict[str, Any]:
        return {"kinds": KINDS, "task": self.current, "done": self.done}

    def _work(self, once: bool) -> int:
        pause = 1.0
        while True:
            started = time.monotonic()
            try:
                return self._serve(once)
            except CatalogUnavailable as exc:
                if once:
                    raise
                if time.monotonic() - started > RECONNECT_MAX:
                    pause = 1.0  # it had been working: a new outage starts from 1 s
                self.say(f"{exc}; connecting again in {pause:.0f} s")
                self.ctx.forget_catalog()
                time.sleep(pause)
                pause = min(pause * 2, RECONNECT_MAX)

    def _serve(self, once: bool) -> int:
        """Claim and run tasks on one metadata connection until the queue is empty (once)."""
        catalog = self.ctx.catalog()
        listener = self._listen()
        try:
            while True:
                if catalog.requeue_orphans():
                    self.say("requeued tasks whose worker had died")
                task = catalog.claim(KINDS, self.name)
                if task is None:
                    if once:
                        return 0
                    listener.wait(self.poll_seconds)
                    continue
                self._run(task)
        finally:
            with contextlib.suppress(CatalogUnavailable, OSError):
                listener.close()

    def _run(self, task: TaskRecord) -> None:
        catalog = self.ctx.catalog()
        fields: dict[str, Any] = {
            "task_id": task.id,
            "kind": task.kind,
            "backup_id": task.payload.get("backup_id"),
        }
        self.say(
            f"task {task.id}: {task.kind} {_subject(task)} started",
            event="task_taken",
            **fields,
        )
        started = time.monotonic()
        self.current = task.id
        try:
            result = run_task(self.ctx, task, self.say)
        except KeyboardInterrupt:
            catalog.requeue(task.id)
            self.say(
                f"task {task.id}: interrupted, back in the queue", event="task_requeued", **fields
            )
            raise
        except CatalogUnavailable:
            raise
        except PermafrostError as exc:
            catalog.finish_task(task.id, str(exc), {})
            self._finished(f"task {task.id}: failed: {exc}", started, "failed", fields, str(exc))
            return
        except Exception as exc:  # a bug in one task must not stop the worker
            error = f"{type(exc).__name__}: {exc}"
            catalog.finish_task(task.id, error, {})
            self._finished(
                f"task {task.id}: failed unexpectedly: {error}", started, "failed", fields, error
            )
            return
        finally:
            self.current = None
        catalog.finish_task(task.id, None, result)
        self.done += 1
        took = f"{time.monotonic() - started:.1f} s"
        self._finished(f"task {task.id}: succeeded in {took}", started, "succeeded", fields)

    def _finished(
        self,
        text: str,
        started: float,
        status: str,
        fields: dict[str, Any],
        error: str | None = None,
    ) -> None:
        level = logging.INFO if error is None else logging.ERROR
        extra = {**fields, "status": status, "duration_s": round(time.monotonic() - started, 3)}
        if error is not None:
            extra["error"] = error
        self.say(text, level=level, event="task_finished", **extra)

    def _listen(self) -> TaskListener:
        # Imported here for start-up cost: `permafrost verify` imports this module, and the
        # driver is loaded only when a catalog is needed.
        from permafrost.catalog.tasks import TaskListener

        assert self.ctx.settings.metadata_url is not None
        return TaskListener(self.ctx.settings.metadata_url)
