"""`permafrost verify` of a SQLite backup: the named checks, run and recorded.

Plain verify runs the four checks of the stored object; `--test-restore` restores the file into
a temporary file (RESTORE_TMPDIR) and runs all seven. Each is recorded as a verification
(`integrity` or `test_restore`) with every check's outcome in its details, like the
verifications of the other kinds; a failed check raises the error it found (exit 5; a key
problem exit 4, recorded as unverified, as for any backup).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from permafrost.backup.lookup import load_manifest
from permafrost.catalog.records import BackupRecord
from permafrost.context import Context
from permafrost.errors import PermafrostError
from permafrost.repo.manifest import Manifest
from restore.fetch import check_space, temp_dir
from restore.sqlite_checks import FULL, QUICK, Check, Report, check_file, fetch_checked
from restore.verify import blocking_setting, record_verification, refuse_unfinished

OnProgress = Callable[[int], None] | None


@dataclass(frozen=True)
class SqliteVerified:
    report: Report
    kind: str  # integrity or test_restore, as recorded
    dump_bytes: int
    seconds: float

    @property
    def bytes_per_second(self) -> float:
        return self.dump_bytes / max(self.seconds, 1e-3)


def verify_sqlite(
    ctx: Context, record: BackupRecord, *, full: bool, on_progress: OnProgress = None
) -> SqliteVerified:
    """Run the checks (all seven with full) and record them. A failed check is in the result's
    report (`.report.error`: the caller raises it once it has shown the report); an error that
    stopped the checks from running (a setting, the bucket) is raised here."""
    refuse_unfinished(record)
    kind = "test_restore" if full else "integrity"
    started, clock = datetime.now(UTC), time.monotonic()
    report = Report(record.id)
    try:
        manifest = load_manifest(ctx, record)
        _run(ctx, manifest, FULL if full else QUICK, report, on_progress)
    except PermafrostError as exc:  # it could not run (a setting, the bucket): no check failed
        _record(ctx, record.id, kind, started, report, exc)
        raise
    result = SqliteVerified(report, kind, manifest.dump_bytes, time.monotonic() - clock)
    _record(ctx, record.id, kind, started, report, report.error, result)
    return result


def _run(
    ctx: Context,
    manifest: Manifest,
    wanted: tuple[Check, ...],
    report: Report,
    on_progress: OnProgress,
) -> None:
    directory = temp_dir(ctx.settings.restore.tmpdir)
    check_space(directory, manifest)
    with tempfile.TemporaryDirectory(prefix="permafrost-verify-", dir=directory) as scratch:
        copy = Path(scratch) / "restored.db"
        repository, transfer = ctx.repository(), ctx.settings.storage
        if fetch_checked(repository, transfer, manifest, copy, report, on_progress):
            check_file(copy, manifest, wanted, report)
        report.skip_rest(wanted, "an earlier check failed")


def _record(
    ctx: Context,
    backup_id: str,
    kind: str,
    started: datetime,
    report: Report,
    error: PermafrostError | None,
    result: SqliteVerified | None = None,
) -> None:
    details: dict[str, object] = {"checks": report.as_json()}
    if result is not None:
        details |= {
            "dump_bytes": result.dump_bytes,
            "seconds": round(result.seconds, 3),
            "bytes_per_second": round(result.bytes_per_second),
        }
    setting = blocking_setting(error) if error is not None else None
    message = None if error is None else str(error)
    if setting is not None:
        message = f"could not verify: {error}"
    record_verification(ctx, backup_id, kind, started, message, details, setting)
