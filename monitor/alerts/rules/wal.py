"""The WAL archive's rules: wal_lag (nothing archived for WAL_MAX_LAG) and wal_gap (a segment
missing in the bucket, checked every 15 minutes)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from monitor.alerts.findings import Finding, Severity, summary
from monitor.alerts.run import Run
from permafrost.config.fleet import load_fleet
from permafrost.text import iso, one_line, spoken_duration
from permafrost.wal import archive as walarchive
from permafrost.wal import identity as walidentity
from permafrost.wal.archive import Report as WalReport

WAL_VERIFY_EVERY = timedelta(minutes=15)


def wal_lag(run: Run) -> list[Finding]:
    """The newest archived WAL of a cluster (each of the fleet's whose WAL is archived) is older
    than WAL_MAX_LAG (on the metadata server's clock)."""
    clusters = load_fleet(run.settings).wal_clusters()
    return [f for cluster, mode in clusters for f in _lag(run, cluster, mode)]


def _lag(run: Run, cluster: str, mode: str) -> list[Finding]:
    limit = run.settings.monitor.wal_max_lag
    row = run.catalog.wal_progress(cluster)
    if row is None:
        waited = (run.now - run.installed).total_seconds()
        return never_archived(cluster, limit, mode, waited)
    lag = (run.db_clock - row["last_archived_at"]).total_seconds()
    return archive_behind(cluster, limit, row, lag) if lag > limit else []


def never_archived(cluster: str, limit: int, mode: str, waited: float) -> list[Finding]:
    if waited <= limit:
        return []
    return [
        Finding(
            f"wal_lag:{cluster}",
            Severity.CRITICAL,
            summary(f"no WAL of cluster {cluster} has ever been archived (WAL_ARCHIVING={mode})"),
            {"cluster": cluster, "wal_max_lag": spoken_duration(limit), "last_segment": None},
            f"permafrost wal status --cluster {cluster}",
        )
    ]


def archive_behind(cluster: str, limit: int, row: dict[str, Any], lag: float) -> list[Finding]:
    """The archive is `lag` seconds behind; its newest error is said when it came after."""
    error = ""
    if (
        row["last_error"]
        and row["last_error_at"]
        and row["last_error_at"] > row["last_archived_at"]
    ):
        error = f"; last error: {one_line(row['last_error'], 80)}"
    runbook = (
        f"permafrost wal status --cluster {cluster}\npermafrost wal switch --cluster {cluster}"
    )
    if error and walidentity.is_mismatch(row["last_error"]):
        # The server was upgraded or replaced: every segment is refused until the archive is
        # reset, so the summary says so instead of a truncated line.
        error = (
            ": the server is another PostgreSQL system than the archive's (upgraded or "
            "replaced), and its WAL is refused until `permafrost wal reset`"
        )
        runbook = (
            f"permafrost wal reset --cluster {cluster}\n"
            f"permafrost wal reset --cluster {cluster} --apply\n"
            f"permafrost backup --kind base --cluster {cluster}"
        )
    return [
        Finding(
            f"wal_lag:{cluster}",
            Severity.CRITICAL,
            summary(
                f"the WAL archive of cluster {cluster} is {spoken_duration(lag)} behind{error}"
            ),
            {
                "cluster": cluster,
                "last_segment": row["last_segment"],
                "last_archived_at": iso(row["last_archived_at"]),
                "lag": spoken_duration(lag),
                "lag_seconds": int(lag),
                "wal_max_lag": spoken_duration(limit),
                "last_error": row["last_error"],
                "last_error_at": iso(row["last_error_at"]),
            },
            runbook,
        )
    ]


def wal_gap(run: Run) -> list[Finding]:
    """A cluster's archive in the bucket has a gap (read from the bucket, so cached for 15
    minutes)."""
    clusters = load_fleet(run.settings).wal_clusters()
    if not clusters:
        return []
    run.repository_checked()
    return [f for cluster, _ in clusters for f in _gap(run, cluster)]


def _gap(run: Run, cluster: str) -> list[Finding]:
    def compute() -> list[Finding]:
        return gap_findings(cluster, walarchive.verify(run.ctx.repository(), cluster))

    return run.cached(f"wal_gap:{cluster}", WAL_VERIFY_EVERY, compute)


def gap_findings(cluster: str, report: WalReport) -> list[Finding]:
    if not report.gaps:
        return []
    first = report.gaps[0]
    missing = sum(gap.count for gap in report.gaps)
    return [
        Finding(
            f"wal_gap:{cluster}",
            Severity.CRITICAL,
            summary(
                f"the WAL archive of cluster {cluster} has {len(report.gaps)} gap(s), "
                f"{missing} segment(s) missing (first: {first}): point-in-time recovery "
                "cannot cross a gap"
            ),
            {
                "cluster": cluster,
                "gaps": [str(gap) for gap in report.gaps[:20]],
                "problems": report.problems[:20],
                "base_backups": report.bases,
            },
            f"permafrost wal verify --cluster {cluster}\n"
            f"permafrost backup --kind base --cluster {cluster}",
        )
    ]
