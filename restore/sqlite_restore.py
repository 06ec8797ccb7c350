"""Restoring a SQLite backup to a file: beside the target, checked, then renamed into place.

1. The plan: the target (the file the backup was taken of, or --target-path), whether it
   exists, whether another process holds a write lock on it (refused unless --force), and the
   -wal, -shm and -journal files beside it.
2. The backup is downloaded into a temporary file in the target's own directory (so the final
   rename is atomic), through the four checks of the stored object, fsynced, and checked again
   as a database: integrity_check and the row counts against the manifest.
3. An existing target gets a safety backup first (a catalogued SQLite backup, tagged
   safety-backup, its id printed).
4. The old file's -wal, -shm and -journal are removed (SQLite would otherwise replay the old
   file's log into the new one; their committed content is in the safety backup), the file is
   renamed into place with the old file's permissions, and the directory is fsynced.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from permafrost import layout
from permafrost.audit import actor
from permafrost.backup.job import run_backup
from permafrost.backup.lookup import load_manifest
from permafrost.backup.request import BackupRequest
from permafrost.catalog.records import SAFETY_TAG, BackupRecord
from permafrost.context import Context
from permafrost.errors import Busy, InsufficientSpace, PermafrostError, UsageError
from permafrost.repo.manifest import Kind, Manifest
from permafrost.sqlite import checks
from permafrost.text import human_bytes
from restore.engine import Say
from restore.fetch import MARGIN
from restore.sqlite_checks import ON_RESTORE, Report, check_file, fetch_checked

LEFTOVERS = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class FilePlan:
    record: BackupRecord
    manifest: Manifest
    target: Path
    exists: bool
    locked: str | None  # why another process is writing to it, when one is
    force: bool
    safety_backup: bool
    leftovers: list[Path] = field(default_factory=list)

    @property
    def steps(self) -> list[str]:
        m, t = self.manifest, self.target
        steps = [
            f"download backup {m.id} ({human_bytes(m.stored_bytes)} stored, "
            f"{human_bytes(m.dump_bytes)} file) into a temporary file beside {t}",
            "check it: object present, checksum, decryption, decompression, integrity_check, "
            f"row counts of {len(m.row_counts)} tables against the manifest",
        ]
        if self.exists and self.safety_backup:
            steps.append(f"take a safety backup of {t} (online backup API, catalogued)")
        steps += [
            f"remove {p.name} (the old file's; SQLite would replay it)" for p in self.leftovers
        ]
        how = "replacing the old file" if self.exists else "a new file"
        steps.append(f"rename it into place as {t} ({how}) and fsync the directory")
        return steps


def plan_file_restore(
    ctx: Context, record: BackupRecord, target_path: str | None, *, force: bool, safety: bool
) -> FilePlan:
    """What a restore of this SQLite backup would do; nothing is changed."""
    manifest = load_manifest(ctx, record)
    target = Path(target_path or manifest.sqlite.get("path", ""))
    if not target.is_absolute():
        raise UsageError(f"--target-path must be an absolute path (got {str(target)!r})")
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent} is not a directory: the restored file goes there")
    if target.is_dir():
        raise UsageError(f"{target} is a directory; name the file to restore to")
    exists = target.exists()
    locked = checks.write_locked(target) if exists else None
    leftovers = [Path(f"{target}{s}") for s in LEFTOVERS if Path(f"{target}{s}").exists()]
    return FilePlan(record, manifest, target, exists, locked, force, safety, leftovers)


def refuse_locked(plan: FilePlan) -> None:
    """A file another process is writing to is not replaced unless --force: say who and why."""
    if plan.locked is None or plan.force:
        return
    holders = checks.holders(plan.target)
    who = f"; open in {', '.join(map(str, holders))}" if holders else ""
    raise Busy(
        f"refusing to replace {plan.target}: {plan.locked}{who}. Stop the application (or "
        "add --force to replace it anyway); nothing was changed"
    )


@dataclass(frozen=True)
class FileRestored:
    report: Report
    safety_backup_id: str | None
    seconds: float


def restore_file(ctx: Context, plan: FilePlan, say: Say) -> FileRestored:
    refuse_locked(plan)
    started, clock = datetime.now(UTC), time.monotonic()
    staged = plan.target.with_name(f".{plan.target.name}.permafrost-{plan.manifest.id}")
    report = Report(plan.manifest.id)
    safety = None
    try:
        _stage(ctx, plan, staged, report, say)
        safety = _safety_backup(ctx, plan, say)
        _put_in_place(plan, staged, say)
    except BaseException as exc:
        _audit(ctx, plan, started, exc)
        raise
    finally:
        staged.unlink(missing_ok=True)
    _audit(ctx, plan, started, None)
    return FileRestored(report, safety, time.monotonic() - clock)


def _stage(ctx: Context, plan: FilePlan, staged: Path, report: Report, say: Say) -> None:
    _check_space(plan)
    say(plan.steps[0])
    repository, transfer = ctx.repository(), ctx.settings.storage
    if fetch_checked(repository, transfer, plan.manifest, staged, report):
        check_file(staged, plan.manifest, ON_RESTORE, report)
    for outcome in report.outcomes:
        say(
            f"{outcome.check}: {outcome.status}"
            + (f" ({outcome.detail})" if outcome.detail else "")
        )
    _record(ctx, plan, report)
    if report.error is not None:
        raise report.error


def _check_space(plan: FilePlan) -> None:
    free = shutil.disk_usage(plan.target.parent).free
    needed = plan.manifest.dump_bytes + MARGIN
    if free < needed:
        raise InsufficientSpace(
            f"{plan.target.parent} has {human_bytes(free)} free, and restoring {plan.manifest.id} "
            f"there needs {human_bytes(needed)}: free some space"
        )


def _safety_backup(ctx: Context, plan: FilePlan, say: Say) -> str | None:
    if not (plan.exists and plan.safety_backup):
        return None
    say(f"take a safety backup of {plan.target}")
    name = _safety_name(ctx, plan)
    request = BackupRequest(
        database=name,
        kind=Kind.SQLITE,
        description=f"safety backup of {plan.target} before restoring {plan.manifest.id} over it",
        tags=(SAFETY_TAG,),
        path=str(plan.target),
    )
    manifest = run_backup(ctx.writer(), request)  # as of a moment: into the live repository
    say(
        f"safety backup {manifest.id} of {plan.target} taken "
        f"({human_bytes(manifest.stored_bytes)}); restore it with: permafrost restore "
        f"{manifest.id} --target-path {plan.target}"
    )
    return manifest.id


def _safety_name(ctx: Context, plan: FilePlan) -> str:
    """Whose safety backup it is: the configured file at the target, else the backup's own
    file, else the target's file name (when it is a usable name)."""
    for source in ctx.settings.source.sqlite:
        if Path(source.path) == plan.target:
            return source.name
    if str(plan.target) == plan.manifest.sqlite.get("path") or not layout.valid_name(
        plan.target.name
    ):
        return plan.manifest.database
    return plan.target.name


def _put_in_place(plan: FilePlan, staged: Path, say: Say) -> None:
    if plan.exists:
        staged.chmod(plan.target.stat().st_mode & 0o7777)
    for leftover in LEFTOVERS:
        path = Path(f"{plan.target}{leftover}")
        if path.exists():
            path.unlink()
            say(f"removed {path.name}")
    os.replace(staged, plan.target)
    directory = os.open(plan.target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    say(f"renamed into place as {plan.target}")


def _record(ctx: Context, plan: FilePlan, report: Report) -> None:
    now = datetime.now(UTC)
    error = None if report.error is None else str(report.error)
    details = {"target": str(plan.target), "checks": report.as_json()}
    ctx.record(
        lambda c: c.record_verification(plan.manifest.id, "restore", now, now, error, details),
        "the restore's checks are not recorded",
    )


def _audit(ctx: Context, plan: FilePlan, started: datetime, error: BaseException | None) -> None:
    result = "succeeded"
    if error is not None:
        result = str(error) if isinstance(error, PermafrostError) else type(error).__name__
    details = {
        "database": plan.manifest.database,
        "target": str(plan.target),
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "result": result,
        "forced": plan.force and plan.locked is not None,
    }
    ctx.record(
        lambda c: c.audit(actor(), "restore", plan.manifest.id, details),
        "this restore is not in the audit log",
    )
