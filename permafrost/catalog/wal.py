"""The wal_archive table: each cluster's archive position, last error and last WAL switch.

One row per repository and cluster: a scoped catalog (catalog/repositories.py) sees and writes
the configured repository's rows, with its id."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from permafrost.catalog.db import Rows, filters


class WalRows(Rows):
    def wal_archived(self, cluster: str, segment: str, size: int, method: str) -> None:
        """A segment reached the bucket: move the cluster's archive position forward."""
        with self._errors("record the archived WAL"):
            self.conn.execute(
                "INSERT INTO wal_archive AS w (cluster, last_segment, last_archived_at, segments,"
                " bytes, method) VALUES (%s, %s, now(), 1, %s, %s)"
                " ON CONFLICT (repository_id, cluster) DO UPDATE SET"
                " last_segment = greatest(w.last_segment, EXCLUDED.last_segment),"
                " last_archived_at = CASE WHEN EXCLUDED.last_segment >= w.last_segment"
                "   THEN now() ELSE w.last_archived_at END,"
                " segments = w.segments + 1, bytes = w.bytes + EXCLUDED.bytes,"
                " method = EXCLUDED.method, last_error = NULL",
                (cluster, segment, size, method),
            )

    def wal_error(self, cluster: str, error: str) -> None:
        with self._errors("record a WAL archiving error"):
            self.conn.execute(
                "UPDATE wal_archive SET last_error = %s, last_error_at = now() WHERE cluster = %s",
                (error, cluster),
            )

    def wal_backlog(self, cluster: str, segments: int, size: int) -> None:
        """The files waiting in pg_wal to be archived, counted now (once the cluster has a row:
        before its first archived segment, wal_lag's never-archived finding covers it)."""
        with self._errors("record the WAL waiting to be archived"):
            self.conn.execute(
                "UPDATE wal_archive SET ready_segments = %s, ready_bytes = %s, ready_at = now()"
                " WHERE cluster = %s",
                (segments, size, cluster),
            )

    def wal_switched(self, cluster: str) -> None:
        with self._errors("record a WAL switch"):
            self.conn.execute(
                "UPDATE wal_archive SET last_switch_at = now() WHERE cluster = %s", (cluster,)
            )

    def wal_status(self, cluster: str | None = None) -> list[dict[str, Any]]:
        where, params = filters(cluster=cluster)
        query = "SELECT *, extract(epoch FROM now() - last_archived_at) AS lag_seconds"
        query += " FROM wal_archive" + (" WHERE " + " AND ".join(where) if where else "")
        with (
            self._errors("read the WAL archive status"),
            self.conn.cursor(row_factory=dict_row) as cur,
        ):
            return cur.execute(query + " ORDER BY cluster", params).fetchall()
