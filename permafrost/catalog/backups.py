"""The backups table and what hangs off it: verifications, moves between tiers, storage usage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from permafrost.catalog.db import Rows, filters
from permafrost.catalog.jobs import BACKUP_LOCK, INTERRUPTED
from permafrost.catalog.records import (
    BackupRecord,
    Purpose,
    TierStats,
    VerificationRecord,
    VerificationStatus,
)
from permafrost.repo.manifest import Manifest

_STATS = """
SELECT database, tier,
       count(*) FILTER (WHERE status = 'completed') AS backups,
       coalesce(sum(size_bytes) FILTER (WHERE status = 'completed'), 0)::bigint AS size_bytes,
       coalesce(sum(dump_bytes) FILTER (WHERE status = 'completed'), 0)::bigint AS dump_bytes,
       min(started_at) FILTER (WHERE status = 'completed') AS oldest,
       max(started_at) FILTER (WHERE status = 'completed') AS newest,
       max(verified_at) FILTER (WHERE verification_status = 'verified') AS last_verified,
       count(*) FILTER (WHERE status IN ('failed', 'interrupted')) AS failed
FROM backups WHERE status <> 'deleted'
GROUP BY database, tier ORDER BY database, tier
"""

_UPSERT = (
    "INSERT INTO backups (id, database, kind, tier, status, started_at, finished_at,"
    " size_bytes, dump_bytes, description, tags, manifest_key, manifest, parent_id,"
    " chain_full_id)"
    " VALUES (%s, %s, %s, %s, 'completed', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (id) DO UPDATE SET database = EXCLUDED.database,"
    " kind = EXCLUDED.kind, tier = EXCLUDED.tier, status = 'completed',"
    " started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,"
    " size_bytes = EXCLUDED.size_bytes, dump_bytes = EXCLUDED.dump_bytes,"
    " description = EXCLUDED.description, tags = EXCLUDED.tags,"
    " manifest_key = EXCLUDED.manifest_key, manifest = EXCLUDED.manifest,"
    " error = NULL, deleted_at = NULL,"
    " parent_id = EXCLUDED.parent_id, chain_full_id = EXCLUDED.chain_full_id,"
    " repository_id = EXCLUDED.repository_id"  # the repository whose manifest it is
)

# A `running` backup whose catalog session no longer holds its backup lock: its process is gone.
# Settled as `interrupted` (with its job run aborted) on every read and write that shows it, so
# `list`, `show`, the dashboard and the alerts say so at once. Rows written before the session
# was recorded (backend_pid NULL) count as alive while anyone holds the lock.
_SETTLE_INTERRUPTED = """
UPDATE backups b SET status = 'interrupted', finished_at = now(),
       error = coalesce(b.error, %(reason)s)
WHERE b.status = 'running' AND NOT EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = %(space)s::oid
      AND l.objid = hashtext(b.kind || ':' || b.database)::oid
      AND (b.backend_pid IS NULL OR l.pid = b.backend_pid))
RETURNING b.id
"""


class BackupRows(Rows):
    def backup_started(
        self,
        backup_id: str,
        database: str,
        kind: str,
        tier: str,
        started_at: datetime,
        description: str,
        tags: list[str],
    ) -> None:
        self.settle_interrupted()
        with self._errors("record backup start"):
            self.conn.execute(
                "INSERT INTO backups (id, database, kind, tier, status, started_at, description,"
                " tags) VALUES (%s, %s, %s, %s, 'running', %s, %s, %s)",
                (backup_id, database, kind, tier, started_at, description, tags),
            )
            # This session holds the backup's lock while it runs (backup/job.py).
            self.conn.execute(
                "UPDATE backups SET backend_pid = pg_backend_pid(), purpose = %s WHERE id = %s",
                (Purpose.of_tags(tags), backup_id),
            )

    def settle_interrupted(self) -> None:
        """Record as `interrupted` every `running` backup whose process is gone."""
        with self._errors("settle interrupted backups"):
            params = {"reason": INTERRUPTED, "space": BACKUP_LOCK}
            gone = [row[0] for row in self.conn.execute(_SETTLE_INTERRUPTED, params)]
            if gone:  # their runs are aborted (job_runs is only read when there are any)
                self.conn.execute(
                    "UPDATE job_runs SET status = 'aborted', finished_at = now(), error = %s"
                    " WHERE backup_id = ANY(%s) AND status = 'running'",
                    (INTERRUPTED, gone),
                )

    def backup_failed(self, backup_id: str, error: str) -> None:
        with self._errors("record backup failure"):
            self.conn.execute(
                "UPDATE backups SET status = 'failed', error = %s, finished_at = now()"
                " WHERE id = %s",
                (error, backup_id),
            )

    def upsert_manifest(self, manifest: Manifest, manifest_key: str) -> None:
        """Record a completed backup from its manifest (idempotent: sync runs it again)."""
        m = manifest
        row = (
            m.id,
            m.database,
            m.kind,
            m.tier,
            m.started_at,
            m.finished_at,
            m.stored_bytes,
            m.dump_bytes,
            m.description,
            m.tags,
            manifest_key,
            Jsonb(m.body()),
            m.parent_id,
            m.chain_full_id,
        )
        with self._errors("record backup"), self.conn.transaction():
            self.conn.execute(_UPSERT, row)
            self.conn.execute(
                "UPDATE backups SET purpose = %s WHERE id = %s", (Purpose.of_tags(m.tags), m.id)
            )

    def get(self, backup_id: str) -> BackupRecord | None:
        self.settle_interrupted()
        with (
            self._errors("read backup"),
            self.conn.cursor(row_factory=class_row(BackupRecord)) as cur,
        ):
            return cur.execute("SELECT * FROM backups WHERE id = %s", (backup_id,)).fetchone()

    def find(
        self,
        *,
        database: str | None = None,
        tier: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        include_deleted: bool = False,
        tags: tuple[str, ...] = (),
    ) -> list[BackupRecord]:
        """Backups, newest first; with tags, those that carry every one of them."""
        self.settle_interrupted()
        where, params = filters(database=database, tier=tier, status=status)
        if tags:
            where.append("tags @> %s")
            params.append(list(tags))
        if not include_deleted and status is None:
            where.append("status <> 'deleted'")
        query = "SELECT * FROM backups"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY started_at DESC, id DESC"
        if limit is not None:
            query += " LIMIT %s"
            params.append(limit)
        with (
            self._errors("list backups"),
            self.conn.cursor(row_factory=class_row(BackupRecord)) as cur,
        ):
            return cur.execute(query, params).fetchall()

    def completed_ids(self) -> set[str]:
        with self._errors("list backups"):
            rows = self.conn.execute("SELECT id FROM backups WHERE status = 'completed'")
            return {row[0] for row in rows}

    def verified_ids(self) -> set[str]:
        """Backups whose newest verification (integrity or test restore) succeeded."""
        with self._errors("list verified backups"):
            rows = self.conn.execute(
                "SELECT id FROM backups WHERE verification_status = 'verified'"
                " AND status = 'completed'"
            )
            return {row[0] for row in rows}

    def safety_ids(self) -> frozenset[str]:
        """The safety backups (taken by restores) that the bucket still holds."""
        with self._errors("list safety backups"):
            rows = self.conn.execute(
                "SELECT id FROM backups WHERE purpose = 'safety' AND status = 'completed'"
            )
            return frozenset(row[0] for row in rows)

    def mark_deleted(self, backup_id: str) -> None:
        with self._errors("record deletion"):
            self.conn.execute(
                "UPDATE backups SET status = 'deleted', deleted_at = now() WHERE id = %s",
                (backup_id,),
            )

    def move_backup(self, backup_id: str, tier: str, manifest_key: str) -> None:
        """A backup's objects moved (pinned or unpinned): its tier and manifest key follow."""
        with self._errors("record a moved backup"):
            self.conn.execute(
                "UPDATE backups SET tier = %s, manifest_key = %s WHERE id = %s",
                (tier, manifest_key, backup_id),
            )

    def stats(self) -> list[TierStats]:
        with self._errors("read stats"), self.conn.cursor(row_factory=class_row(TierStats)) as cur:
            return cur.execute(_STATS).fetchall()

    # --- verifications ----------------------------------------------------------------------

    def record_verification(
        self,
        backup_id: str,
        kind: str,
        started_at: datetime,
        finished_at: datetime,
        error: str | None,
        details: dict[str, Any],
        *,
        setting: str | None = None,
    ) -> None:
        """A verification's outcome. With `setting`, it could not run (that setting is wrong):
        recorded as `unverified`, and the backup's own verification state stays as it was."""
        status = VerificationStatus.of(error, setting)
        with self._errors("record verification"), self.conn.transaction():
            self.conn.execute(
                "INSERT INTO verifications (backup_id, kind, started_at, finished_at, status,"
                " error, details, setting) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (backup_id, kind, started_at, finished_at, status, error, Jsonb(details), setting),
            )
            if status == VerificationStatus.UNVERIFIED:
                return
            self.conn.execute(
                "UPDATE backups SET verified_at = %s, verification_status = %s WHERE id = %s",
                (finished_at, status, backup_id),
            )

    def verifications(self, backup_id: str) -> list[VerificationRecord]:
        with (
            self._errors("read verifications"),
            self.conn.cursor(row_factory=class_row(VerificationRecord)) as cur,
        ):
            return cur.execute(
                "SELECT * FROM verifications WHERE backup_id = %s ORDER BY started_at DESC",
                (backup_id,),
            ).fetchall()

    def restore_rates(self, database: str | None, limit: int = 5) -> list[float]:
        """Bytes per second of the newest successful test restores of logical backups (of one
        database if given)."""
        with self._errors("read restore rates"):
            rows = self.conn.execute(
                "SELECT (v.details->>'bytes_per_second')::float FROM verifications v"
                " JOIN backups b ON b.id = v.backup_id"
                " WHERE v.kind = 'test_restore' AND v.status = 'verified'"
                " AND b.kind = 'logical'"  # a base backup's test restore is another rate
                " AND v.details ? 'bytes_per_second' AND (%s::text IS NULL OR b.database = %s)"
                " ORDER BY v.finished_at DESC LIMIT %s",
                (database, database, limit),
            ).fetchall()
        return [float(row[0]) for row in rows if row[0]]

    # --- storage accounting -----------------------------------------------------------------

    def record_usage(self, usage: list[tuple[str, str, int, int]]) -> None:
        """Replace the storage accounting with (tier, database, objects, bytes) rows."""
        with self._errors("record storage usage"), self.conn.transaction():
            self.conn.execute("DELETE FROM storage_usage")
            for tier, database, objects, size in usage:
                self.conn.execute(
                    "INSERT INTO storage_usage (tier, database, objects, bytes)"
                    " VALUES (%s, %s, %s, %s)",
                    (tier, database, objects, size),
                )

    def usage(self) -> list[dict[str, Any]]:
        with (
            self._errors("read storage usage"),
            self.conn.cursor(row_factory=dict_row) as cur,
        ):
            return cur.execute("SELECT * FROM storage_usage ORDER BY tier, database").fetchall()
