"""Copies (migration 0018): which repositories hold a verified copy of each backup and of each
cluster's WAL, and how each copy destination fared.

A copy destination (COPY_STORAGE_URLS) is a repository of its own, with its own id. A row of
`backup_copies` says that every object of a backup was read back from that repository and
matched the SHA-256 its manifest records, and that the manifest was written there last.

`backups` here is the scoped view (catalog/repositories.py): the configured repository's
backups, which are what a copy copies.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg.rows import class_row

from permafrost.catalog.copy_records import CopyRecord, DestinationRecord, WalCopyRecord
from permafrost.catalog.db import SCHEMA, Rows
from permafrost.catalog.records import BackupRecord

_MISSING = f"""
SELECT b.* FROM backups b
WHERE b.status = 'completed' AND b.tier = ANY(%(tiers)s)
  AND NOT EXISTS (
    SELECT 1 FROM {SCHEMA}.backup_copies c
    JOIN {SCHEMA}.copy_destinations d
      ON d.name = c.destination AND d.repository_id = c.repository_id
    WHERE c.backup_id = b.id AND d.name = %(destination)s)
ORDER BY b.started_at, b.id
"""


class CopyRows(Rows):
    # --- destinations ----------------------------------------------------------------------

    def destination_reached(self, name: str, repository_id: str, location: str) -> None:
        """The destination answered and holds this repository (made from the primary's)."""
        with self._errors("record a copy destination"):
            self.conn.execute(
                f"INSERT INTO {SCHEMA}.copy_destinations AS d (name, repository_id, location,"
                " last_attempt_at, last_success_at) VALUES (%s, %s, %s, now(), now())"
                " ON CONFLICT (name) DO UPDATE SET repository_id = EXCLUDED.repository_id,"
                " location = EXCLUDED.location, last_attempt_at = now(), last_success_at = now(),"
                " last_error = NULL, last_error_at = NULL",
                (name, repository_id, location),
            )

    def destination_failed(self, name: str, location: str, error: str) -> None:
        """A copy to it failed: remembered for `copy`'s status and the lag the monitor shows."""
        with self._errors("record a copy failure"):
            self.conn.execute(
                f"INSERT INTO {SCHEMA}.copy_destinations AS d (name, location, last_attempt_at,"
                " last_error, last_error_at) VALUES (%s, %s, now(), %s, now())"
                " ON CONFLICT (name) DO UPDATE SET location = EXCLUDED.location,"
                " last_attempt_at = now(), last_error = EXCLUDED.last_error, last_error_at = now()",
                (name, location, error),
            )

    def copy_destinations(self) -> list[DestinationRecord]:
        with (
            self._errors("read the copy destinations"),
            self.conn.cursor(row_factory=class_row(DestinationRecord)) as cur,
        ):
            return cur.execute(f"SELECT * FROM {SCHEMA}.copy_destinations ORDER BY name").fetchall()

    # --- backups ---------------------------------------------------------------------------

    def backup_copied(self, copy: CopyRecord) -> None:
        with self._errors("record a copy"):
            self.conn.execute(
                f"INSERT INTO {SCHEMA}.backup_copies (backup_id, repository_id, destination,"
                " manifest_key, stored_bytes, method, seconds, verified_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (backup_id, repository_id) DO UPDATE SET"
                " destination = EXCLUDED.destination, manifest_key = EXCLUDED.manifest_key,"
                " stored_bytes = EXCLUDED.stored_bytes, method = EXCLUDED.method,"
                " seconds = EXCLUDED.seconds, verified_at = EXCLUDED.verified_at,"
                " removed_at = NULL",
                (
                    copy.backup_id,
                    copy.repository_id,
                    copy.destination,
                    copy.manifest_key,
                    copy.stored_bytes,
                    copy.method,
                    copy.seconds,
                    copy.verified_at,
                ),
            )

    def copy_removed(self, backup_id: str, repository_id: str) -> None:
        """The copy's own retention deleted it there: no longer one of its copies, and not
        missing either (it is not copied again)."""
        with self._errors("record a copy's removal"):
            self.conn.execute(
                f"UPDATE {SCHEMA}.backup_copies SET removed_at = now()"
                " WHERE backup_id = %s AND repository_id = %s",
                (backup_id, repository_id),
            )

    def copies_of(self, backup_id: str) -> list[CopyRecord]:
        """Where a backup lives besides the primary: its verified copies, by destination."""
        return self.copies_of_many([backup_id]).get(backup_id, [])

    def copies_of_many(self, backup_ids: Iterable[str]) -> dict[str, list[CopyRecord]]:
        """The verified copies of each of these backups (one query, for `list`)."""
        ids = list(backup_ids)
        if not ids:
            return {}
        with (
            self._errors("read the copies"),
            self.conn.cursor(row_factory=class_row(CopyRecord)) as cur,
        ):
            rows = cur.execute(
                f"SELECT * FROM {SCHEMA}.backup_copies WHERE backup_id = ANY(%s)"
                " AND removed_at IS NULL ORDER BY destination",
                (ids,),
            ).fetchall()
        out: dict[str, list[CopyRecord]] = {}
        for row in rows:
            out.setdefault(row.backup_id, []).append(row)
        return out

    def missing_copies(self, destination: str, tiers: Iterable[str]) -> list[BackupRecord]:
        """The configured repository's completed backups of these tiers that the destination's
        current repository does not hold a verified copy of, oldest first."""
        with (
            self._errors("read the backups missing from a copy"),
            self.conn.cursor(row_factory=class_row(BackupRecord)) as cur,
        ):
            return cur.execute(
                _MISSING, {"tiers": list(tiers), "destination": destination}
            ).fetchall()

    def newest_copy(self, destination: str) -> CopyRecord | None:
        """The newest backup (by its start) with a verified copy at the destination's current
        repository: the copy's recovery point."""
        with (
            self._errors("read the newest copy"),
            self.conn.cursor(row_factory=class_row(CopyRecord)) as cur,
        ):
            return cur.execute(
                f"SELECT c.* FROM {SCHEMA}.backup_copies c"
                f" JOIN {SCHEMA}.copy_destinations d"
                "   ON d.name = c.destination AND d.repository_id = c.repository_id"
                f" JOIN {SCHEMA}.backups b ON b.id = c.backup_id"
                " WHERE d.name = %s AND c.removed_at IS NULL"
                " ORDER BY b.started_at DESC, b.id DESC LIMIT 1",
                (destination,),
            ).fetchone()

    # --- WAL -------------------------------------------------------------------------------

    def wal_copied(self, record: WalCopyRecord) -> None:
        """Segments reached the copy: add them and move its position forward."""
        with self._errors("record copied WAL"):
            self.conn.execute(
                f"INSERT INTO {SCHEMA}.wal_copies AS w (destination, repository_id, cluster,"
                " last_segment, last_copied_at, segments, bytes)"
                " VALUES (%s, %s, %s, %s, now(), %s, %s)"
                " ON CONFLICT (repository_id, cluster) DO UPDATE SET"
                " destination = EXCLUDED.destination,"
                " last_segment = greatest(w.last_segment, EXCLUDED.last_segment),"
                " last_copied_at = now(), segments = w.segments + EXCLUDED.segments,"
                " bytes = w.bytes + EXCLUDED.bytes",
                (
                    record.destination,
                    record.repository_id,
                    record.cluster,
                    record.last_segment,
                    record.segments,
                    record.bytes,
                ),
            )

    def wal_copies(self, destination: str | None = None) -> list[WalCopyRecord]:
        """Each destination's WAL position, for its current repository."""
        query = (
            f"SELECT w.* FROM {SCHEMA}.wal_copies w JOIN {SCHEMA}.copy_destinations d"
            " ON d.name = w.destination AND d.repository_id = w.repository_id"
        )
        params: list[str] = []
        if destination is not None:
            query += " WHERE d.name = %s"
            params.append(destination)
        with (
            self._errors("read the copied WAL"),
            self.conn.cursor(row_factory=class_row(WalCopyRecord)) as cur,
        ):
            return cur.execute(query + " ORDER BY w.destination, w.cluster", params).fetchall()
