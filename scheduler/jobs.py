"""The scheduler's jobs: small idempotent functions, each recorded as a job run.

A job gets a fresh Context (its own metadata connection: jobs run on threads), does one thing,
and returns details for its job run. `Jobs.run` wraps it: the run is recorded (start, end,
status, error, details), a failure raises an alert and a later success resolves it, and an
exception ends the job, never the scheduler.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from permafrost import layout
from permafrost.backup import sources
from permafrost.backup.job import job_name, run_backup
from permafrost.backup.request import BackupRequest, kind_of
from permafrost.catalog.drills import queue_drill
from permafrost.catalog.jobs import (
    BACKUP_JOBS,
    Aborted,
    JobName,
    RecordedRun,
    RunStatus,
    outcome_of,
)
from permafrost.config.fleet import Fleet, load_fleet
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.copies.run import DestinationResult, copy_to
from permafrost.errors import CheckFailed, IncrementalRefused, PermafrostError
from permafrost.logs import Say
from permafrost.repo.manifest import Kind
from permafrost.retention import apply as cleanup
from permafrost.retention import lifecycle
from permafrost.retention.copies import run_copies, settings_for
from permafrost.storage import open_storage
from permafrost.worker.queue import queue_backup
from scheduler import incremental
from scheduler.pings import ping

log = logging.getLogger("permafrost.scheduler")
UNRECORDED = "not recorded"  # what the warning says goes without a metadata store


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job: its id in APScheduler, its job-run name and database."""

    id: str
    job: JobName
    database: str | None
    severity: str = "warning"
    # A fleet source's name: with no database, the job backs up every database of the source
    # (listed at the run for `databases: all`); with one, that database of the source.
    source: str | None = None


class Running:
    """The jobs in progress, by id: shown in the heartbeat, waited for at shutdown."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def holding(self, job_id: str) -> Iterator[None]:
        with self._lock:
            self._ids.add(job_id)
        try:
            yield
        finally:
            with self._lock:
                self._ids.discard(job_id)

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._ids)

    def __bool__(self) -> bool:
        return bool(self._ids)


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
        self.fleet = load_fleet(settings)

    # --- the wrapper ------------------------------------------------------------------------

    def run(self, spec: JobSpec, trigger: str = "schedule") -> None:
        """Run one job to its end, whatever happens in it."""
        if spec.job in BACKUP_JOBS and spec.database is None and spec.source is not None:
            self.source_backups(spec, trigger)
            return
        if spec.job in BACKUP_JOBS:
            self.backup(spec, trigger)
            return
        work = {
            JobName.VERIFY: self.verify,
            JobName.RETENTION: self.retention,
            JobName.LIFECYCLE: self.lifecycle,
            JobName.LIFECYCLE_APPLY: self.lifecycle_apply,
            JobName.PITR_DRILL: lambda c: self.pitr_drill(c, spec.database),
        }[spec.job]
        ctx = Context(self.settings)
        run = RecordedRun.start(ctx, UNRECORDED, spec.job, spec.database)
        try:
            details = work(ctx)
        except Exception as exc:
            error = _reason(exc)
            self.say(
                f"{spec.job} failed: {error}",
                level=logging.ERROR,
                event="job_failed",
                job=str(spec.job),
                error=error,
            )
            run.ended_by(exc, error)
            self.alert(ctx, spec, error)
        else:
            self.say(
                f"{spec.job} finished: {_short(details)}",
                event="job_succeeded",
                job=str(spec.job),
                **_plain(details),
            )
            run.succeeded(details)
            ctx.record(lambda c: c.resolve_alert(_alert_key(spec)), UNRECORDED)
        finally:
            ctx.close()

    def backup(
        self, spec: JobSpec, trigger: str, description: str = "", tags: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Take one backup; its outcome as {"backup_id": ...} or {"error": ...}, never raised."""
        assert spec.database is not None
        ctx = Context(self.settings)
        request = replace(
            _request(spec, trigger, self.settings, self.fleet), description=description, tags=tags
        )
        fields: dict[str, Any] = {
            "job": str(spec.job),
            "database": spec.database,
            "backup_id": request.backup_id,
        }
        self.say(
            f"{spec.job} of {spec.database} started ({request.backup_id})",
            event="backup_started",
            **fields,
            trigger=trigger,
        )
        rid = str(uuid5(NAMESPACE_URL, request.backup_id))  # pairs this start with its end
        ping(self.settings, "start", run_id=rid)
        try:
            manifest = run_backup(
                ctx, request, self._progress, say=self.say, cancelled=self.stopping.is_set
            )
        except IncrementalRefused as exc:  # before anything was written: a full, or nothing
            ctx.close()
            ping(self.settings, "success", f"{spec.job} of {spec.database}: {exc}", run_id=rid)
            full = JobSpec(
                f"{JobName.BASE_BACKUP}:{spec.database}", JobName.BASE_BACKUP, spec.database
            )
            key = _alert_key(spec)
            return incremental.refused(self, spec, full=full, key=key, trigger=trigger, exc=exc)
        except Exception as exc:
            error, status = _reason(exc), outcome_of(exc)
            what = f"{spec.job} of {spec.database} {status}: {error}"
            level = logging.ERROR if status is RunStatus.FAILED else logging.WARNING
            self.say(
                what, level=level, event="backup_failed", **fields, status=str(status), error=error
            )
            self._record_if_missing(ctx, request, exc, error)
            ping(self.settings, "fail", what, run_id=rid)
            if status is RunStatus.FAILED:
                self.alert(ctx, spec, error)
            ctx.close()
            return {"error": error}
        self.say(
            f"{spec.job} of {spec.database} completed: {manifest.id}, "
            f"{manifest.stored_bytes} bytes stored in {manifest.duration_seconds:.1f} s",
            event="backup_succeeded",
            **fields,
            duration_s=round(manifest.duration_seconds, 3),
            bytes=manifest.stored_bytes,
            dump_bytes=manifest.dump_bytes,
            tier=manifest.tier,
        )
        ping(
            self.settings,
            "success",
            f"{spec.job} of {spec.database} completed: {manifest.id}",
            run_id=rid,
        )
        ctx.record(lambda c: c.resolve_alert(_alert_key(spec)), UNRECORDED)
        self.copy_backup(ctx, manifest.id, manifest.tier)
        ctx.close()
        return {"backup_id": manifest.id}

    def queue(self, spec: JobSpec, trigger: str) -> None:
        """A backup job with BACKUP_WORKERS=queue: queued for the workers, not run here (a
        fleet source's job: each of its databases, listed now, queued on its own)."""
        if spec.database is None and spec.source is not None:
            for name in self._listed(spec) or ():
                self.queue(JobSpec(f"{spec.job}:{name}", spec.job, name, "critical"), trigger)
            return
        assert spec.database is not None
        ctx = Context(self.settings)
        try:
            queued = queue_backup(
                ctx.catalog(), self.settings, spec.job, spec.database, "scheduler", trigger
            )
        except PermafrostError as exc:
            error = f"could not queue it: {_reason(exc)}"
            self.say(f"{spec.id} {error}", level=logging.ERROR, event="job_failed", job=spec.id)
            self.alert(ctx, spec, error)
            return
        finally:
            ctx.close()
        what = "already waiting in the queue as" if queued.already else "queued as"
        self.say(
            f"{spec.id} {what} task {queued.task_id} for the workers",
            event="backup_queued",
            job=str(spec.job),
            database=spec.database,
            task_id=queued.task_id,
            source=queued.source,
        )

    def source_backups(self, spec: JobSpec, trigger: str) -> list[dict[str, Any]]:
        """Every database of one fleet source, one after the other (one backup per source at a
        time), listed now for `databases: all`: a new database is backed up from this run on,
        and one gone is recorded missing for the database_gone alert."""
        names = self._listed(spec)
        if names is None:
            assert spec.source is not None
            return [{"source": spec.source, "error": "its databases could not be listed"}]
        outcomes = []
        for name in names:
            if self.stopping.is_set():
                break
            each = JobSpec(f"{spec.job}:{name}", spec.job, name, "critical", spec.source)
            outcomes.append({"database": name, **self.backup(each, trigger)})
        return outcomes

    def _listed(self, spec: JobSpec) -> tuple[str, ...] | None:
        """A fleet source's databases to back up now (None: its server did not answer, which
        alerts); a new one is said, a gone one recorded for the database_gone alert."""
        assert spec.source is not None
        source = self.fleet.source(spec.source)
        ctx = Context(self.settings)
        try:
            found = sources.listing(ctx, source)
        except Exception as exc:  # the server does not answer: every backup of it fails
            error = _reason(exc)
            self.say(
                f"{spec.id}: cannot list {source.name}'s databases: {error}",
                level=logging.ERROR,
                event="job_failed",
                job=str(spec.job),
                source=source.name,
                error=error,
            )
            self.alert(ctx, spec, error)
            ctx.close()
            return None
        ctx.record(lambda c: c.resolve_alert(_alert_key(spec)), UNRECORDED)
        ctx.close()
        for database in found.new:
            self.say(
                f"source {source.name}: new database {database}, backed up from now on",
                event="database_new",
                source=source.name,
                database=source.catalog_name(database),
            )
        return found.names

    def copy_backup(self, ctx: Context, backup_id: str, tier: str) -> None:
        """The backup to every destination that copies its tier. It is done whatever happens
        here: a destination that is down is recorded, and the `copy` job catches up."""
        for destination in ctx.settings.copies.destinations:
            if not destination.copies_tier(tier):
                continue
            try:
                record = ctx.catalog().get(backup_id)
                if record is not None:
                    copy_to(ctx, destination, [record], say=self.say)
            except Exception as exc:  # the backup stands; the copy waits for the `copy` job
                self.say(
                    f"copy of {backup_id} to {destination.name} failed: {_reason(exc)}",
                    level=logging.WARNING,
                    event="copy_failed",
                    backup_id=backup_id,
                    destination=destination.name,
                )

    def copy_pending(self) -> None:
        """Every minute: to each destination, its new WAL and any backup it lacks (after an
        outage: all it missed). A run is recorded only when something was copied or failed,
        not for the minutes with nothing to do."""
        ctx = Context(self.settings)
        try:
            results = [
                copy_to(ctx, d, None, wal=True, say=self.say)
                for d in self.settings.copies.destinations
            ]
            if any(r.copied or r.wal_segments or not r.ok for r in results):
                self._record_copies(ctx, results)
        except Exception as exc:  # an exception ends the job, never the scheduler
            self.say(f"copy failed: {_reason(exc)}", level=logging.WARNING, event="copy_failed")
        finally:
            ctx.close()

    def _record_copies(self, ctx: Context, results: list[DestinationResult]) -> None:
        run = RecordedRun.start(ctx, UNRECORDED, JobName.COPY, None)
        details: dict[str, Any] = {
            r.name: {
                "copied": r.copied,
                "wal_files": r.wal_segments,
                "failed": r.failed,
                "error": r.error,
            }
            for r in results
        }
        problems = [
            f"{r.name}: {r.error or next(iter(r.failed.values()))}" for r in results if not r.ok
        ]
        if problems:
            error = "; ".join(problems)
            run.ended_by(PermafrostError(error), error)
        else:
            run.succeeded(details)

    def _progress(self, _: int) -> None:
        if self.abort.is_set():
            raise Aborted(
                "the scheduler is stopping and its grace period (STOP_GRACE_PERIOD) ran out"
            )

    def _record_if_missing(
        self, ctx: Context, request: BackupRequest, exc: Exception, error: str
    ) -> None:
        """A backup that failed before run_backup recorded it (a wrong key) still gets a run."""
        job = job_name(request)
        runs = ctx.record(lambda c: c.job_runs(job), UNRECORDED)
        if runs is not None and not any(r["backup_id"] == request.backup_id for r in runs):
            RecordedRun.start(ctx, UNRECORDED, job, request.database, request.backup_id).ended_by(
                exc, error
            )

    def alert(self, ctx: Context, spec: JobSpec, error: str) -> None:
        what = f"{spec.job} of {spec.database}" if spec.database else spec.job
        if spec.source is not None and spec.database is None:
            what = f"{spec.job} of source {spec.source}"
        elif spec.source is not None:
            what = f"{what} (source {spec.source})"
        details = {"job": spec.job, "database": spec.database, "error": error}
        if spec.source is not None:
            details["source"] = spec.source
        ctx.record(
            lambda c: c.raise_alert(
                _alert_key(spec), spec.severity, f"{what} failed: {error}", details
            ),
            UNRECORDED,
        )

    # --- the jobs ---------------------------------------------------------------------------

    def verify(self, ctx: Context) -> dict[str, Any]:
        """Queue a test restore of each database's newest backup and of each cluster's newest
        base backup (full or incremental: its chain is restored), and a check of the rest."""
        catalog = ctx.catalog()
        pending = catalog.pending_task_backups()
        test_restores = verifies = 0
        newest: dict[tuple[str, str], str] = {}
        for record in catalog.find(status="completed"):
            newest_key = (record.kind, record.database)
            if record.kind in (Kind.LOGICAL, Kind.SQLITE, Kind.BASE) and newest_key not in newest:
                newest[newest_key] = record.id
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
        errors = list(outcome.errors)
        for copy in run_copies(ctx.settings, ctx.repository(), datetime.now(UTC), apply=True):
            if copy.outcome is not None:
                details[f"copy {copy.destination}"] = copy.outcome.counts()
                errors += [f"copy {copy.destination}: {e}" for e in copy.outcome.errors]
            if copy.error:
                errors.append(f"copy {copy.destination}: {copy.error}")
        if errors:
            raise PermafrostError("; ".join(errors))
        return details

    def lifecycle(self, ctx: Context) -> dict[str, Any]:
        report = lifecycle.check(ctx.settings, ctx.storage, datetime.now(UTC))
        if not report.ok:
            raise CheckFailed(report.summary())
        details = {"summary": report.summary()}
        for destination in ctx.settings.copies.destinations:  # each copy's own rules
            own = settings_for(ctx.settings, destination)
            each = lifecycle.check(own, open_storage(destination.storage), datetime.now(UTC))
            if not each.ok:
                raise CheckFailed(f"copy {destination.name}: {each.summary()}")
            details[f"copy {destination.name}"] = each.summary()
        return details

    def pitr_drill(self, ctx: Context, cluster: str | None = None) -> dict[str, Any]:
        """Queue a PITR drill of the cluster (its job's, else CLUSTER_NAME) for the restore
        worker (restore/drills/)."""
        return queue_drill(ctx.catalog(), cluster or ctx.settings.cluster_name, "scheduler")

    def lifecycle_apply(self, ctx: Context) -> dict[str, Any]:
        result = lifecycle.apply(ctx.settings, ctx.storage)
        if not result.ok:
            raise CheckFailed(result.summary())
        details = {"action": result.action, "summary": result.summary()}
        for destination in ctx.settings.copies.destinations:  # each copy's own rules
            own = settings_for(ctx.settings, destination)
            each = lifecycle.apply(own, open_storage(destination.storage))
            if not each.ok:
                raise CheckFailed(f"copy {destination.name}: {each.summary()}")
            details[f"copy {destination.name}"] = each.summary()
        return details


def _request(spec: JobSpec, trigger: str, settings: Settings, fleet: Fleet) -> BackupRequest:
    """What a backup job takes: its database, tier and kind follow from the job's name (and a
    SQLite file's name makes it a SQLite backup); a fleet source's server, from SOURCES_FILE."""
    assert spec.database is not None
    if spec.job in (JobName.BASE_BACKUP, JobName.INCREMENTAL_BACKUP):
        return BackupRequest(
            database=spec.database,
            tier=layout.BASE_TIER,
            kind=Kind.BASE,
            trigger=trigger,
            incremental=spec.job == JobName.INCREMENTAL_BACKUP,
            source=sources.server_for(fleet, spec.database, cluster=True),
        )
    tier = "compliance" if spec.job == JobName.COMPLIANCE_BACKUP else "standard"
    kind = kind_of(settings.source, spec.database)
    server = None if kind == Kind.SQLITE else sources.server_for(fleet, spec.database)
    return BackupRequest(
        database=spec.database, tier=tier, trigger=trigger, kind=kind, source=server
    )


def _alert_key(spec: JobSpec) -> str:
    if spec.database is None and spec.source is not None:
        return f"job_failed:{spec.job}:@{spec.source}"  # the source's listing
    return f"job_failed:{spec.job}:{spec.database or '-'}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PermafrostError | Aborted):
        return " ".join(str(exc).split())
    return f"{type(exc).__name__}: {exc}"


def _plain(details: dict[str, Any]) -> dict[str, Any]:
    """A job's details that fit a log field (numbers and text)."""
    return {k: v for k, v in details.items() if isinstance(v, int | float | str)}


def _short(details: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in details.items()) or "done"
