"""`permafrost drill`: one PITR drill now (or queued for the restore worker), and its report."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from permafrost import layout
from permafrost.audit import actor
from permafrost.catalog.drills import queue_drill
from permafrost.catalog.records import DrillRecord
from permafrost.config.fleet import chosen_cluster
from permafrost.context import Context
from permafrost.text import human_bytes, iso, plain_duration, print_json, when
from restore.drills.run import run_drill


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser(
        "drill",
        help="a PITR drill: recover the cluster to a recent moment in a scratch directory",
        description="Recover the cluster to the newest archived WAL minus PITR_DRILL_MARGIN in a "
        "scratch directory (removed afterwards), check the moment reached, and record the "
        "measured recovery time and recovery point, which `plan` and `recovery-time` then use.",
    )
    p.add_argument("--cluster", help="the cluster's name in the bucket (default: CLUSTER_NAME)")
    p.add_argument("--source", help="the cluster of this SOURCES_FILE source (its `cluster:`)")
    p.add_argument(
        "--queue", action="store_true", help="queue it for the restore worker and return"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=drill)


def say(line: str) -> None:
    print(f"- {line}", flush=True)


def drill(ctx: Context, args: argparse.Namespace) -> int:
    cluster = layout.check_name(chosen_cluster(ctx.settings, args.cluster, args.source), "cluster")
    if args.queue:
        queued = queue_drill(ctx.catalog(), cluster, actor())
        if args.json:
            print_json(queued)
        elif "skipped" in queued:
            print(f"not queued: no base backup of cluster {cluster} is catalogued yet")
        else:
            state = "queued" if queued["queued"] else "already queued or running"
            print(f"task {queued['task_id']}: drill {state}")
        return 0
    record = run_drill(ctx, cluster, "manual", (lambda _: None) if args.json else say)
    if args.json:
        print_json(drill_json(record))
    else:
        print("\n".join(report(record)))
    return 0


def report(d: DrillRecord) -> list[str]:
    target = f"to {_at(d.target_time)}" if d.target_time else "to the end of the archive"
    return [
        f"drill of cluster {d.cluster} succeeded: recovered {target} from base backup "
        f"{d.base_backup_id} in {plain_duration(d.recovery_seconds or 0)}",
        f"  download and unpack: {plain_duration(d.fetch_seconds or 0)} "
        f"({human_bytes(d.base_bytes or 0)})",
        f"  WAL replay: {plain_duration(d.replay_seconds or 0)} ({human_bytes(d.wal_bytes or 0)})",
        f"  reached: {_at(d.reached_at) if d.reached_at else 'the base backup'}"
        f" (last transaction replayed: {_at(d.last_replayed_at)})",
        f"  recovery point: {plain_duration(d.rpo_seconds or 0)} (the newest archived WAL, "
        f"{_at(d.newest_wal_at)}, before the drill began)",
    ]


def drill_json(d: DrillRecord) -> dict[str, Any]:
    return {
        "cluster": d.cluster,
        "status": str(d.status),
        "trigger": d.trigger,
        "started_at": iso(d.started_at),
        "base_backup_id": d.base_backup_id,
        "base_bytes": d.base_bytes,
        "target_time": iso(d.target_time),
        "reached_at": iso(d.reached_at),
        "last_replayed_at": iso(d.last_replayed_at),
        "newest_wal_at": iso(d.newest_wal_at),
        "fetch_seconds": _round(d.fetch_seconds),
        "replay_seconds": _round(d.replay_seconds),
        "recovery_seconds": _round(d.recovery_seconds),
        "rpo_seconds": _round(d.rpo_seconds),
        "wal_bytes": d.wal_bytes,
        "error": d.error,
    }


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _at(moment: datetime | None) -> str:
    return when(moment.astimezone(UTC) if moment else None)
