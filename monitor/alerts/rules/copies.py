"""copy_lag:{destination}: a copy destination lags the primary by more than COPY_MAX_LAG (the
oldest backup it holds no verified copy of is older than that). It resolves when the copy
catches up (the scheduler's copies, or `permafrost copy --all-missing`)."""

from __future__ import annotations

from datetime import datetime

from monitor.alerts.findings import Finding, Severity, summary
from monitor.alerts.run import Run
from permafrost.catalog.copy_lag import CopyLag, copy_lags
from permafrost.text import iso, one_line, spoken_duration


def copy_lag(run: Run) -> list[Finding]:
    copies = run.settings.copies
    if not copies.destinations:
        return []
    lags = copy_lags(run.catalog, copies)
    return [
        lag_finding(row, run.settings.copies.max_lag, run.now)
        for row in lags
        if row.lag_seconds(run.now) > copies.max_lag
    ]


def lag_finding(row: CopyLag, max_lag: int, now: datetime) -> Finding:
    lag = row.lag_seconds(now)
    name = row.destination
    error = f"; its last error: {one_line(row.last_error, 100)}" if _failing(row) else ""
    return Finding(
        f"copy_lag:{name}",
        Severity.WARNING,
        summary(
            f"copy {name} lags the primary by {spoken_duration(lag)} (more than "
            f"COPY_MAX_LAG, {spoken_duration(max_lag)}): {row.missing} backups not copied" + error
        ),
        {
            "destination": name,
            "lag_seconds": round(lag),
            "max_lag_seconds": max_lag,
            "missing_backups": row.missing,
            "oldest_missing_backup_id": row.oldest_missing_id,
            "oldest_missing_at": iso(row.oldest_missing_at),
            "newest_copied_backup_id": row.newest_id,
            "newest_copy_verified_at": iso(row.newest_verified_at),
            "last_error": one_line(row.last_error or "", 1000) if _failing(row) else None,
        },
        f"permafrost copy --all-missing --to {name}\npermafrost list",
    )


def _failing(row: CopyLag) -> bool:
    if row.last_error is None or row.last_error_at is None:
        return False
    return row.last_success_at is None or row.last_error_at >= row.last_success_at
