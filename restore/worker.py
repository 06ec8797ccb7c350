"""The restore worker: the restore container's main process, and the restore kinds' handlers
that `permafrost worker` runs too (permafrost/worker/loop.py is the loop both run).

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

import threading
from typing import Any

from permafrost.backup.lookup import resolve
from permafrost.catalog.drills import DRILL_TASK
from permafrost.catalog.records import BackupRecord, TaskRecord
from permafrost.context import Context
from permafrost.errors import UsageError
from permafrost.logs import Say
from permafrost.worker import loop
from permafrost.worker.loop import Handler
from restore.drills.cli import drill_json
from restore.drills.run import run_drill
from restore.engine import RestoreOptions, execute, plan_restore, refuse_base
from restore.sqlite_verify import verify_sqlite
from restore.trial import test_restore
from restore.verify import verify_backup

KINDS = ["verify", "test_restore", "restore", DRILL_TASK]


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


def _handle(ctx: Context, task: TaskRecord, say: Say, stopping: threading.Event) -> dict[str, Any]:
    return run_task(ctx, task, say)


HANDLERS: dict[str, Handler] = {kind: _handle for kind in KINDS}


class Worker(loop.Worker):
    """`permafrost restore-worker`: the worker loop with the restore kinds only, one at a time."""

    def __init__(self, ctx: Context, say: Say, poll_seconds: float = 30.0) -> None:
        super().__init__(ctx, say, HANDLERS, title="restore worker", poll_seconds=poll_seconds)
