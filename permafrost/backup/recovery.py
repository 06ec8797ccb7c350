"""The recovery-time estimate and the backups a recovery would use (verified ones first).

Shared by `permafrost plan`, `permafrost recovery-time`, the monitor's /recovery-time and its
`permafrost_recovery_time_estimate_seconds` metric. Point-in-time recovery is estimated from the
newest successful PITR drill (restore/drills/): its download-and-unpack and WAL-replay rates,
applied to what a recovery now would download and replay.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC

from permafrost.backup.lookup import find_backups
from permafrost.catalog.records import BackupRecord, DrillRecord, DrillStatus
from permafrost.config.fleet import load_fleet
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


def database_for(ctx: Context, database: str | None, source: str | None = None) -> str:
    if database:
        return database
    configured = ctx.settings.source.databases
    if len(configured) == 1 and source is None:
        return configured[0]
    fleet = load_fleet(ctx.settings)
    names = sorted(
        {
            r.database
            for r in find_backups(ctx, status="completed")
            if fleet.owns(source, r.database)
        }
    )
    if len(names) == 1:
        return names[0]
    raise UsageError(
        f"which database? backups exist of {', '.join(names) or 'none'}: add --database NAME"
    )


def databases_with_backups(ctx: Context, source: str | None = None) -> list[str]:
    """Every database with a completed logical backup (of one fleet source, when given): what
    a whole-server recovery restores."""
    fleet = load_fleet(ctx.settings)
    names = sorted(
        {
            r.database
            for r in find_backups(ctx, status="completed")
            if r.kind == Kind.LOGICAL and fleet.owns(source, r.database)
        }
    )
    if not names:
        of = f" of source {source}" if source else ""
        raise BackupNotFound(
            f"no completed backup of any database{of}: take one with `permafrost backup`"
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


# --- point-in-time recovery: measured by the newest successful PITR drill ---------------------

ASSUMED_REPLAY_RATE = 16 * 1024 * 1024  # bytes of WAL/s, until a drill has measured it


@dataclass(frozen=True)
class PitrEstimate:
    """How long `pitr` would take now: the base backup it would download and the WAL it would
    replay, at the rates of the newest successful drill (else assumed ones)."""

    cluster: str
    base_id: str
    base_bytes: int
    wal_bytes: int
    unpack_rate: float  # bytes of base backup per second: download, unpack, pg_verifybackup
    replay_rate: float  # bytes of WAL per second, the server's start and promotion included
    drill: DrillRecord | None  # the drill that measured the rates; None: assumed

    @property
    def measured(self) -> bool:
        return self.drill is not None

    @property
    def seconds(self) -> float:
        return self.base_bytes / self.unpack_rate + self.wal_bytes / self.replay_rate

    def basis(self) -> str:
        if self.drill is None:
            return "assumed: no PITR drill has succeeded yet; run `permafrost drill`"
        return f"measured by the drill of {self.drill.started_at.astimezone(UTC):%Y-%m-%d}"

    def as_json(self) -> dict[str, object]:
        drill = self.drill
        return {
            "cluster": self.cluster,
            "base_backup_id": self.base_id,
            "base_bytes": self.base_bytes,
            "wal_bytes": self.wal_bytes,
            "estimate_seconds": round(self.seconds, 1),
            "unpack_bytes_per_second": round(self.unpack_rate),
            "replay_bytes_per_second": round(self.replay_rate),
            "measured": self.measured,
            "drill": drill_facts(drill) if drill else None,
        }


def drill_facts(drill: DrillRecord) -> dict[str, object]:
    """A drill's measured figures, for JSON (the CLI's and the monitor's)."""
    return {
        "started_at": drill.started_at.astimezone(UTC).isoformat(timespec="seconds"),
        "status": drill.status,
        "base_backup_id": drill.base_backup_id,
        "recovery_seconds": _rounded(drill.recovery_seconds),
        "fetch_seconds": _rounded(drill.fetch_seconds),
        "replay_seconds": _rounded(drill.replay_seconds),
        "rpo_seconds": _rounded(drill.rpo_seconds),
        "wal_bytes": drill.wal_bytes,
        "error": drill.error,
    }


def _rounded(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def drill_rates(drill: DrillRecord | None) -> tuple[float, float] | None:
    """(unpack, replay) bytes per second as a successful drill measured them."""
    if drill is None or not drill.fetch_seconds or not drill.replay_seconds:
        return None
    unpack = (drill.base_bytes or 0) / drill.fetch_seconds
    replay = (drill.wal_bytes or 0) / drill.replay_seconds
    return (unpack, replay) if unpack > 0 and replay > 0 else None


def pitr_estimate(
    ctx: Context, cluster: str, base_id: str, base_bytes: int, wal_bytes: int
) -> PitrEstimate:
    catalog = ctx.catalog_or_none("the PITR recovery time is an assumption, not a measurement")
    drill = catalog.newest_drill(cluster, DrillStatus.SUCCEEDED) if catalog else None
    rates = drill_rates(drill)
    if rates is None:
        drill, rates = None, (ASSUMED_RATE, ASSUMED_REPLAY_RATE)
    unpack, replay = rates
    return PitrEstimate(cluster, base_id, base_bytes, wal_bytes, unpack, replay, drill)
