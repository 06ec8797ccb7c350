"""The scheduler's jobs: small idempotent functions, each recorded as a job run.

A job gets a fresh Context (its own metadata connection: jobs run on threads), does one thing,
and returns details for its job run. `Jobs.run` wraps it: the run is recorded (start, end,
status, error, details), a failure raises an alert and a later success resolves it, and an
exception ends the job, never the scheduler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from permafrost import layout
from permafrost.backup.job import Aborted, job_name, run_backup
from permafrost.backup.request import BackupRequest
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.errors import CheckFailed, PermafrostError
from permafrost.repo.manifest import Kind
from permafrost.retention import apply as cleanup

log = logging.getLogger("permafrost.scheduler")
Say = Callable[[str], None]


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job: its id in APScheduler, its job-run name and database."""

    id: str
    job: str
    database: str | None
    severity: str = "warning"


class Jobs:
    def __init__(
        self,
        settings: Settings,
        say: Say,
        abort: threading.Event,
        stopping: threading.Event | None = None,
    ) -> None:
        self.settings, self.say, self.abort = settings, say, abort
        self.stopping = stopping or threading.Event()  # no new work: do not start a backup

    # --- the wrapper ------------------------------------------------------------------------

    def run(self, spec: JobSpec, trigger: str = "schedule") -> None:
        """Run one job to its end, whatever happens in it."""
        if spec.job in ("backup", "compliance_backup", "base_backup"):
            self.backup(spec, trigger)
            return
        work = {
            "verify": self.verify,
            "retention": self.retention,
            "lifecycle": self.lifecycle,
            "lifecycle_apply": self.lifecycle_apply,
        }[spec.job]
        ctx = Context(self.settings)
        run_id = ctx.record(lambda c: c.job_started(spec.job, spec.database), "not recorded")
        try:
            details = work(ctx)
        except Exception as exc:
            error = _reason(exc)
            self.say(f"{spec.job} failed: {error}")
            if run_id is not None:
                ctx.record(lambda c: c.job_finished(run_id, "failed", error), "not recorded")
            self.alert(ctx, spec, error)
        else:
            self.say(f"{spec.job} finished: {_short(details)}")
            if run_id is not None:
                ctx.record(
                    lambda c: c.job_finished(run_id, "succeeded", None, details), "not recorded"
                )
            ctx.record(lambda c: c.resolve_alert(_alert_key(spec)), "not recorded")
        finally:
            ctx.close()

    def backup(self, spec: JobSpec, trigger: str) -> dict[str, Any]:
        assert spec.database is not None
        ctx = Context(self.settings)
        if spec.job == "base_backup":
            request = BackupRequest(
                database=spec.database, tier=layout.BASE_TIER, kind=Kind.BASE, trigger=trigger
            )
        else:
            tier = "compliance" if spec.job == "compliance_backup" else "standard"
            request = BackupRequest(database=spec.database, tier=tier, trigger=trigger)
        self.say(f"{spec.job} of {spec.database} started ({request.backup_id})")
        from uuid import NAMESPACE_URL, uuid5

        from scheduler.pings import ping

        rid = str(uuid5(NAMESPACE_URL, request.backup_id))  # pairs this start with its end
        ping(self.settings, "start", run_id=rid)
        try:
            manifest = run_backup(
                ctx, request, self._progress, say=self.say, cancelled=self.stopping.is_set
            )
        except (Exception, Aborted) as exc:
            error = _reason(exc)
            aborted = isinstance(exc, Aborted)
            self.say(f"{spec.job} of {spec.database} {'aborted' if aborted else 'failed'}: {error}")
            self._record_if_missing(ctx, request, error, aborted)
            outcome = "aborted" if aborted else "failed"
            ping(
                self.settings,
                "fail",
                f"{spec.job} of {spec.database} {outcome}: {error}",
                run_id=rid,
            )
            if not aborted:
                self.alert(ctx, spec, error)
            ctx.close()
            return {"error": error}
        self.say(
            f"{spec.job} of {spec.database} completed: {manifest.id}, "
            f"{manifest.stored_bytes} bytes stored in {manifest.duration_seconds:.1f} s"
        )
        ping(
            self.settings,
            "success",
            f"{spec.job} of {spec.database} completed: {manifest.id}",
            run_id=rid,
        )
        ctx.record(lambda c: c.resolve_alert(_alert_key(spec)), "not recorded")
        ctx.close()
        return {"backup_id": manifest.id}

    def _progress(self, _: int) -> None:
        if self.abort.is_set():
            raise Aborted(
                "the scheduler is stopping and its grace period (STOP_GRACE_PERIOD) ran out"
            )

    def _record_if_missing(
        self, ctx: Context, request: BackupRequest, error: str, aborted: bool
    ) -> None:
        """A backup that failed before run_backup recorded it (a wrong key) still gets a run."""

        def record(c: Any) -> None:
            if not any(r["backup_id"] == request.backup_id for r in c.job_runs(job_name(request))):
                run_id = c.job_started(job_name(request), request.database, request.backup_id)
                c.job_finished(run_id, "aborted" if aborted else "failed", error)

        ctx.record(record, "not recorded")

    def alert(self, ctx: Context, spec: JobSpec, error: str) -> None:
        what = f"{spec.job} of {spec.database}" if spec.database else spec.job
        ctx.record(
            lambda c: c.raise_alert(
                _alert_key(spec),
                spec.severity,
                f"{what} failed: {error}",
                {"job": spec.job, "database": spec.database, "error": error},
            ),
            "not recorded",
        )

    # --- the jobs ---------------------------------------------------------------------------

    def verify(self, ctx: Context) -> dict[str, Any]:
        """Queue a test restore of each database's newest backup and a check of the rest."""
        catalog = ctx.catalog()
        pending = catalog.pending_task_backups()
        test_restores = verifies = 0
        newest: dict[str, str] = {}
        for record in catalog.find(status="completed"):
            if record.kind == "logical" and record.database not in newest:
                newest[record.database] = record.id
                if record.id not in pending:
                    catalog.enqueue("test_restore", {"backup_id": record.id}, "scheduler")
                    test_restores += 1
                continue
            if record.verification_status is None and record.id not in pending:
                catalog.enqueue("verify", {"backup_id": record.id}, "scheduler")
                verifies += 1
        return {"test_restores_queued": test_restores, "verifications_queued": verifies}

    def retention(self, ctx: Context) -> dict[str, Any]:
        outcome = cleanup.run(
            ctx.settings,
            ctx.storage,
            ctx.repository(),
            ctx.catalog(),
            datetime.now(UTC),
            apply=True,
            say=self.say,
        )
        details: dict[str, Any] = dict(outcome.counts())
        details["orphans"] = len(outcome.orphans)
        details["wal_deleted"] = sum(len(w.delete) for w in outcome.wal)
        if outcome.errors:
            raise PermafrostError("; ".join(outcome.errors))
        return details

    def lifecycle(self, ctx: Context) -> dict[str, Any]:
        from permafrost.retention import lifecycle

        report = lifecycle.check(ctx.settings, ctx.storage, datetime.now(UTC))
        if not report.ok:
            raise CheckFailed(report.summary())
        return {"summary": report.summary()}

    def lifecycle_apply(self, ctx: Context) -> dict[str, Any]:
        from permafrost.retention import lifecycle

        result = lifecycle.apply(ctx.settings, ctx.storage)
        if not result.ok:
            raise CheckFailed(result.summary())
        return {"action": result.action, "summary": result.summary()}


def _alert_key(spec: JobSpec) -> str:
    return f"job_failed:{spec.job}:{spec.database or '-'}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PermafrostError | Aborted):
        return " ".join(str(exc).split())
    return f"{type(exc).__name__}: {exc}"


def _short(details: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in details.items()) or "done"
