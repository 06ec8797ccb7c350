"""`permafrost status`: is a scheduler alive, which one leads, what runs next, how did it go.

Everything comes from the metadata store: the heartbeat rows the schedulers write every 30 s
(the leader's carries the next run of each job) and the newest job run of each job.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from permafrost.catalog.store import Catalog
from permafrost.context import Context
from permafrost.output import one_line, print_json, table

ALIVE_SECONDS = 90  # three missed heartbeats


def collect(catalog: Catalog, databases: tuple[str, ...]) -> dict[str, Any]:
    """The status as a dict (the monitor's /status reads the same)."""
    beats = catalog.heartbeats()
    leader = next((b for b in beats if b["role"] == "leader"), None)
    stopped = next((b for b in beats if b["role"] == "stopped"), None)
    alive = leader is not None and leader["age_seconds"] < ALIVE_SECONDS
    next_runs: dict[str, str] = dict(leader["next_runs"]) if leader else {}
    last: dict[tuple[str, str | None], dict[str, Any]] = {
        (r["job"], r["database"]): r for r in catalog.last_job_runs()
    }
    names = list(databases) + sorted(
        {db for (_, db) in last if db and db not in databases and _is_database_job(last, db)}
    )
    per_database = {}
    for db in names:
        per_database[db] = {
            job: {"next_run": next_runs.get(f"{job}:{db}"), "last": _run(last.get((job, db)))}
            for job in ("backup", "compliance_backup")
        }
    jobs = {}
    for job_id in sorted(set(next_runs) | {f"{j}:{d}" if d else j for (j, d) in last}):
        job, _, db = job_id.partition(":")
        if job in ("backup", "compliance_backup"):
            continue
        jobs[job_id] = {
            "next_run": next_runs.get(job_id),
            "last": _run(last.get((job, db or None))),
        }
    return {
        "scheduler": {
            "alive": alive,
            "leader": leader["instance"] if leader else None,
            "last_heartbeat": leader["beat_at"].isoformat() if leader else None,
            "heartbeat_age_seconds": round(leader["age_seconds"], 1) if leader else None,
            "timezone": (leader["details"] or {}).get("timezone") if leader else None,
            "running": (leader["details"] or {}).get("running", []) if leader else [],
            "stopped": (
                {"instance": stopped["instance"], "at": stopped["beat_at"].isoformat()}
                if stopped and (leader is None or stopped["beat_at"] > leader["beat_at"])
                else None
            ),
            "standbys": [
                {"instance": b["instance"], "heartbeat_age_seconds": round(b["age_seconds"], 1)}
                for b in beats
                if b["role"] == "standby" and b["age_seconds"] < ALIVE_SECONDS
            ],
        },
        "databases": per_database,
        "jobs": jobs,
        "alerts": [
            {"key": a["key"], "severity": a["severity"], "summary": a["summary"]}
            for a in catalog.alerts(active=True)
        ],
    }


def _is_database_job(last: dict[tuple[str, str | None], dict[str, Any]], db: str) -> bool:
    return any(d == db and j in ("backup", "compliance_backup") for (j, d) in last)


def _run(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "status": row["status"],
        "started_at": row["started_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "error": row["error"],
        "backup_id": row["backup_id"],
    }


def status(ctx: Context, args: argparse.Namespace) -> int:
    data = collect(ctx.catalog(), ctx.settings.source.databases)
    if args.json:
        print_json(data)
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
    rows = []
    for db, jobs in data["databases"].items():
        for job, info in jobs.items():
            rows.append([db, job, *_cells(info)])
    for job_id, info in data["jobs"].items():
        rows.append(["-", job_id, *_cells(info)])
    if rows:
        print()
        print(table(["DATABASE", "JOB", "NEXT RUN", "LAST RUN", "RESULT"], rows))
    if data["alerts"]:
        print()
        for alert in data["alerts"]:
            print(f"ALERT ({alert['severity']}): {one_line(alert['summary'], 120)}")
    return 0


def _cells(info: dict[str, Any]) -> list[str]:
    last = info["last"]
    next_run = _utc(info["next_run"]) if info["next_run"] else "-"
    if last is None:
        return [next_run, "never", "-"]
    result = last["status"]
    if last["error"]:
        result += ": " + one_line(last["error"], 60)
    return [next_run, _utc(last["started_at"]), result]


def _utc(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
