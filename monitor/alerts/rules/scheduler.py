"""scheduler_dead: no leader heartbeat for SCHEDULER_MAX_SILENCE (the dead-man's switch)."""

from __future__ import annotations

from typing import Any

from monitor.alerts.findings import Finding, Severity, summary
from monitor.alerts.run import Run
from permafrost.text import iso, spoken_duration

RUNBOOK = "permafrost status"


def scheduler_dead(run: Run) -> list[Finding]:
    """With no heartbeat ever written, it fires once this monitor has watched that long."""
    beats = run.catalog.heartbeats_newest_first()
    leading = [b for b in beats if b["role"] in ("leader", "stopped")]
    limit = run.settings.monitor.scheduler_max_silence
    if not leading:
        watched = (run.now - run.watching_since).total_seconds()
        return no_leader(beats, watched) if watched > limit else []
    age = (run.db_clock - leading[0]["beat_at"]).total_seconds()
    return silent_leader(leading[0], age) if age > limit else []


def no_leader(beats: list[dict[str, Any]], watched: float) -> list[Finding]:
    standbys = [b["instance"] for b in beats if b["role"] == "standby"]
    what = (
        f"only standby schedulers ({', '.join(standbys)}) and no leader"
        if standbys
        else "no scheduler has ever written a heartbeat"
    )
    return [
        Finding(
            "scheduler_dead",
            Severity.CRITICAL,
            summary(f"{what}: no backups are being scheduled"),
            {"last_heartbeat": None, "standbys": standbys, "watched": spoken_duration(watched)},
            RUNBOOK,
        )
    ]


def silent_leader(last: dict[str, Any], age: float) -> list[Finding]:
    """The leader (or the one that stopped) has been silent for `age` seconds."""
    facts = {
        "instance": last["instance"],
        "host": last["host"],
        "last_heartbeat": iso(last["beat_at"]),
        "age": spoken_duration(age),
        "age_seconds": int(age),
    }
    if last["role"] == "stopped":
        text = f"the scheduler stopped {spoken_duration(age)} ago: no backups are being scheduled"
    else:
        text = (
            f"the scheduler has not written a heartbeat for {spoken_duration(age)}: "
            "no backups are being scheduled"
        )
    return [Finding("scheduler_dead", Severity.CRITICAL, text, facts, RUNBOOK)]
