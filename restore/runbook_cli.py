"""`permafrost plan SCENARIO` and `permafrost recovery-time`."""

from __future__ import annotations

import argparse
import re

from permafrost.backup.recovery import (
    Estimate,
    PitrEstimate,
    database_for,
    databases_with_backups,
    estimate,
)
from permafrost.config.fleet import load_fleet
from permafrost.context import Context
from permafrost.errors import BackupNotFound, UsageError
from permafrost.text import human_bytes, plain_duration, print_json
from restore.runbook import SCENARIOS, pitr_now, render
from restore.window_cli import plan_window


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser("plan", help="print a recovery runbook with this deployment's facts")
    p.add_argument("scenario", choices=(*SCENARIOS, "window"))
    p.add_argument(
        "--database",
        help="the database to recover (default: the only one; for disaster, every database)",
    )
    p.add_argument("--source", help="only this source's databases (SOURCES_FILE)")
    p.add_argument("--workers", type=_workers, help="window: workers to simulate (default 1)")
    p.add_argument("--json", action="store_true", help="window: the forecast as JSON")
    p.set_defaults(handler=plan)

    p = commands.add_parser("recovery-time", help="how long restoring the newest backup takes")
    p.add_argument("--database", help="only this database (default: every database with backups)")
    p.add_argument("--source", help="only this source's databases (SOURCES_FILE)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=recovery_time)


def plan(ctx: Context, args: argparse.Namespace) -> int:
    if args.scenario == "window":
        return plan_window(ctx, args)
    if args.workers is not None or args.json:
        raise UsageError("--workers and --json go with `permafrost plan window`")
    if args.scenario == "disaster" and not args.database:
        # the server is lost: all of it comes back (all of the source's, with --source)
        databases = databases_with_backups(ctx, args.source)
    else:
        databases = [database_for(ctx, args.database, args.source)]
    print(render(ctx, args.scenario, databases))
    return 0


def recovery_time(ctx: Context, args: argparse.Namespace) -> int:
    if args.database:
        return _one(ctx, args.database, args.json)
    fleet = load_fleet(ctx.settings)
    # Each cluster of the fleet (of --source) that pitr --latest can recover now.
    pitrs = [p for p in (pitr_now(ctx, cluster=c) for c in fleet.clusters(args.source)) if p]
    estimates = [estimate(ctx, name) for name in _databases(ctx, bool(pitrs), args.source)]
    total = sum(e.seconds for e in estimates)
    if args.json:
        print_json(
            {
                "estimates": [e.as_json() for e in estimates],
                "total_seconds": round(total, 1),
                "pitr": pitrs[0].as_json() if pitrs else None,  # the first, as before fleets
                "pitrs": [p.as_json() for p in pitrs],
            }
        )
        return 0
    for est in estimates:
        print(_line(est))
    if len(estimates) > 1:
        print(f"all {len(estimates)} databases: about {plain_duration(total)}")
    for pitr in pitrs:
        print(_pitr_line(pitr))
    return 0


def _databases(ctx: Context, pitr: bool, source: str | None) -> list[str]:
    """Every database with logical backups; none, without an error, when pitr can recover."""
    try:
        return databases_with_backups(ctx, source)
    except BackupNotFound:
        if pitr:
            return []
        raise


def _pitr_line(est: PitrEstimate) -> str:
    return (
        f"cluster {est.cluster} (pitr --latest): about {plain_duration(est.seconds)} to recover "
        f"base backup {est.base_id} ({human_bytes(est.base_bytes)} at "
        f"{human_bytes(est.unpack_rate)}/s) and {human_bytes(est.wal_bytes)} of WAL (at "
        f"{human_bytes(est.replay_rate)}/s), {est.basis()}"
    )


def _one(ctx: Context, database: str, as_json: bool) -> int:
    est = estimate(ctx, database)
    if as_json:
        print_json(est.as_json())
    else:
        print(_line(est))
    return 0


def _line(est: Estimate) -> str:
    basis = f"measured by {est.samples} test restores" if est.measured else "assumed"
    return (
        f"{est.database}: about {plain_duration(est.seconds)} to restore backup "
        f"{est.backup_id} ({human_bytes(est.dump_bytes)} at "
        f"{human_bytes(est.bytes_per_second)}/s, {basis})"
    )


def _workers(text: str) -> int:
    if re.fullmatch(r"[0-9]{1,6}", text) is None or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers (1 or more)")
    return int(text)
