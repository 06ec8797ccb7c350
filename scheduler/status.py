"""`permafrost status`: is a scheduler alive, which one leads, what runs next, how did it go."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from permafrost.backup.sources import fleet_databases
from permafrost.catalog.chains import newest_chains
from permafrost.catalog.heartbeats import Service
from permafrost.catalog.records import ChainStats
from permafrost.catalog.schedulers import collect
from permafrost.catalog.store import Catalog
from permafrost.config.fleet import Fleet, load_fleet
from permafrost.context import Context
from permafrost.text import human_bytes, one_line, print_json, table


def status(ctx: Context, args: argparse.Namespace) -> int:
    fleet = load_fleet(ctx.settings)
    names = fleet_databases(ctx.catalog(), fleet, ctx.settings.source, args.source)
    data = only_source(collect(ctx.catalog(), names, fleet.owner), fleet, args.source)
    chains = [c for c in newest_chains(ctx.catalog()) if fleet.owns(args.source, c.cluster)]
    if args.json:
        print_json({**data, "chains": [asdict(c) for c in chains]})
        return 0
    s = data["scheduler"]
    if s["stopped"] is not None and not s["alive"]:
        at = _utc(s["stopped"]["at"])
        print(f"scheduler: NOT RUNNING; {s['stopped']['instance']} stopped cleanly at {at}")
    elif s["leader"] is None:
        print("scheduler: NOT RUNNING (no scheduler has led in the last day)")
    elif s["alive"]:
        standbys = f"; {len(s['standbys'])} standby" if s["standbys"] else ""
        age = s["heartbeat_age_seconds"]
        print(f"scheduler: alive; leader {s['leader']}, last heartbeat {age:.0f} s ago{standbys}")
    else:
        print(
            f"scheduler: NOT RUNNING; the last leader ({s['leader']}) was last heard from "
            f"{s['heartbeat_age_seconds']:.0f} s ago"
        )
    if s["standbys"] and not s["alive"]:
        print(f"standby: {s['standbys'][0]['instance']} (takes over within a minute)")
    if s["running"]:
        print(f"running now: {', '.join(s['running'])}")
    for line in _services(data["services"]):
        print(line)
    if ctx.settings.schedules.backup_workers == "queue":
        print(workers_line(ctx.catalog(), ctx.settings.monitor.worker_max_silence))
    elif s["alive"] and s["wal_streams"]:
        print(f"WAL stream: {', '.join(s['wal_streams'])} on the leader {s['leader']}")
    rows, errors = [], []
    for db, jobs in data["databases"].items():
        for job, info in jobs.items():
            rows.append([db, job, *_cells(info)])
            errors += _error(f"{job} of {db}", info)
    for job_id, info in data["jobs"].items():
        rows.append(["-", job_id, *_cells(info)])
        errors += _error(job_id, info)
    if rows:
        print()
        print(table(["DATABASE", "JOB", "NEXT RUN", "LAST RUN", "RESULT"], rows))
    if chains:
        print()
        print(table(CHAIN_HEADERS, [_chain_cells(c) for c in chains]))
    if errors:
        print()  # whole, below the table: the root cause is at the end of the message
        print("\n".join(errors))
    if data["alerts"]:
        print()
        for alert in data["alerts"]:
            print(f"ALERT ({alert['severity']}): {one_line(alert['summary'], None)}")
    return 0


def workers_line(catalog: Catalog, silence: float) -> str:
    """BACKUP_WORKERS=queue: the queue's depth and which live worker streams WAL."""
    depth = catalog.queue_depth()
    beats = catalog.service_beats(Service.WORKER)
    streams = [
        f"{cluster} on {b['instance']}"
        for b in beats
        if b["stopped_at"] is None and b["age_seconds"] <= silence
        for cluster in (b["details"] or {}).get("wal_streams", [])
    ]
    held = f"; WAL stream: {', '.join(streams)}" if streams else ""
    return f"task queue: {depth['queued']} waiting, {depth['running']} running{held}"


def only_source(data: dict[str, Any], fleet: Fleet, source: str | None) -> dict[str, Any]:
    """The status of one source (`--source`): its databases, its cluster's jobs and the jobs
    of the whole repository (verify, retention, lifecycle), and the alerts that name it."""
    if source is None:
        return data
    chosen = fleet.source(source)
    data["databases"] = {d: j for d, j in data["databases"].items() if fleet.owns(source, d)}
    data["jobs"] = {
        i: j for i, j in data["jobs"].items() if ":" not in i or fleet.owns(source, i.split(":")[1])
    }
    mine = (f":{source}:", f":@{source}", *(f":{d}" for d in data["databases"]))
    if chosen.cluster:
        mine += (f":{chosen.cluster}",)
    data["alerts"] = [a for a in data["alerts"] if any(m in a["key"] for m in mine)]
    return data


CHAIN_HEADERS = ["CLUSTER", "CHAIN (FULL)", "INCREMENTALS", "NEWEST", "STORED", "CHANGED"]


def _chain_cells(chain: ChainStats) -> list[str]:
    """A cluster's newest chain of base backups: the full, how many incrementals, the bytes."""
    return [
        chain.cluster,
        chain.full_id,
        str(chain.incrementals),
        chain.newest_id,
        human_bytes(chain.stored_bytes),
        human_bytes(chain.changed_bytes),
    ]


def _error(what: str, info: dict[str, Any]) -> list[str]:
    last = info["last"]
    if last is None or not last["error"]:
        return []
    return [f"{what} {last['status']}: {one_line(last['error'], None)}"]


def _services(rows: list[dict[str, Any]]) -> list[str]:
    """The restore workers (alive, else the last one seen and how it ended) and the monitor
    that evaluated the alerts last."""
    workers = [r for r in rows if r["service"] == "worker"]
    alive = [
        f"{r['instance']} ({r['heartbeat_age_seconds']:.0f} s ago)" for r in workers if r["alive"]
    ]
    lines = []
    if alive:
        lines.append(f"restore workers: alive; {', '.join(alive)}")
    elif workers and workers[0]["stopped_at"]:
        last = workers[0]
        lines.append(
            f"restore workers: none running; {last['instance']} stopped cleanly at "
            f"{_utc(last['stopped_at'])}"
        )
    elif workers:
        last = workers[0]
        lines.append(
            f"restore workers: NOT RUNNING; {last['instance']} was last heard from "
            f"{last['heartbeat_age_seconds']:.0f} s ago"
        )
    monitor = next((r for r in rows if r["service"] == "monitor"), None)
    if monitor is not None:
        lines.append(
            f"monitor: alerts last evaluated by {monitor['instance']} "
            f"{monitor['heartbeat_age_seconds']:.0f} s ago"
        )
    return lines


def _cells(info: dict[str, Any]) -> list[str]:
    last = info["last"]
    next_run = _utc(info["next_run"]) if info["next_run"] else "-"
    if last is None:
        return [next_run, "never", "-"]
    result = last["status"] + (" (below)" if last["error"] else "")
    return [next_run, _utc(last["started_at"]), result]


def _utc(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
