"""Verification of a stored backup: every byte read back and checked, then read by pg_restore.

It downloads the data object in parallel, checks its size and SHA-256 against the manifest and
every chunk's authentication tag, decompresses it, checks the dump's SHA-256, and streams the
dump into `pg_restore --list`, which must read its table of contents. The outcome is recorded
in the catalog either way.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from permafrost.backup.lookup import load_manifest
from permafrost.catalog.records import BackupRecord
from permafrost.config.settings import StorageSettings
from permafrost.context import Context
from permafrost.errors import (
    BackupNotFound,
    CatalogUnavailable,
    EncryptionKeyError,
    InsufficientSpace,
    IntegrityError,
    PermafrostError,
    SourceError,
    StorageError,
    TargetError,
    TargetExists,
    ToolMissing,
)
from permafrost.postgres import tools as pgtools
from permafrost.postgres.tarwatch import BACKUP_MANIFEST, TarWatcher
from permafrost.readfrom import Reader
from permafrost.repo.config import Repository
from permafrost.repo.integrity import check_data_object, check_hashes
from permafrost.repo.manifest import Kind, Manifest
from permafrost.repo.reader import read_back

# What a verification that could not run names as the setting to check: a configuration
# problem is not an integrity result, and must not mark a good backup as corrupt.
_SETTINGS: tuple[tuple[type[PermafrostError], str], ...] = (
    (EncryptionKeyError, "BACKUP_ENCRYPTION_KEY"),
    (StorageError, "STORAGE_URL"),  # no permafrost.json there, another bucket, unreachable
    (ToolMissing, "PG_BIN_DIR"),
    (InsufficientSpace, "RESTORE_TMPDIR"),
    (TargetError, "VERIFY_DATABASE_URL"),
    (TargetExists, "VERIFY_DATABASE_URL"),
    (SourceError, "VERIFY_DATABASE_URL"),
    (CatalogUnavailable, "METADATA_DATABASE_URL"),
)


def blocking_setting(exc: PermafrostError) -> str | None:
    """The setting to check when `exc` stopped a verification; None for an integrity result."""
    if isinstance(exc, IntegrityError):
        return None
    return next((name for kind, name in _SETTINGS if isinstance(exc, kind)), "configuration")


def record_verification(
    ctx: Context,
    backup_id: str,
    kind: str,
    started: datetime,
    error: str | None,
    details: dict[str, object],
    setting: str | None = None,
) -> None:
    """Record a verification's outcome in the catalog if it answers (warn otherwise)."""
    ctx.record(
        lambda c: c.record_verification(
            backup_id, kind, started, datetime.now(UTC), error, details, setting=setting
        ),
        f"the {kind} verification of {backup_id} is not recorded",
    )


def record_failure(
    ctx: Context, backup_id: str, kind: str, started: datetime, exc: PermafrostError
) -> None:
    """A verification that raised: failed if the backup is damaged, otherwise "could not
    verify" with the setting to check, and the backup's state left as it was."""
    setting = blocking_setting(exc)
    error = str(exc) if setting is None else f"could not verify: {exc}"
    record_verification(ctx, backup_id, kind, started, error, {}, setting)


def refuse_unfinished(record: BackupRecord) -> None:
    """A backup that never completed has nothing to verify: say so, record nothing."""
    if record.status == "running":
        raise BackupNotFound(f"backup {record.id} is still running: verify it once it completes")
    if record.status in ("failed", "interrupted"):
        how = "was interrupted" if record.status == "interrupted" else "failed"
        raise BackupNotFound(
            f"backup {record.id} never completed (it {how}: "
            f"{record.error or 'no reason recorded'}): there is nothing to verify"
        )


@dataclass(frozen=True)
class Verified:
    backup_id: str
    stored_bytes: int
    dump_bytes: int
    toc_entries: int
    seconds: float


def verify_backup(
    ctx: Context,
    record: BackupRecord,
    on_progress: Callable[[int], None] | None = None,
    reader: Reader | None = None,
) -> Verified:
    """Read the backup back from the primary (falling back to each copy: `reader`)."""
    refuse_unfinished(record)
    reader = reader or Reader(ctx)
    started, clock = datetime.now(UTC), time.monotonic()
    try:
        result = reader.read(lambda c: _verify(c, record, clock, on_progress))
    except PermafrostError as exc:
        record_failure(ctx, record.id, "integrity", started, exc)
        raise
    record_verification(
        ctx,
        record.id,
        "integrity",
        started,
        None,
        {
            "stored_bytes": result.stored_bytes,
            "dump_bytes": result.dump_bytes,
            "toc_entries": result.toc_entries,
            "seconds": round(result.seconds, 3),
            **reader.details(),
        },
    )
    return result


def _verify(
    ctx: Context, record: BackupRecord, clock: float, on_progress: Callable[[int], None] | None
) -> Verified:
    manifest = load_manifest(ctx, record)
    repo, transfer = ctx.repository(), ctx.settings.storage
    for name in [p.name for p in manifest.parts] or ["data"]:  # every object there, whole
        check_data_object(repo.storage, manifest.part(name) if manifest.parts else manifest)
    if manifest.kind == Kind.BASE:
        return _verify_base(repo, transfer, manifest, clock, on_progress)
    # it reads what pg_dump of tool_version wrote: that major or newer
    pg_restore = pgtools.find_tool(
        ctx.settings.pg_bin_dirs, "pg_restore", pgtools.major_of(manifest.tool_version)
    ).path
    if manifest.parts:
        return _verify_parts(repo, transfer, pg_restore, manifest, clock, on_progress)
    return _verify_dump(repo, transfer, pg_restore, manifest, clock, on_progress)


def _verify_parts(
    repo: Repository,
    transfer: StorageSettings,
    pg_restore: str,
    manifest: Manifest,
    clock: float,
    on_progress: Callable[[int], None] | None,
) -> Verified:
    """A backup dumped in parallel: each part checked and its table of contents read."""
    done = [
        _verify_dump(repo, transfer, pg_restore, manifest.part(p.name), clock, on_progress)
        for p in manifest.parts
    ]
    return Verified(
        manifest.id,
        sum(v.stored_bytes for v in done),
        manifest.dump_bytes,
        sum(v.toc_entries for v in done),
        time.monotonic() - clock,
    )


def _verify_dump(
    repo: Repository,
    transfer: StorageSettings,
    pg_restore: str,
    manifest: Manifest,
    clock: float,
    on_progress: Callable[[int], None] | None,
) -> Verified:
    """A logical backup: every byte checked, and the dump's table of contents read."""
    with tempfile.TemporaryFile() as listing, tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [pg_restore, "--list"], stdin=subprocess.PIPE, stdout=listing, stderr=errors
        )
        try:
            opened, dump_sha = read_back(repo, manifest, transfer, _Feed(proc).write, on_progress)
        finally:
            _finish(proc)
        check_hashes(manifest, opened.stored_sha256, dump_sha)
        entries = _toc_entries(proc.returncode, listing, errors, manifest.id)
    return Verified(
        manifest.id, opened.stored_bytes, manifest.dump_bytes, entries, time.monotonic() - clock
    )


def _verify_base(
    repo: Repository,
    transfer: StorageSettings,
    manifest: Manifest,
    clock: float,
    on_progress: Callable[[int], None] | None,
) -> Verified:
    """A base backup: every byte checked, and the tar read through to PostgreSQL's manifest."""
    watcher = TarWatcher(BACKUP_MANIFEST)
    opened, dump_sha = read_back(repo, manifest, transfer, watcher.feed, on_progress)
    check_hashes(manifest, opened.stored_sha256, dump_sha)
    expected = manifest.physical.get("backup_manifest_sha256")
    if not watcher.ended or watcher.kept is None:
        raise IntegrityError(f"base backup {manifest.id} is not a complete tar")
    if expected and hashlib.sha256(watcher.kept).hexdigest() != expected:
        raise IntegrityError(
            f"base backup {manifest.id}: backup_manifest differs from the one recorded"
        )
    return Verified(
        manifest.id,
        opened.stored_bytes,
        manifest.dump_bytes,
        watcher.members,
        time.monotonic() - clock,
    )


class _Feed:
    """Writes to pg_restore --list until it has read what it needs."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.sink: IO[bytes] | None = proc.stdin

    def write(self, chunk: bytes) -> None:
        if self.sink is not None:
            try:
                self.sink.write(chunk)
            except BrokenPipeError:
                self.sink = None  # pg_restore has read its table of contents; keep checking hashes


def _finish(proc: subprocess.Popen[bytes]) -> None:
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except BrokenPipeError:
        pass
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _toc_entries(
    returncode: int | None, listing: IO[bytes], errors: IO[bytes], backup_id: str
) -> int:
    listing.seek(0)
    errors.seek(0)
    if returncode != 0:
        message = errors.read().decode(errors="replace").strip().splitlines() or ["no output"]
        raise IntegrityError(
            f"pg_restore cannot read the dump of {backup_id}: "
            f"{message[-1].removeprefix('pg_restore: ')}"
        )
    lines = listing.read().decode(errors="replace").splitlines()
    return sum(1 for line in lines if line and not line.startswith(";"))
