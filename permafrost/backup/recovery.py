"""The recovery-time estimate and the backups a recovery would use (verified ones first).

Shared by `permafrost plan`, `permafrost recovery-time`, the monitor's /recovery-time and its
`permafrost_recovery_time_estimate_seconds` metric.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from permafrost.backup.lookup import find_backups
from permafrost.catalog.records import BackupRecord
from permafrost.context import Context
from permafrost.errors import BackupNotFound, UsageError
from permafrost.repo.manifest import Kind

ASSUMED_RATE = 20 * 1024 * 1024  # bytes/s, until a test restore has measured the real one


@dataclass(frozen=True)
class Estimate:
    database: str
    backup_id: str
    dump_bytes: int
    bytes_per_second: float
    measured: bool
    samples: int

    @property
    def seconds(self) -> float:
        return self.dump_bytes / self.bytes_per_second

    def as_json(self) -> dict[str, object]:
        return {
            "database": self.database,
            "backup_id": self.backup_id,
            "dump_bytes": self.dump_bytes,
            "estimate_seconds": round(self.seconds, 1),
            "bytes_per_second": round(self.bytes_per_second),
            "measured": self.measured,
            "samples": self.samples,
        }


def database_for(ctx: Context, database: str | None) -> str:
    if database:
        return database
    configured = ctx.settings.source.databases
    if len(configured) == 1:
        return configured[0]
    names = sorted({r.database for r in find_backups(ctx, status="completed")})
    if len(names) == 1:
        return names[0]
    raise UsageError(
        f"which database? backups exist of {', '.join(names) or 'none'}: add --database NAME"
    )


def databases_with_backups(ctx: Context) -> list[str]:
    """Every database with a completed logical backup: what a whole-server recovery restores."""
    names = sorted(
        {r.database for r in find_backups(ctx, status="completed") if r.kind == Kind.LOGICAL}
    )
    if not names:
        raise BackupNotFound(
            "no completed backup of any database: take one with `permafrost backup`"
        )
    return names


def usable_backups(ctx: Context, database: str, tier: str | None = None) -> list[BackupRecord]:
    """Completed backups: verified ones first, then those never verified, then those whose
    verification failed (never the first choice); each group newest first."""
    records = [
        r
        for r in find_backups(ctx, database=database, tier=tier, status="completed")
        if r.kind == Kind.LOGICAL  # a base backup of a cluster of the same name is not one
    ]
    if not records:
        where = f" {tier}" if tier else ""
        raise BackupNotFound(
            f"no completed{where} backup of {database}: take one with `permafrost backup`"
            + (f" --tier {tier}" if tier else "")
        )
    verified = [r for r in records if r.verification_status == "verified"]
    failed = [r for r in records if r.verification_status == "failed"]
    return verified + [r for r in records if r not in verified and r not in failed] + failed


def recovery_point(backups: list[BackupRecord]) -> BackupRecord | None:
    """The newest backup a recovery can trust: verified, else not (yet) failed; never a backup
    whose verification failed, however new."""
    for state in ("verified", None):
        trusted = [r for r in backups if r.verification_status == state]
        if trusted:
            return max(trusted, key=lambda r: r.started_at)
    return None


def estimate(ctx: Context, database: str, record: BackupRecord | None = None) -> Estimate:
    record = record or usable_backups(ctx, database)[0]
    catalog = ctx.catalog_or_none("the recovery time is an assumption, not a measurement")
    rates = catalog.restore_rates(database) or catalog.restore_rates(None) if catalog else []
    rate = statistics.median(rates) if rates else ASSUMED_RATE
    return Estimate(database, record.id, record.dump_bytes or 0, rate, bool(rates), len(rates))
