"""Disaster-recovery runbooks filled with this deployment's facts.

`permafrost plan SCENARIO` names the backups to use (verified ones first), the exact commands
with their ids, the recovery time to expect (measured by recent test restores) and the recovery
point achieved now, then the checks to run afterwards. `permafrost recovery-time` is the
estimate alone.
"""

from __future__ import annotations

from datetime import UTC, datetime

from permafrost.backup.recovery import Estimate, estimate, usable_backups
from permafrost.catalog.records import BackupRecord
from permafrost.context import Context
from permafrost.errors import BackupNotFound
from permafrost.text import clock, human_bytes, when

SCENARIOS = ("corruption", "deletion", "disaster", "compliance")


def render(ctx: Context, scenario: str, database: str) -> str:
    backups = usable_backups(ctx, database)
    best = backups[0]
    est = estimate(ctx, database, best)
    lines = [f"Recovery plan: {scenario} of {database}", ""]
    lines += _facts(backups, est)
    lines += ["", "Steps:"] + [
        f"  {n}. {s}" for n, s in enumerate(_steps(ctx, scenario, database, best), start=1)
    ]
    lines += ["", "Afterwards:"] + [f"  - {c}" for c in _checks(database)]
    return "\n".join(lines)


def _facts(backups: list[BackupRecord], est: Estimate) -> list[str]:
    newest = max(backups, key=lambda r: r.started_at)
    age = datetime.now(UTC) - newest.started_at
    lines = ["Backups to use (verified first):"]
    for r in backups[:3]:
        state = r.verification_status or "not verified"
        lines.append(
            f"  {r.id}  {when(r.started_at)}  {human_bytes(r.size_bytes or 0)}  {r.tier}  {state}"
        )
    source = (
        f"measured by {est.samples} recent test restores"
        if est.measured
        else "assumed: no test restore has measured it yet; run "
        "`permafrost verify latest --test-restore`"
    )
    lines += [
        f"Estimated recovery time: {clock(est.seconds)} for "
        f"{human_bytes(est.dump_bytes)} at {human_bytes(est.bytes_per_second)}/s ({source})",
        f"Recovery point achieved now: {clock(age.total_seconds())} ago "
        f"(newest backup {newest.id}; without WAL archiving, changes since it are lost)",
    ]
    return lines


def _steps(ctx: Context, scenario: str, database: str, best: BackupRecord) -> list[str]:
    side = f"{database}_recovered"
    if scenario == "disaster":
        return [
            "provision a new PostgreSQL server and create the application's roles on it",
            f"permafrost restore {best.id} --target-db {database} "
            "--target-url postgresql://USER:PASSWORD@NEW-HOST:5432/postgres",
            "point the application at the new server (DB_HOST) and take a fresh backup: "
            "permafrost backup",
        ]
    if scenario == "compliance":
        oldest = usable_backups_or_none(ctx, database, "compliance")
        pick = oldest[0].id if oldest else best.id
        return [
            "list the compliance backups and pick the one for the date asked for: "
            f"permafrost list --database {database} --tier compliance",
            f"permafrost restore {pick} --target-db {database}_audit",
            f"permafrost show {pick}  (its manifest, hashes and row counts are the evidence)",
        ]
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


def usable_backups_or_none(ctx: Context, database: str, tier: str) -> list[BackupRecord]:
    try:
        return usable_backups(ctx, database, tier)
    except BackupNotFound:
        return []


def _checks(database: str) -> list[str]:
    return [
        "compare the row counts the restore printed with what the application expects",
        "run the application's smoke tests against the restored database",
        f"permafrost backup --database {database}  (a fresh backup of the recovered state)",
        "permafrost verify latest --test-restore",
    ]
