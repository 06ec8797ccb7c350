"""`permafrost plan SCENARIO` and `permafrost recovery-time`."""

from __future__ import annotations

import argparse

from permafrost.backup.recovery import database_for, estimate
from permafrost.context import Context
from permafrost.text import clock, human_bytes, print_json
from restore.runbook import SCENARIOS, render


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser("plan", help="print a recovery runbook with this deployment's facts")
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument("--database", help="the database to recover (default: the only one)")
    p.set_defaults(handler=plan)

    p = commands.add_parser("recovery-time", help="how long restoring the newest backup takes")
    p.add_argument("--database")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=recovery_time)


def plan(ctx: Context, args: argparse.Namespace) -> int:
    print(render(ctx, args.scenario, database_for(ctx, args.database)))
    return 0


def recovery_time(ctx: Context, args: argparse.Namespace) -> int:
    est = estimate(ctx, database_for(ctx, args.database))
    if args.json:
        print_json(est.as_json())
        return 0
    basis = f"measured by {est.samples} test restores" if est.measured else "assumed"
    print(
        f"{est.database}: about {clock(est.seconds)} to restore backup "
        f"{est.backup_id} ({human_bytes(est.dump_bytes)} at "
        f"{human_bytes(est.bytes_per_second)}/s, {basis})"
    )
    return 0
