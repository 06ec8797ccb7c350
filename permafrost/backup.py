"""Taking a backup as a recorded job: the catalog learns of it, success or failure.

The dump itself is `permafrost.logical`; this wraps it in the bookkeeping an operator relies
on: a job run with its outcome, a catalog row that is `running`, then `completed` or `failed`
with its reason. If the metadata store is down, the backup still goes to the bucket (with a
warning), and the next backup or `permafrost catalog sync` catalogues it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from permafrost import layout
from permafrost.catalog.sync import sync_catalog
from permafrost.context import Context
from permafrost.errors import PermafrostError
from permafrost.logical import BackupRequest, dump_database
from permafrost.manifest import Manifest

log = logging.getLogger("permafrost")
LATER = (
    "the backup goes to the bucket and the next backup or `permafrost catalog sync` catalogues it"
)


def run_backup(
    ctx: Context, request: BackupRequest, on_progress: Callable[[int], None] | None = None
) -> Manifest:
    layout.check_name(request.database, "cluster" if request.kind == "base" else "database")
    layout.check_tier(request.tier)
    ctx.repository(create=True)  # a wrong key fails here, before anything is recorded or dumped
    job = "base_backup" if request.kind == "base" else "backup"
    run_id = ctx.record(lambda c: c.job_started(job, request.database, request.backup_id), LATER)
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
    try:
        if request.kind == "base":
            from permafrost.physical import base_backup

            manifest = base_backup(ctx, request, on_progress)
        else:
            manifest = dump_database(ctx, request, on_progress)
    except BaseException as exc:
        _record_failure(ctx, request.backup_id, run_id, exc)
        raise
    _record_success(ctx, manifest, run_id)
    return manifest


def _record_failure(ctx: Context, backup_id: str, run_id: int | None, exc: BaseException) -> None:
    reason = str(exc) if isinstance(exc, PermafrostError) else f"{type(exc).__name__}: {exc}"
    status = "aborted" if isinstance(exc, KeyboardInterrupt | SystemExit) else "failed"
    ctx.record(lambda c: c.backup_failed(backup_id, reason), LATER)
    if run_id is not None:
        ctx.record(lambda c: c.job_finished(run_id, status, reason), LATER)


def _record_success(ctx: Context, manifest: Manifest, run_id: int | None) -> None:
    repo = ctx.repository()
    key = layout.manifest_key(repo.prefix, manifest.tier, manifest.database, manifest.id)
    ctx.record(lambda c: c.upsert_manifest(manifest, key), LATER)
    details = {
        "size_bytes": manifest.stored_bytes,
        "dump_bytes": manifest.dump_bytes,
        "duration_seconds": manifest.duration_seconds,
    }
    if run_id is not None:
        ctx.record(lambda c: c.job_finished(run_id, "succeeded", None, details), LATER)
    # Catch up on backups taken while the metadata store was down.
    ctx.record(
        lambda c: sync_catalog(c, ctx.storage, repo.prefix, repo.keyring, only_missing=True), LATER
    )
