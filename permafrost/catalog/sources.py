"""The source_databases table (migration 0020): what each `databases: all` source of the fleet
had at its last listing, and which of its databases have gone missing since."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from permafrost.catalog.db import Rows

_SEEN = """
INSERT INTO source_databases (source, database, name) VALUES (%s, %s, %s)
ON CONFLICT (source, database) DO UPDATE
SET name = EXCLUDED.name, last_seen = now(), missing_since = NULL
"""
# Gone from the server but still wanted: missing since this listing, unless it was already.
_MISSING = """
UPDATE source_databases SET missing_since = coalesce(missing_since, now())
WHERE source = %s AND NOT (database = ANY(%s)) AND NOT (database = ANY(%s))
"""
_EXCLUDED = "DELETE FROM source_databases WHERE source = %s AND database = ANY(%s)"
# A missing database is news only when it was backed up: its newest completed backup.
_GONE = """
SELECT s.source, s.database, s.name, s.first_seen, s.last_seen, s.missing_since,
       b.id AS last_backup_id, b.finished_at AS last_backup_at
FROM source_databases s
JOIN LATERAL (
    SELECT id, finished_at FROM backups
    WHERE database = s.name AND status = 'completed'
    ORDER BY started_at DESC LIMIT 1
) b ON true
WHERE s.missing_since IS NOT NULL
ORDER BY s.source, s.database
"""


class SourceRows(Rows):
    def record_listing(
        self, source: str, present: dict[str, str], excluded: list[str]
    ) -> list[str]:
        """One listing of a source: `present` maps each wanted database on the server to its
        catalog name; `excluded` are the server's databases the file leaves out. Returns the
        databases seen for the first time."""
        with self._errors("record the source's databases"), self.conn.transaction():
            known = {
                row[0]
                for row in self.conn.execute(
                    "SELECT database FROM source_databases WHERE source = %s", (source,)
                )
            }
            for database, name in present.items():
                self.conn.execute(_SEEN, (source, database, name))
            self.conn.execute(_EXCLUDED, (source, excluded))
            self.conn.execute(_MISSING, (source, list(present), excluded))
        return sorted(set(present) - known)

    def forget_source_databases(self, source: str, databases: list[str]) -> None:
        """Rows of databases the file now excludes (or no longer lists) for a source."""
        with self._errors("record the source's databases"):
            self.conn.execute(_EXCLUDED, (source, databases))

    def gone_databases(self) -> list[dict[str, Any]]:
        """Databases that were backed up and are no longer on their server."""
        with (
            self._errors("read the sources' databases"),
            self.conn.cursor(row_factory=dict_row) as cur,
        ):
            return cur.execute(_GONE).fetchall()

    def source_databases(self, source: str | None = None) -> list[dict[str, Any]]:
        """Every listed database (of one source), with when it was seen and whether it is
        missing."""
        with (
            self._errors("read the sources' databases"),
            self.conn.cursor(row_factory=dict_row) as cur,
        ):
            return cur.execute(
                "SELECT * FROM source_databases WHERE %(s)s::text IS NULL OR source = %(s)s"
                " ORDER BY source, database",
                {"s": source},
            ).fetchall()
