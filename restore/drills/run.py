"""A PITR drill: the cluster recovered to a recent moment in a scratch directory, and measured.

The target is the newest archived WAL minus PITR_DRILL_MARGIN, recovered from the base backup
pitr would choose for it (a chain member, on 17+), through pitr's own recovery
(restore/pitr/recover.py `recover_into`: the chain downloaded and checked, combined,
pg_verifybackup, a private server on a Unix socket replaying WAL through wal-fetch, all in a
scratch directory under RESTORE_TMPDIR). The drill then checks the moment it reached:
PostgreSQL stopped before the first transaction past the target, and the last transaction it
replayed is not past it; or, when the archive holds no transaction after the target, replay went
to the end of the archive. It records, once, in `drills`: the time to restore the chain, the
time to replay WAL, the WAL replayed, the recovery point (the drill's start minus the newest
archived WAL), the base backup, the outcome and the error. The scratch directory is always
removed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from permafrost.catalog.records import DrillRecord, DrillStatus
from permafrost.context import Context
from permafrost.errors import BackupNotFound, CheckFailed
from permafrost.text import one_line
from permafrost.wal import names as walnames
from restore.pitr import run as pitr
from restore.pitr.plan import PitrPlan, RecoveryTarget, plan_pitr
from restore.pitr.recover import recover_into

UNRECORDED = "this drill is not recorded"
_STOP_TIME = re.compile(r", time (.+)$")
_REDO_DONE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")


def run_drill(ctx: Context, cluster: str, trigger: str, say: pitr.Say) -> DrillRecord:
    """Recover, check, record; a failure is recorded, then raised. No base backup to recover
    (BackupNotFound, exit 3) is said, not recorded: there is nothing to drill yet."""
    drill = DrillRecord(cluster, DrillStatus.FAILED, datetime.now(UTC), trigger)
    clock = time.monotonic()
    try:
        plan = plan_drill(ctx, drill)
        say(f"drill: recover cluster {cluster} to {plan.target.describe()} in a scratch directory")
        done = recover_in_scratch(ctx, plan, say)
        drill.recovery_seconds = time.monotonic() - clock
        measure(drill, plan, done)
        check(drill, plan, done)
        drill.status = DrillStatus.SUCCEEDED
    except BackupNotFound:
        raise  # no base backup (of this system) yet: nothing to drill, no failed drill
    except Exception as exc:
        drill.error = one_line(str(exc) or type(exc).__name__, 2000)
        drill.recovery_seconds = drill.recovery_seconds or time.monotonic() - clock
        _record(ctx, drill)
        raise
    _record(ctx, drill)
    return drill


@dataclass
class ScratchRecovery:
    """What recovering into a scratch directory took and reached."""

    fetch_seconds: float  # the chain downloaded, checked, unpacked (combined), pg_verifybackup
    replay_seconds: float  # the recovery server's start to its promotion
    reached: pitr.Reached  # lsn: pg_current_wal_lsn() after promotion
    redo_done: str | None  # where replay ended, as PostgreSQL logged it
    last_replayed: datetime | None  # pg_last_xact_replay_timestamp() after promotion


def recover_in_scratch(ctx: Context, plan: PitrPlan, say: pitr.Say) -> ScratchRecovery:
    """pitr's own recovery (recover_into) into a scratch directory under RESTORE_TMPDIR, which
    it always removes, timed; the server is stopped when this returns."""
    started = time.monotonic()
    with recover_into(ctx, plan, None, say) as done:
        replayed = time.monotonic()
        with pitr.connected(done.server, [done.role]) as conn:
            row = conn.execute(  # type: ignore[attr-defined]
                "SELECT pg_last_xact_replay_timestamp()"
            ).fetchone()
        lines = list(done.server.lines)
    ends = [m.group(1) for line in lines if (m := _REDO_DONE.search(line))]
    return ScratchRecovery(
        done.restored_at - started,
        replayed - done.restored_at,
        done.reached,
        ends[-1] if ends else None,
        row[0],
    )


def plan_drill(ctx: Context, drill: DrillRecord) -> PitrPlan:
    """The recovery a drill runs: to the newest archived WAL minus the margin, or, when that is
    not past the newest base backup, to the end of the archive."""
    latest = plan_pitr(ctx, drill.cluster, RecoveryTarget("latest"))
    newest = latest.archive.newest(latest.base.timeline)
    newest_at = latest.archive.archived_at(newest) if newest else None
    drill.newest_wal_at = newest_at or latest.base.stop_time
    drill.rpo_seconds = max(0.0, (drill.started_at - drill.newest_wal_at).total_seconds())
    target = drill.newest_wal_at - timedelta(seconds=ctx.settings.restore.drill_margin)
    plan = latest
    if target > latest.base.stop_time:
        moment = RecoveryTarget("time", target.isoformat(), time=target)
        plan = plan_pitr(ctx, drill.cluster, moment)
        drill.target_time = target
    drill.base_backup_id, drill.base_bytes = plan.base.id, plan.chain.dump_bytes
    return plan


def measure(drill: DrillRecord, plan: PitrPlan, done: ScratchRecovery) -> None:
    drill.fetch_seconds, drill.replay_seconds = done.fetch_seconds, done.replay_seconds
    drill.last_replayed_at = done.last_replayed
    drill.reached_at = stop_time(done.reached) or done.last_replayed
    end = done.redo_done or done.reached.lsn
    drill.wal_bytes = max(0, walnames.parse_lsn(end) - plan.base.start_lsn) if end else None
    drill.details = {
        "target": plan.target.describe(),
        "stopped": done.reached.stopped_before,
        "redo_done_at": done.redo_done,
        "end_lsn": done.reached.lsn,
        "timeline": done.reached.timeline,
    }


def stop_time(reached: pitr.Reached) -> datetime | None:
    """The time of the transaction PostgreSQL stopped before (or after), from its log line."""
    match = _STOP_TIME.search(reached.stopped_before or "")
    if match is None:
        return None
    try:
        return datetime.fromisoformat(match.group(1).strip())
    except ValueError:
        return None


def check(drill: DrillRecord, plan: PitrPlan, done: ScratchRecovery) -> None:
    """The recovery reached its moment: stopped at the target, else replayed the whole archive."""
    target = drill.target_time
    if target is not None and done.last_replayed and done.last_replayed > target:
        raise CheckFailed(
            f"the drill replayed past its target {target.isoformat()}: the last transaction "
            f"replayed committed at {done.last_replayed.isoformat()}"
        )
    stopped = stop_time(done.reached)
    if target is not None and stopped is not None:
        if stopped < target:
            raise CheckFailed(
                f"recovery stopped at {stopped.isoformat()}, before the target {target.isoformat()}"
            )
        return  # the first transaction past the target was in the WAL: everything before it is
    _check_whole_archive(plan, done)


def _check_whole_archive(plan: PitrPlan, done: ScratchRecovery) -> None:
    newest = plan.archive.newest(plan.base.timeline)
    end = done.redo_done or done.reached.lsn
    if newest is None or end is None:
        return
    if walnames.parse_lsn(end) < newest.number * plan.base.segment_size:
        raise CheckFailed(
            f"recovery ended at {end}, before the newest archived WAL segment "
            f"{plan.archive.name(newest)}: the archive was not replayed to its end"
        )


def _record(ctx: Context, drill: DrillRecord) -> None:
    drill.finished_at = datetime.now(UTC)
    ctx.record(lambda c: c.record_drill(drill), UNRECORDED)
