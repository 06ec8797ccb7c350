"""Taking a backup as a recorded job: the catalog learns of it, success or failure.

The dump itself is `permafrost.backup.logical`; this wraps it in the bookkeeping an operator relies
on: a job run with its outcome, a catalog row that is `running`, then `completed` or `failed`
with its reason. If the metadata store is down, the backup still goes to the bucket (with a
warning), and the next backup or `permafrost catalog sync` catalogues it.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from permafrost import layout
from permafrost.audit import actor
from permafrost.backup import globals as server_globals
from permafrost.backup import incremental, logical, physical
from permafrost.backup import sqlite as sqlite_backup
from permafrost.backup.destination import Beside, Destination
from permafrost.backup.request import BackupRequest
from permafrost.catalog.jobs import (
    BACKUP_LOCK,
    BASE_JOBS,
    Aborted,
    JobName,
    RecordedRun,
    backup_lock_name,
)
from permafrost.catalog.sync import sync_catalog
from permafrost.config.settings import SourceSettings
from permafrost.context import Context
from permafrost.errors import Busy, CatalogUnavailable, PermafrostError, SourceError, UsageError
from permafrost.postgres import tools as pgtools
from permafrost.repo.manifest import Kind, Manifest

if TYPE_CHECKING:
    from permafrost.catalog.store import Catalog

log = logging.getLogger("permafrost")
LATER = (
    "the backup goes to the bucket and the next backup or `permafrost catalog sync` catalogues it"
)


def run_backup(
    ctx: Context,
    request: BackupRequest,
    on_progress: Callable[[int], None] | None = None,
    *,
    wait: bool = True,
    say: Callable[[str], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Manifest:
    """Take one backup, recorded; one at a time per database (or cluster), across processes."""
    layout.check_name(request.database, "cluster" if request.kind == "base" else "database")
    if request.kind == Kind.SQLITE:
        _sqlite_path(ctx, request)  # an unconfigured name is refused before anything is written
    layout.check_tier(request.tier)
    program = _program_or_error(ctx, request)  # no program fits the server: nothing is written
    ctx.repository(create=True)  # a wrong key fails here, before anything is recorded or dumped
    locked = _lock(ctx, request, wait, say or log.warning, cancelled)
    try:
        if request.incremental and not isinstance(program, SourceError):
            # Refused (IncrementalRefused) before anything is recorded or written.
            source = request.source or ctx.settings.source
            with incremental.prepared(ctx, request.database, source) as ready:
                return _run(ctx, request, program, on_progress, ready)
        return _run(ctx, request, program, on_progress)
    finally:
        if locked is not None:
            with contextlib.suppress(PermafrostError):
                locked.unlock(BACKUP_LOCK, _lock_name(request))


def job_name(request: BackupRequest) -> JobName:
    """What the job run of this backup is called: backup, compliance_backup, base_backup or
    incremental_backup."""
    if request.kind == "base":
        return JobName.INCREMENTAL_BACKUP if request.incremental else JobName.BASE_BACKUP
    return JobName.COMPLIANCE_BACKUP if request.tier == "compliance" else JobName.BACKUP


def _lock_name(request: BackupRequest) -> str:
    return backup_lock_name(request.kind, request.database)


def _lock(
    ctx: Context,
    request: BackupRequest,
    wait: bool,
    say: Callable[[str], None],
    cancelled: Callable[[], bool],
) -> Catalog | None:
    """Hold the database's backup lock, waiting for (or refusing) a backup already running.

    Without the metadata store there is no lock to take: the backup goes ahead, as it would
    have without one (the store being down must not stop backups).
    """
    catalog = ctx.catalog_or_none(LATER)
    if catalog is None:
        return None
    name = _lock_name(request)
    what = "base backup of cluster" if request.kind == "base" else "backup of"
    try:
        if catalog.try_lock(BACKUP_LOCK, name):
            return catalog
        holder = _holder(catalog, request)
        if not wait:
            raise Busy(
                f"a {what} {request.database} is already running ({holder}); "
                "not waiting (--no-wait): try again when it has finished"
            )
        say(f"a {what} {request.database} is already running ({holder}); waiting for it to finish")
        while not catalog.try_lock(BACKUP_LOCK, name):
            if cancelled():
                raise Aborted(f"stopped while waiting for the running {what} {request.database}")
            time.sleep(1)
        return catalog
    except CatalogUnavailable as exc:
        log.warning("%s; %s", exc, LATER)
        return None


def _holder(catalog: Catalog, request: BackupRequest) -> str:
    job = job_name(request)
    jobs = [job, *BASE_JOBS] if request.kind == Kind.BASE else [job]  # one lock for both
    run = catalog.running_job([*jobs, JobName.BACKUP, JobName.COMPLIANCE_BACKUP], request.database)
    if run is None:
        return "started just now"
    details = run.get("details") or {}
    started = run["started_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    by = details.get("by", "someone")
    trigger = details.get("trigger", "manual")
    return f"{run.get('backup_id') or 'a backup'}, {trigger}, started {started} by {by}"


def _run(
    ctx: Context,
    request: BackupRequest,
    program: str | SourceError,
    on_progress: Callable[[int], None] | None,
    ready: incremental.Prepared | None = None,
) -> Manifest:
    details = {"trigger": request.trigger, "by": actor(), "tier": request.tier}
    if ready is not None:
        details["parent_id"] = ready.parent.id
    run = RecordedRun.start(
        ctx, LATER, job_name(request), request.database, request.backup_id, details
    )
    ctx.record(
        lambda c: c.backup_started(
            request.backup_id,
            request.database,
            request.kind,
            request.tier,
            datetime.now(UTC),
            request.description,
            list(request.tags),
        ),
        LATER,
    )
    warnings: list[str] = []
    try:
        manifest = _take(ctx, request, program, on_progress, warnings, ready)
    except BaseException as exc:
        _record_failure(ctx, request.backup_id, run, exc)
        raise
    _record_success(ctx, manifest, run, warnings)
    return manifest


def _take(
    ctx: Context,
    request: BackupRequest,
    program: str | SourceError,
    on_progress: Callable[[int], None] | None,
    warnings: list[str],
    ready: incremental.Prepared | None = None,
) -> Manifest:
    """The dump itself: from request.source (a safety backup's target) or the configured one."""
    if isinstance(program, SourceError):
        raise program  # the server was not reachable: a failure this run records
    source = request.source or ctx.settings.source
    destination = Destination.of(ctx)
    if request.kind == Kind.SQLITE:
        path = _sqlite_path(ctx, request)
        return sqlite_backup.backup(destination, path, request, on_progress)
    if request.kind == Kind.BASE and ready is not None:
        try:
            return physical.backup(
                destination, source, program, request, on_progress, ready.parent, ready.facts
            )
        except SourceError as exc:
            raise incremental.summaries_missing(exc, ready.parent.id) from None
    if request.kind == Kind.BASE:  # a base backup holds the globals already
        return physical.backup(destination, source, program, request, on_progress)
    destination = destination.storing_beside(lambda d, r: _globals(ctx, d, source, r, warnings))
    jobs = ctx.settings.logical
    return logical.dump(destination, source, program, request, on_progress, jobs)


def _program_or_error(ctx: Context, request: BackupRequest) -> str | SourceError:
    """pg_basebackup of exactly the cluster's major, or pg_dump of the server's major or newer,
    picked before the repository is made, so that a ToolMissing leaves the bucket untouched.
    An unreachable server is not refused here: the recorded run raises (and records) it."""
    source = request.source or ctx.settings.source
    base = request.kind == Kind.BASE
    if request.kind == Kind.SQLITE:
        return "sqlite3"  # the library linked into Python: nothing to pick
    try:
        major = pgtools.server_major(
            source, pgtools.cluster_database(source) if base else request.database
        )
    except SourceError as exc:
        return exc
    if request.incremental:  # before the program: a 13 server without 13's binaries included
        incremental.refuse_before_17(major)
    bin_dirs = ctx.settings.pg_bin_dirs
    if base:
        return pgtools.cluster_tool(bin_dirs, "pg_basebackup", major, "a base backup").path
    return pgtools.find_tool(bin_dirs, "pg_dump", major).path


def _sqlite_path(ctx: Context, request: BackupRequest) -> str:
    """The file a SQLite backup copies: the request's own (a safety backup), or the configured
    source of that name."""
    if request.path is not None:
        return request.path
    configured = ctx.settings.source.sqlite_source(request.database)
    if configured is None:
        raise UsageError(
            f"{request.database!r} is not a configured SQLite file (DATABASE_URL=sqlite:///..., "
            "SQLITE_DATABASES)"
        )
    return configured.path


def _globals(
    ctx: Context,
    destination: Destination,
    source: SourceSettings,
    request: BackupRequest,
    warnings: list[str],
) -> Beside:
    """The server's roles and tablespaces stored beside the dump; a warning (logged, and kept
    for the job run's details) when they cannot be."""
    try:
        stored = server_globals.take(
            destination,
            source,
            ctx.settings.pg_bin_dirs,
            request,
            ctx.settings.backup_role_passwords,
        )
    except (PermafrostError, OSError, subprocess.SubprocessError) as exc:
        warning = (
            f"the server's globals (roles, tablespaces) were not stored: "
            f"{server_globals.why_not(exc)}; the database backup goes on without them"
        )
        log.warning("backup %s of %s: %s", request.backup_id, request.database, warning)
        warnings.append(warning)
        return Beside()
    return Beside({"globals": stored.key}, stored.facts)


def _record_failure(ctx: Context, backup_id: str, run: RecordedRun, exc: BaseException) -> None:
    reason = str(exc) if isinstance(exc, PermafrostError) else f"{type(exc).__name__}: {exc}"
    ctx.record(lambda c: c.backup_failed(backup_id, reason), LATER)
    run.ended_by(exc, reason)


def _record_success(
    ctx: Context, manifest: Manifest, run: RecordedRun, warnings: list[str]
) -> None:
    repo = ctx.repository()
    key = layout.manifest_key(repo.prefix, manifest.tier, manifest.database, manifest.id)
    ctx.record(lambda c: c.upsert_manifest(manifest, key), LATER)
    run.succeeded(
        {
            "size_bytes": manifest.stored_bytes,
            "dump_bytes": manifest.dump_bytes,
            "duration_seconds": manifest.duration_seconds,
            "globals_stored": "globals" in manifest.objects,
            **_chain_details(manifest),
            **({"warnings": warnings} if warnings else {}),
        }
    )
    # Catch up on backups taken while the metadata store was down.
    ctx.record(
        lambda c: sync_catalog(c, ctx.storage, repo.prefix, repo.keyring, only_missing=True), LATER
    )


def _chain_details(manifest: Manifest) -> dict[str, object]:
    """A base backup's place in its chain, for its job run's details."""
    if manifest.kind != Kind.BASE:
        return {}
    return {
        "incremental": manifest.incremental,
        "parent_id": manifest.parent_id,
        "chain_full_id": manifest.chain_full_id,
        "changed_bytes": manifest.changed_bytes,
    }
