"""Disaster-recovery runbooks filled with this deployment's facts.

`permafrost plan SCENARIO` names the backups to use (verified ones first, never one whose
verification failed while another exists), the exact commands with their ids, the recovery time to
expect (measured by recent test restores) and the recovery point achieved now, then the checks to
run afterwards. A disaster is the loss of the server: its plan covers every database with
backups, restores the server's roles first, and recovers with `pitr --latest` instead when a base
backup and the WAL archive reach further than the newest dump. `permafrost recovery-time` is the
estimate alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from permafrost.backup.recovery import (
    Estimate,
    PitrEstimate,
    estimate,
    pitr_estimate,
    recovery_point,
    usable_backups,
)
from permafrost.catalog.records import BackupRecord
from permafrost.config.fleet import load_fleet
from permafrost.context import Context
from permafrost.errors import BackupNotFound, PermafrostError
from permafrost.text import human_bytes, plain_duration, when
from restore.pitr.plan import PitrPlan, RecoveryTarget, plan_pitr

SCENARIOS = ("corruption", "deletion", "disaster", "compliance")
NEW_SERVER = "postgresql://USER:PASSWORD@NEW-HOST:5432/postgres"


@dataclass(frozen=True)
class Database:
    """One database's part of a plan: the backups to use, the one chosen, how long it takes."""

    name: str
    backups: list[BackupRecord]
    best: BackupRecord
    estimate: Estimate
    no_compliance: bool = False  # a compliance plan, and no compliance backup exists


def render(ctx: Context, scenario: str, databases: list[str]) -> str:
    parts = [_database(ctx, scenario, name) for name in databases]
    wal = _wal_recovery(ctx, _cluster_of(ctx, databases))
    names = ", ".join(databases)
    title = f"{names} (the whole server)" if scenario == "disaster" else names
    lines = [f"Recovery plan: {scenario} of {title}", ""]
    for part in parts:
        lines += _facts(part, len(parts) > 1)
    if len(parts) > 1:
        total = sum(p.estimate.seconds for p in parts)
        lines.append(
            f"Estimated recovery time of all {len(parts)} databases: {plain_duration(total)}"
        )
    if scenario == "disaster" and wal is not None:
        lines += pitr_lines(pitr_now(ctx, wal))
    lines.append(_recovery_point(scenario, parts, wal))
    steps = _steps(scenario, parts, wal)
    lines += ["", "Steps:"] + [f"  {n}. {s}" for n, s in enumerate(steps, start=1)]
    lines += ["", "Afterwards:"] + [f"  - {c}" for c in _checks(databases)]
    return "\n".join(lines)


def _database(ctx: Context, scenario: str, name: str) -> Database:
    if scenario == "compliance":
        try:
            backups = usable_backups(ctx, name, "compliance")
        except BackupNotFound:
            backups = usable_backups(ctx, name)
            return Database(name, backups, backups[0], estimate(ctx, name, backups[0]), True)
    else:
        backups = usable_backups(ctx, name)
    return Database(name, backups, backups[0], estimate(ctx, name, backups[0]))


def _facts(part: Database, several: bool) -> list[str]:
    est = part.estimate
    lines = [
        f"Backups of {part.name} to use (verified first):"
        if several
        else "Backups to use (verified first):"
    ]
    if part.no_compliance:
        lines.insert(
            0,
            f"No compliance backup of {part.name} exists: the monthly compliance backup has not "
            f"run yet. Take one now with `permafrost backup --database {part.name} --tier "
            "compliance`; until then only standard backups can answer, listed here:",
        )
    for r in part.backups[:3]:
        state = {"verified": "verified", "failed": "VERIFICATION FAILED"}.get(
            r.verification_status or "", "not verified"
        )
        lines.append(
            f"  {r.id}  {when(r.started_at)}  {human_bytes(r.size_bytes or 0)}  {r.tier}  {state}"
        )
    source = (
        f"measured by {est.samples} recent test restores"
        if est.measured
        else "assumed: no test restore has measured it yet; run "
        "`permafrost verify latest --test-restore`"
    )
    lines.append(
        f"Estimated recovery time{' of ' + part.name if several else ''}: "
        f"{plain_duration(est.seconds)} for {human_bytes(est.dump_bytes)} at "
        f"{human_bytes(est.bytes_per_second)}/s ({source})"
    )
    return lines


def _recovery_point(scenario: str, parts: list[Database], wal: PitrPlan | None) -> str:
    now = datetime.now(UTC)
    if scenario == "disaster" and wal is not None and wal.window.end is not None:
        age = plain_duration((now - wal.window.end).total_seconds())
        return (
            f"Recovery point achieved now: {age} ago (the WAL archive of cluster "
            f"{wal.cluster} reaches {when(wal.window.end)}, from "
            f"base backup {wal.base.id}: only changes after that are lost)"
        )
    points = [(p, recovery_point(p.backups)) for p in parts]
    untrusted = [p for p, point in points if point is None]
    if untrusted:
        return (
            f"Recovery point achieved now: none that is trusted: every backup of "
            f"{untrusted[0].name} failed its verification; take a new backup now"
        )
    part, point = min(points, key=lambda pair: pair[1].started_at if pair[1] else now)
    assert point is not None
    state = "" if point.verification_status == "verified" else ", not verified yet"
    whose = f" of {part.name}" if len(parts) > 1 else ""
    lost = (
        f"changes since it are lost unless recovered with `permafrost pitr --target-time`: the "
        f"WAL archive reaches {when(wal.window.end)}"
        if wal is not None and wal.window.end is not None
        else "without WAL archiving and a base backup, changes since it are lost"
    )
    return (
        f"Recovery point achieved now: {plain_duration((now - point.started_at).total_seconds())}"
        f" ago (newest trusted backup{whose} {point.id}{state}; {lost})"
    )


def _cluster_of(ctx: Context, databases: list[str]) -> str | None:
    """The cluster the databases live in: their SOURCES_FILE source's `cluster:` (None: it
    has none), else CLUSTER_NAME."""
    fleet = load_fleet(ctx.settings)
    source = fleet.source_of(databases[0]) if fleet.from_file and databases else None
    return source.cluster if source is not None else ctx.settings.cluster_name


def _wal_recovery(ctx: Context, cluster: str | None) -> PitrPlan | None:
    """What `pitr --latest` of the cluster would recover now, when a base backup and archived
    WAL exist."""
    if cluster is None:
        return None
    try:
        plan = plan_pitr(ctx, cluster, RecoveryTarget("latest"))
    except PermafrostError:
        return None  # no base backup, a hole in the archive, an unreadable bucket: not PITR
    return plan if plan.window.end is not None else None


def pitr_now(ctx: Context, wal: PitrPlan | None = None, cluster: str = "") -> PitrEstimate | None:
    """How long `pitr --latest` of the cluster (default CLUSTER_NAME) would take now, or None
    when it cannot run (no base backup, no archived WAL after it)."""
    wal = wal or _wal_recovery(ctx, cluster or ctx.settings.cluster_name)
    if wal is None or wal.window.end_segment is None:
        return None
    end = (wal.window.end_segment.number + 1) * wal.base.segment_size
    wal_bytes = max(0, end - wal.base.start_lsn)
    # What pitr downloads and unpacks: the base backup's whole chain (a full: itself).
    return pitr_estimate(ctx, wal.cluster, wal.base.id, wal.chain.dump_bytes, wal_bytes)


def pitr_lines(est: PitrEstimate | None) -> list[str]:
    """The plan's point-in-time recovery time, and the drill that measured it."""
    if est is None:
        return []
    lines = [
        f"Estimated recovery time with pitr --latest (cluster {est.cluster}): "
        f"{plain_duration(est.seconds)} for base backup {est.base_id} "
        f"({human_bytes(est.base_bytes)} at {human_bytes(est.unpack_rate)}/s) and "
        f"{human_bytes(est.wal_bytes)} of WAL (at {human_bytes(est.replay_rate)}/s) "
        f"({est.basis()})"
    ]
    drill = est.drill
    if drill is not None:
        lines.append(
            f"  the drill of {when(drill.started_at)} recovered base backup "
            f"{drill.base_backup_id} in {plain_duration(drill.recovery_seconds or 0)} "
            f"(download and unpack {plain_duration(drill.fetch_seconds or 0)}, WAL replay "
            f"{plain_duration(drill.replay_seconds or 0)}); recovery point then: "
            f"{plain_duration(drill.rpo_seconds or 0)}"
        )
    return lines


def _steps(scenario: str, parts: list[Database], wal: PitrPlan | None) -> list[str]:
    if scenario == "disaster":
        return _disaster_steps(parts, wal)
    part = parts[0]
    database, best = part.name, part.best
    if scenario == "compliance":
        tier = "standard" if part.no_compliance else "compliance"
        return [
            "list the backups and pick the one for the date asked for: "
            f"permafrost list --database {database} --tier {tier}",
            f"permafrost restore {best.id} --target-db {database}_audit",
            f"permafrost show {best.id}  (its manifest, hashes and row counts are the evidence)",
        ]
    side = f"{database}_recovered"
    what = "damaged" if scenario == "corruption" else "deleted"
    return [
        f"find the newest backup taken before the rows were {what}: "
        f"permafrost list --database {database}",
        f"restore it beside production: permafrost restore {best.id} --target-db {side}",
        f"or only the affected tables: permafrost restore {best.id} --target-db {side} "
        "--table SCHEMA.TABLE",
        f"copy the good rows back from {side} into {database} (for example with "
        "INSERT ... SELECT through dblink or pg_dump -t | psql), then drop " + side,
    ]


def _disaster_steps(parts: list[Database], wal: PitrPlan | None) -> list[str]:
    steps = []
    if wal is not None:
        steps += [
            "provision a new server with the same PostgreSQL major version and an empty data "
            "directory",
            f"recover the whole server (roles included) from base backup {wal.base.id} and the "
            f"WAL archive: permafrost pitr --latest --target-dir /var/lib/postgresql/data",
            "if the WAL archive cannot be used, rebuild from the logical backups instead:",
        ]
    else:
        steps.append("provision a new PostgreSQL server")
    best = max((p.best for p in parts), key=lambda r: r.started_at)
    steps.append(
        "create the server's roles, memberships and tablespaces first: "
        f"permafrost restore --globals {best.id} --target-url {NEW_SERVER}"
    )
    steps += [
        f"permafrost restore {p.best.id} --target-db {p.name} --target-url {NEW_SERVER}"
        for p in parts
    ]
    steps.append(
        "point the application at the new server (DB_HOST) and take a fresh backup: "
        "permafrost backup"
    )
    return steps


def _checks(databases: list[str]) -> list[str]:
    backups = "; ".join(f"permafrost backup --database {d}" for d in databases)
    return [
        "compare the row counts the restore printed with what the application expects",
        "run the application's smoke tests against the restored database",
        f"{backups}  (a fresh backup of the recovered state)",
        "permafrost verify latest --test-restore",
    ]
