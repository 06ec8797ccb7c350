"""The scheduler's state as the metadata store knows it: alive, leader, next runs, last runs.

Everything comes from the metadata store: the heartbeat rows the schedulers write every 30 s
(the leader's carries the next run of each job) and the newest job run of each job.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from permafrost.catalog.store import Catalog

ALIVE_SECONDS = 90  # three missed heartbeats


def collect(
    catalog: Catalog,
    databases: tuple[str, ...],
    owner: Callable[[str], str | None] = lambda name: None,
    shown: Collection[str] | None = None,
) -> dict[str, Any]:
    """The status as a dict (the monitor's /status reads the same); `owner` names the fleet
    source of a database (config/fleet.py), whose job (`backup:@SOURCE`) runs it next; with
    `shown`, only those databases' jobs (and the global ones) are read and worked out (the
    overview's `?source=`)."""
    beats = catalog.heartbeats()
    leader = next((b for b in beats if b["role"] == "leader"), None)
    stopped = next((b for b in beats if b["role"] == "stopped"), None)
    alive = leader is not None and leader["age_seconds"] < ALIVE_SECONDS
    next_runs: dict[str, str] = dict(leader["next_runs"]) if leader else {}
    wanted = None if shown is None else [*shown, *_running_databases(leader)]
    last: dict[tuple[str, str | None], dict[str, Any]] = {
        (r["job"], r["database"]): r for r in catalog.last_job_runs(wanted)
    }
    configured = set(databases)
    names = list(databases) + sorted(
        {
            db
            for (job, db) in last
            if db and db not in configured and job in ("backup", "compliance_backup")
        }
    )
    per_database = {}
    for db in names if shown is None else [n for n in names if n in shown]:
        source = owner(db)
        per_database[db] = {
            job: {
                "next_run": next_runs.get(f"{job}:{db}") or next_runs.get(f"{job}:@{source}"),
                "last": _run(last.get((job, db))),
                "source": source,
            }
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
            "wal_streams": (leader["details"] or {}).get("wal_streams", []) if leader else [],
            "running": _still_running(catalog, leader, last),
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
        "services": services(catalog),
        "databases": per_database,
        "jobs": jobs,
        "alerts": [
            {"key": a["key"], "severity": a["severity"], "summary": a["summary"]}
            for a in catalog.alerts(active=True)
        ],
    }


def _running_databases(leader: dict[str, Any] | None) -> list[str]:
    """The databases of the jobs the leader's heartbeat says are running (`backup:DB`)."""
    running = (leader["details"] or {}).get("running", []) if leader else []
    return [job.partition(":")[2] for job in running if not job.startswith("task:")]


def _still_running(
    catalog: Catalog,
    leader: dict[str, Any] | None,
    last: dict[tuple[str, str | None], dict[str, Any]],
) -> list[str]:
    """The leader's running jobs, less those the store already knows finished: its heartbeat
    is up to 30 s old, and a job that ended since must not show as running."""
    if leader is None:
        return []
    running = []
    for job_id in (leader["details"] or {}).get("running", []):
        kind, _, rest = job_id.partition(":")
        if kind == "task" and rest.isdigit():
            task = catalog.task(int(rest))
            ended = task.finished_at if task is not None else None
        else:
            run = last.get((kind, rest or None))
            ended = run["finished_at"] if run is not None else None
        # Ended after the beat that said running: that run is over. Ended before it: the beat
        # speaks of a newer run, not recorded yet.
        if ended is None or ended < leader["beat_at"]:
            running.append(job_id)
    return running


def services(catalog: Catalog) -> list[dict[str, Any]]:
    """Restore workers and monitors seen in the last week, from their heartbeats, newest first."""
    return [
        {
            "service": b["service"],
            "instance": b["instance"],
            "alive": b["stopped_at"] is None and b["age_seconds"] < ALIVE_SECONDS,
            "last_heartbeat": b["beat_at"].isoformat(),
            "heartbeat_age_seconds": round(b["age_seconds"], 1),
            "stopped_at": b["stopped_at"].isoformat() if b["stopped_at"] else None,
        }
        for b in catalog.service_beats()
    ]


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
