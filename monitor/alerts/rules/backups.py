"""The rules on the backups themselves: failed, stale, an unusual size, a failed verification.

Each rule reads through `run.catalog` and hands each row to a pure function that says what is
wrong with it, if anything.
"""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

from monitor.alerts.findings import Finding, Severity, summary
from monitor.alerts.run import Run
from permafrost.text import human_bytes, iso, one_line, spoken_duration

SIZE_HISTORY = 7  # the previous backups whose median is "usual"
SIZE_MIN_HISTORY = 3  # fewer than this: no judgement
SIZE_LOW, SIZE_HIGH = 0.5, 2.0

Row = dict[str, Any]
FAILED = ("failed", "interrupted")  # an interrupted backup is a failed one, for the alerts


# --- backup_failed:{db} ----------------------------------------------------------------------


def backup_failed(run: Run) -> list[Finding]:
    """The newest backup of a database (per kind) failed or was interrupted (its process died),
    and no job alert says so already."""
    run.catalog.settle_interrupted()
    rows = run.catalog.newest_backup_outcomes()
    # A scheduled backup that failed has its alert already (job_failed:JOB:DB, raised by the
    # scheduler): one problem, one alert, one email.
    scheduled = set(run.catalog.active_alert_keys("job_failed:"))
    out = []
    for row in rows:
        if row["status"] not in FAILED or _job_alert_covers(row, scheduled):
            continue
        good = run.catalog.last_good_backup(row["database"], row["kind"])
        out.append(failed_backup_finding(row, good))
    return out


def _job_alert_covers(row: Row, scheduled: set[str]) -> bool:
    base = ("base_backup", "incremental_backup")
    jobs = base if row["kind"] == "base" else ("backup", "compliance_backup")
    return any(f"job_failed:{job}:{row['database']}" in scheduled for job in jobs)


def failed_backup_finding(row: Row, good: Row | None) -> Finding:
    """The finding for a failed newest backup; `good` is the newest completed one, if any."""
    name, kind = row["database"], row["kind"]
    logical = kind != "base"  # a database's (or a SQLite file's) own backup
    error = one_line(row["error"] or "no error recorded", 120)
    what = "backup" if logical else f"{kind} backup"
    runbook = f"permafrost list --database {name} --status {row['status']}\n" + (
        f"permafrost backup --database {name}"
        if logical
        else f"permafrost backup --kind base --cluster {name}"
    )
    return Finding(
        f"backup_failed:{name}" if logical else f"backup_failed:{name}:{kind}",
        Severity.CRITICAL,
        summary(f"the newest {what} of {name} failed: {error}"),
        {
            "database" if logical else "cluster": name,
            "kind": kind,
            "tier": row["tier"],
            "backup_id": row["id"],
            "started_at": iso(row["started_at"]),
            "error": one_line(row["error"] or "", 1000),
            "description": row["description"] or "",
            "last_successful_backup": good["id"] if good else None,
            "last_successful_at": iso(good["at"]) if good else None,
        },
        runbook,
    )


# --- backup_stale:{db} -----------------------------------------------------------------------


def backup_stale(run: Run) -> list[Finding]:
    """No successful backup of a database for MAX_BACKUP_AGE (or ever, since installation)."""
    limit = run.settings.monitor.max_backup_age
    known = {row["database"]: row for row in run.catalog.newest_logical_successes()}
    out = []
    for db in sorted(set(run.settings.source.backed_up) | set(known)):
        row = known.get(db)
        if row is None or row["newest"] is None:
            found = never_backed_up(db, limit, run.now, run.installed)
        else:
            found = backed_up_long_ago(db, limit, run.now, row)
        out.extend(found)
    return out


def never_backed_up(db: str, limit: int, now: datetime, installed: datetime) -> list[Finding]:
    waited = (now - installed).total_seconds()
    if waited <= limit:
        return []
    text = (
        f"no successful backup of {db} ever (the catalog was created {spoken_duration(waited)} ago)"
    )
    facts = {"newest_backup": None, "catalog_created_at": iso(installed)}
    return [_stale(db, limit, text, facts)]


def backed_up_long_ago(db: str, limit: int, now: datetime, row: Row) -> list[Finding]:
    age = (now - row["newest"]).total_seconds()
    if age <= limit:
        return []
    facts = {
        "newest_backup": row["newest_id"],
        "newest_backup_at": iso(row["newest"]),
        "age": spoken_duration(age),
        "age_seconds": int(age),
    }
    return [_stale(db, limit, f"no successful backup of {db} for {spoken_duration(age)}", facts)]


def _stale(db: str, limit: int, text: str, facts: dict[str, Any]) -> Finding:
    return Finding(
        f"backup_stale:{db}",
        Severity.CRITICAL,
        summary(text),
        {"database": db, "max_backup_age": spoken_duration(limit), **facts},
        f"permafrost status\npermafrost backup --database {db}",
    )


# --- verification_failed:{db} ----------------------------------------------------------------


def verification_failed(run: Run) -> list[Finding]:
    """The newest verification of a database's backups failed."""
    rows = run.catalog.newest_verifications()
    return [failed_verification_finding(row) for row in rows if row["status"] == "failed"]


def failed_verification_finding(row: Row) -> Finding:
    db, backup_id = row["database"], row["backup_id"]
    what = "test restore" if row["kind"] == "test_restore" else "verification"
    error = one_line(row["error"] or "no error recorded", 120)
    return Finding(
        f"verification_failed:{db}",
        Severity.WARNING,
        summary(f"the newest {what} of a backup of {db} failed: {error}"),
        {
            "database": db,
            "backup_id": backup_id,
            "kind": row["kind"],
            "finished_at": iso(row["finished_at"]),
            "error": one_line(row["error"] or "", 1000),
        },
        f"permafrost show {backup_id}\npermafrost verify {backup_id} --test-restore",
    )


# --- backup_size:{db} ------------------------------------------------------------------------


def backup_size(run: Run) -> list[Finding]:
    """The newest backup is under half or over twice the median of the ones before it."""
    by_db: dict[str, list[Row]] = {}
    for row in run.catalog.recent_logical_sizes(SIZE_HISTORY + 1):
        by_db.setdefault(row["database"], []).append(row)
    return [found for db, rows in by_db.items() for found in unusual_size(db, rows)]


def unusual_size(db: str, history: list[Row]) -> list[Finding]:
    """`history`: a database's newest sized backups, newest first."""
    newest, previous = history[0], history[1:]
    if newest["status"] != "completed" or len(previous) < SIZE_MIN_HISTORY:
        return []
    usual = statistics.median(row["size_bytes"] for row in previous)
    if usual <= 0:
        return []
    ratio = newest["size_bytes"] / usual
    if SIZE_LOW <= ratio <= SIZE_HIGH:
        return []
    direction = "smaller" if ratio < SIZE_LOW else "larger"
    text = (
        f"the newest backup of {db} is {human_bytes(newest['size_bytes'])}, "
        f"{ratio:.0%} of the usual {human_bytes(usual)}: much {direction} than "
        "the ones before it"
    )
    facts = {
        "database": db,
        "backup_id": newest["id"],
        "size_bytes": newest["size_bytes"],
        "median_bytes": int(usual),
        "ratio": round(ratio, 3),
        "compared_with": len(previous),
    }
    runbook = f"permafrost show {newest['id']}\npermafrost list --database {db} --limit 8"
    return [Finding(f"backup_size:{db}", Severity.WARNING, summary(text), facts, runbook)]


# --- verify_config:{SETTING} -----------------------------------------------------------------


def verification_blocked(run: Run) -> list[Finding]:
    """A verification could not run because a setting is wrong (the key, STORAGE_URL): a
    configuration problem, not a verdict on the backup, until a verification runs again."""
    return [blocked_verification_finding(row) for row in run.catalog.newest_unverifiable()]


def blocked_verification_finding(row: Row) -> Finding:
    setting, backup_id = row["setting"], row["backup_id"]
    error = one_line(row["error"] or "no reason recorded", 120)
    return Finding(
        f"verify_config:{setting}",
        Severity.WARNING,
        summary(f"backups cannot be verified: check {setting}: {error}"),
        {
            "setting": setting,
            "backup_id": backup_id,
            "database": row["database"],
            "kind": row["kind"],
            "finished_at": iso(row["finished_at"]),
            "error": one_line(row["error"] or "", 1000),
        },
        f"permafrost status\npermafrost verify {backup_id}",
    )
