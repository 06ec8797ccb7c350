"""wal_queue: WAL piling up in pg_wal because the bucket is slower than the server.

wal-push and the look-ahead pusher count the files marked ready in pg_wal/archive_status (and
their bytes) into wal_archive. At WAL_QUEUE_ALERT_SEGMENTS or more, the queue is long enough
that pg_wal is filling: the alert comes while there is still room, before the server stops. A
count older than STALE is not trusted either way (nothing counted since: wal_lag speaks then).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from monitor.alerts.findings import Finding, Severity, summary
from monitor.alerts.run import Run
from permafrost.config.fleet import load_fleet
from permafrost.text import human_bytes, iso

STALE = timedelta(minutes=15)


def wal_queue(run: Run) -> list[Finding]:
    clusters = load_fleet(run.settings).wal_clusters()  # each of the fleet's archived clusters
    return [f for cluster, _ in clusters for f in _queue(run, cluster)]


def _queue(run: Run, cluster: str) -> list[Finding]:
    limit = run.settings.monitor.wal_queue_alert_segments
    rows = run.catalog.wal_status(cluster)
    row = rows[0] if rows else None
    if row is None or row["ready_at"] is None or run.db_clock - row["ready_at"] > STALE:
        return []
    if (row["ready_segments"] or 0) < limit:
        return []
    return [queue_finding(cluster, limit, row)]


def queue_finding(cluster: str, limit: int, row: dict[str, Any]) -> Finding:
    waiting, size = int(row["ready_segments"]), int(row["ready_bytes"] or 0)
    error = f"; last error: {row['last_error']}" if row.get("last_error") else ""
    return Finding(
        f"wal_queue:{cluster}",
        Severity.CRITICAL,
        summary(
            f"{waiting} WAL segments ({human_bytes(size)}) of cluster {cluster} wait in pg_wal "
            f"to be archived: the bucket is slower than the server, and pg_wal fills{error}"
        ),
        {
            "cluster": cluster,
            "ready_segments": waiting,
            "ready_bytes": size,
            "counted_at": iso(row["ready_at"]),
            "wal_queue_alert_segments": limit,
            "last_segment": row["last_segment"],
            "last_archived_at": iso(row["last_archived_at"]),
            "last_error": row.get("last_error"),
        },
        f"permafrost wal status --cluster {cluster}\npermafrost doctor\n"
        "df -h $PGDATA/pg_wal   # the room left; WAL_PUSH_THREADS raises the upload rate",
    )
