"""service_dead and task_stuck: the restore workers' heartbeats and the age of the task queue.

No false alarm: a worker never deployed has no heartbeat row and raises no service_dead; one
stopped cleanly (SIGTERM) marked its row stopped and raises none either. Workers that were seen
and all went silent for WORKER_MAX_SILENCE do. Whatever the workers do, a task still queued
TASK_MAX_WAIT after it was queued raises task_stuck, naming the tasks and since when: critical
when no worker is alive to take them, a warning when one is (it is busy, or cannot keep up) or
when they are `backup` tasks, which the scheduler takes (scheduler_dead covers a dead one).

With BACKUP_WORKERS=queue the workers take the backups too, so a queue with no worker alive
means no backups at all: queue_stalled pages (critical) as soon as a task has waited
WORKER_MAX_SILENCE with no worker alive, long before TASK_MAX_WAIT, and task_stuck counts
`backup` tasks as the workers'.

The monitor that evaluates also records its own heartbeat here (service `monitor`), so a
second monitor, or an operator, can see which one last evaluated and when.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from monitor.alerts.findings import Finding, Severity, summary
from monitor.alerts.run import Run
from permafrost.catalog.heartbeats import Service
from permafrost.text import iso, spoken_duration, when

WORKER_RUNBOOK = "permafrost status\ndocker compose up -d restore   # or: permafrost restore-worker"
SCHEDULER_KINDS = ("backup",)  # taken by the leading scheduler, not by a restore worker
SCHEDULER_TAKES = "backup tasks are taken by the leading scheduler: see permafrost status"
TASK_RUNBOOK = (
    "SELECT id, kind, payload, created_at FROM permafrost.tasks WHERE status = 'queued'\n"
    "docker compose up -d restore   # or: permafrost restore-worker"
)


def service_dead(run: Run) -> list[Finding]:
    """Restore workers that were beating and all fell silent (cleanly stopped ones excepted)."""
    run.catalog.service_beat(Service.MONITOR, f"{socket.gethostname()}:{os.getpid()}", {})
    limit = run.settings.monitor.worker_max_silence
    beats = run.catalog.service_beats(Service.WORKER)
    if not beats or any(b["age_seconds"] <= limit for b in beats):
        return []
    last = beats[0]
    if last["stopped_at"] is not None:
        return []  # the newest worker was stopped on purpose
    vanished = [b for b in beats if b["stopped_at"] is None]
    age = float(last["age_seconds"])
    facts = {
        "instance": last["instance"],
        "host": last["host"],
        "last_heartbeat": iso(last["beat_at"]),
        "age": spoken_duration(age),
        "workers": [b["instance"] for b in vanished],
    }
    text = (
        f"no restore worker has written a heartbeat for {spoken_duration(age)} (last: "
        f"{last['instance']}): queued verifications and test restores are not being run"
    )
    return [Finding("service_dead:worker", Severity.CRITICAL, summary(text), facts, WORKER_RUNBOOK)]


QUEUE_RUNBOOK = (
    "permafrost status\n"
    "docker compose up -d --scale worker=3   # or: permafrost worker (any machine)"
)


def queue_stalled(run: Run) -> list[Finding]:
    """BACKUP_WORKERS=queue: tasks waiting WORKER_MAX_SILENCE with no worker alive to take them."""
    if run.settings.schedules.backup_workers != "queue":
        return []  # the scheduler takes backups; task_stuck covers the restore kinds
    limit = run.settings.monitor.worker_max_silence
    waiting = run.catalog.queued_longer_than(limit)
    if not waiting or _workers_alive(run):
        return []
    oldest = waiting[0]
    named = ", ".join(_task(t) for t in waiting[:3])
    more = f" and {oldest['total'] - 3} more" if oldest["total"] > 3 else ""
    text = (
        f"the task queue is stalled: {oldest['total']} task(s) waiting, {named}{more}, the "
        f"oldest since {when(oldest['created_at'])}, and {_who(run, [])}"
    )
    facts = {
        "total": oldest["total"],
        "oldest_since": iso(oldest["created_at"]),
        "tasks": [{"id": t["id"], "kind": t["kind"]} for t in waiting],
    }
    return [Finding("queue_stalled", Severity.CRITICAL, summary(text), facts, QUEUE_RUNBOOK)]


def task_stuck(run: Run) -> list[Finding]:
    """Tasks queued longer than TASK_MAX_WAIT, the oldest named, with who could take them."""
    limit = run.settings.monitor.task_max_wait
    stuck = run.catalog.queued_longer_than(limit)
    if not stuck:
        return []
    alive = _workers_alive(run)
    oldest = stuck[0]
    named = ", ".join(_task(t) for t in stuck[:3])
    more = f" and {oldest['total'] - 3} more" if oldest["total"] > 3 else ""
    queued = run.settings.schedules.backup_workers == "queue"  # workers take backups too
    for_workers = queued or any(t["kind"] not in SCHEDULER_KINDS for t in stuck)
    who = _who(run, alive) if for_workers else SCHEDULER_TAKES
    text = (
        f"{oldest['total']} task(s) queued for over {spoken_duration(limit)}: {named}{more}, "
        f"the oldest since {when(oldest['created_at'])}; {who}"
    )
    facts: dict[str, Any] = {
        "tasks": [
            {
                "id": t["id"],
                "kind": t["kind"],
                "backup_id": t["backup_id"],
                "queued_at": iso(t["created_at"]),
            }
            for t in stuck
        ],
        "total": oldest["total"],
        "oldest_since": iso(oldest["created_at"]),
        "workers_alive": alive,
    }
    severity = Severity.CRITICAL if for_workers and not alive else Severity.WARNING
    return [Finding("task_stuck", severity, summary(text), facts, TASK_RUNBOOK)]


def _task(task: dict[str, Any]) -> str:
    subject = task["backup_id"] or task.get("database")
    target = f" of {subject}" if subject else ""
    return f"{task['id']} ({task['kind']}{target})"


def _workers_alive(run: Run) -> list[str]:
    limit = run.settings.monitor.worker_max_silence
    beats = run.catalog.service_beats(Service.WORKER)
    return [b["instance"] for b in beats if b["stopped_at"] is None and b["age_seconds"] <= limit]


def _who(run: Run, alive: list[str]) -> str:
    noun = "worker" if run.settings.schedules.backup_workers == "queue" else "restore worker"
    if alive:
        return f"{noun}(s) {', '.join(alive)} alive but not taking them"
    beats = run.catalog.service_beats(Service.WORKER)
    if not beats:
        return f"no {noun} has ever run"
    last = beats[0]
    if last["stopped_at"] is not None:
        return f"no {noun} is alive ({last['instance']} stopped at {when(last['stopped_at'])})"
    heard = when(last["beat_at"])
    return f"no {noun} is alive ({last['instance']} last heard from at {heard})"
