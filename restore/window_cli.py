"""`permafrost plan window`: will tonight's backups fit in BACKUP_WINDOW?"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from permafrost.backup.forecast import Forecast, Run
from permafrost.backup.tonight import forecast_json, window_forecast
from permafrost.context import Context
from permafrost.text import plain_duration, print_json


def plan_window(ctx: Context, args: argparse.Namespace) -> int:
    result, opens = window_forecast(
        ctx.settings, ctx.catalog(), args.workers or 1, datetime.now(UTC), args.source
    )
    if args.json:
        print_json(forecast_json(result, opens))
    else:
        only = [f"source {args.source} only (its own backups, as if the workers were its own)"]
        print("\n".join((only if args.source else []) + describe(result, opens)))
    return 0


def describe(result: Forecast, opens: datetime) -> list[str]:
    """The forecast in plain lines: when, what misses, how many workers would fit it."""
    limits = result.limits
    closes = opens + timedelta(seconds=result.window_seconds)
    work = sum(run.end - run.start for run in result.runs)
    lines = [
        f"tonight's window: {_clock(opens)} to {_clock(closes)} ({opens:%a %d %b}), "
        f"{_count(limits.workers, 'worker')}, MAX_CONCURRENT={limits.per_worker}, "
        f"MAX_CONCURRENT_PER_SOURCE={limits.per_source}",
        f"{_count(len(result.runs), 'backup')}, {plain_duration(work)} of work "
        "(each the median of its last 7 completed backups)",
    ]
    lines += _outcome(result, opens, closes)
    lines += [_miss(run, opens) for run in result.misses]
    lines += _workers_line(result)
    if result.unmeasured:
        names = ", ".join(f"{i.source}/{i.database} ({i.kind})" for i in result.unmeasured)
        lines.append(f"never completed, so not counted: {names}")
    return lines


def _outcome(result: Forecast, opens: datetime, closes: datetime) -> list[str]:
    if not result.runs:
        return ["nothing to forecast: no backup tonight has completed before"]
    finish = opens + timedelta(seconds=result.finish)
    at = _clock(finish) if finish.date() == closes.date() else f"{finish:%H:%M on %a %d %b}"
    if result.fits:
        spare = plain_duration(result.window_seconds - result.finish)
        return [f"finishes at {at}, {spare} before the window closes"]
    late = plain_duration(result.finish - result.window_seconds)
    return [
        f"finishes at {at}, {late} after the window closes at {_clock(closes)}",
        f"{_count(len(result.misses), 'backup')} would miss the window:",
    ]


def _workers_line(result: Forecast) -> list[str]:
    if result.bottleneck is not None:
        source, seconds = result.bottleneck
        return [
            f"no number of workers fits: source {source}'s own backups take "
            f"{plain_duration(seconds)} at MAX_CONCURRENT_PER_SOURCE="
            f"{result.limits.per_source}, longer than the {plain_duration(result.window_seconds)} "
            "window"
        ]
    if result.workers_needed is None:
        return []
    verb = "would be enough" if result.fits else "would make it fit"
    return [f"{_count(result.workers_needed, 'worker')} {verb} (the fewest that do)"]


def _miss(run: Run, opens: datetime) -> str:
    start, end = (opens + timedelta(seconds=s) for s in (run.start, run.end))
    item = run.item
    return (
        f"  {item.source}/{item.database} ({item.kind}): "
        f"{_clock(start)} to {_clock(end)} on worker {run.worker}"
    )


def _clock(moment: datetime) -> str:
    return f"{moment:%H:%M}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
