"""The metadata store: PostgreSQL, schema `permafrost`, all of Permafrost's SQL.

Migrations are the numbered files in migrations/, applied in order, each once, in one
transaction under an advisory lock, so several services starting together do not race.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from permafrost.catalog.alerts import AlertRows
from permafrost.catalog.db import db_errors
from permafrost.catalog.records import BackupRecord, TaskRecord, TierStats, VerificationRecord
from permafrost.config.settings import Secret
from permafrost.errors import CatalogUnavailable
from permafrost.repo.manifest import Manifest
from permafrost.text import first_line

SCHEMA = "permafrost"
TASK_CHANNEL = "permafrost_tasks"
TASK_LOCK = 0x7461736B  # 'task'
_CLAIM = """
UPDATE tasks SET status = 'running', started_at = now(), worker = %s, attempts = attempts + 1
WHERE id = (SELECT id FROM tasks WHERE status = 'queued' AND kind = ANY(%s)
            ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING *
"""
MIGRATION_LOCK = 0x7065726D  # 'perm'


_STATS = """
SELECT database, tier,
       count(*) FILTER (WHERE status = 'completed') AS backups,
       coalesce(sum(size_bytes) FILTER (WHERE status = 'completed'), 0)::bigint AS size_bytes,
       coalesce(sum(dump_bytes) FILTER (WHERE status = 'completed'), 0)::bigint AS dump_bytes,
       min(started_at) FILTER (WHERE status = 'completed') AS oldest,
       max(started_at) FILTER (WHERE status = 'completed') AS newest,
       max(verified_at) FILTER (WHERE verification_status = 'verified') AS last_verified,
       count(*) FILTER (WHERE status = 'failed') AS failed
FROM backups WHERE status <> 'deleted'
GROUP BY database, tier ORDER BY database, tier
"""


# The newest run of each (job, database): a skip scan over job_runs_latest, so the cost grows
# with the number of jobs, not of runs.
_LAST_RUNS = """
WITH RECURSIVE keys AS (
    (SELECT job, coalesce(database, '') AS db FROM job_runs ORDER BY job, coalesce(database, '')
     LIMIT 1)
    UNION ALL
    SELECT n.job, n.db FROM keys k, LATERAL (
        SELECT job, coalesce(database, '') AS db FROM job_runs j
        WHERE (j.job, coalesce(j.database, '')) > (k.job, k.db)
        ORDER BY job, coalesce(database, '') LIMIT 1) n
)
SELECT r.* FROM keys k, LATERAL (
    SELECT * FROM job_runs j WHERE j.job = k.job AND coalesce(j.database, '') = k.db
    ORDER BY started_at DESC, id DESC LIMIT 1) r
ORDER BY r.job, r.database
"""


def connect(url: Secret | None) -> Catalog:
    if url is None:
        raise CatalogUnavailable(
            "METADATA_DATABASE_URL is not set: the catalog lives in a PostgreSQL database "
            "(for example postgresql://permafrost@metadata/permafrost)"
        )
    try:
        conn = psycopg.connect(url.reveal(), autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise CatalogUnavailable(f"cannot reach the metadata store: {first_line(exc)}") from None
    catalog = Catalog(conn)
    catalog.migrate()
    return catalog


class Catalog(AlertRows):
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def migrate(self) -> list[str]:
        """Apply the migrations this database has not seen; return their names."""
        applied: list[str] = []
        with self._errors("migrate"), self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            self.conn.execute(f"SET LOCAL search_path TO {SCHEMA}")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in self.conn.execute("SELECT version FROM schema_migrations")}
            for version, name, text in _migrations():
                if version not in done:
                    self.conn.execute(text)
                    self.conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (version, name),
                    )
                    applied.append(name)
        self.conn.execute(f"SET search_path TO {SCHEMA}")
        return applied

    # --- backups --------------------------------------------------------------------------

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
        with self._errors("record backup start"):
            self.conn.execute(
                "INSERT INTO backups (id, database, kind, tier, status, started_at, description,"
                " tags) VALUES (%s, %s, %s, %s, 'running', %s, %s, %s)",
                (backup_id, database, kind, tier, started_at, description, tags),
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
        with self._errors("record backup"):
            self.conn.execute(
                "INSERT INTO backups (id, database, kind, tier, status, started_at, finished_at,"
                " size_bytes, dump_bytes, description, tags, manifest_key, manifest)"
                " VALUES (%s, %s, %s, %s, 'completed', %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET database = EXCLUDED.database,"
                " kind = EXCLUDED.kind, tier = EXCLUDED.tier, status = 'completed',"
                " started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,"
                " size_bytes = EXCLUDED.size_bytes, dump_bytes = EXCLUDED.dump_bytes,"
                " description = EXCLUDED.description, tags = EXCLUDED.tags,"
                " manifest_key = EXCLUDED.manifest_key, manifest = EXCLUDED.manifest,"
                " error = NULL, deleted_at = NULL",
                (
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
                ),
            )

    def get(self, backup_id: str) -> BackupRecord | None:
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
    ) -> list[BackupRecord]:
        """Backups, newest first."""
        where, params = _filters(database=database, tier=tier, status=status)
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

    def mark_deleted(self, backup_id: str) -> None:
        with self._errors("record deletion"):
            self.conn.execute(
                "UPDATE backups SET status = 'deleted', deleted_at = now() WHERE id = %s",
                (backup_id,),
            )

    def stats(self) -> list[TierStats]:
        with self._errors("read stats"), self.conn.cursor(row_factory=class_row(TierStats)) as cur:
            return cur.execute(_STATS).fetchall()

    # --- verifications, jobs, audit -------------------------------------------------------

    def record_verification(
        self,
        backup_id: str,
        kind: str,
        started_at: datetime,
        finished_at: datetime,
        error: str | None,
        details: dict[str, Any],
    ) -> None:
        status = "failed" if error else "verified"
        with self._errors("record verification"), self.conn.transaction():
            self.conn.execute(
                "INSERT INTO verifications (backup_id, kind, started_at, finished_at, status,"
                " error, details) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (backup_id, kind, started_at, finished_at, status, error, Jsonb(details)),
            )
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
        """Bytes per second of the newest successful test restores (of one database if given)."""
        with self._errors("read restore rates"):
            rows = self.conn.execute(
                "SELECT (v.details->>'bytes_per_second')::float FROM verifications v"
                " JOIN backups b ON b.id = v.backup_id"
                " WHERE v.kind = 'test_restore' AND v.status = 'verified'"
                " AND v.details ? 'bytes_per_second' AND (%s::text IS NULL OR b.database = %s)"
                " ORDER BY v.finished_at DESC LIMIT %s",
                (database, database, limit),
            ).fetchall()
        return [float(row[0]) for row in rows if row[0]]

    def job_started(
        self,
        job: str,
        database: str | None,
        backup_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        with self._errors("record job start"):
            row = self.conn.execute(
                "INSERT INTO job_runs (job, database, backup_id, status, details)"
                " VALUES (%s, %s, %s, 'running', %s) RETURNING id",
                (job, database, backup_id, Jsonb(details or {})),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def job_finished(
        self,
        run_id: int,
        status: str,
        error: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        with self._errors("record job result"):
            self.conn.execute(
                "UPDATE job_runs SET finished_at = now(), status = %s, error = %s,"
                " details = details || %s WHERE id = %s",
                (status, error, Jsonb(details or {}), run_id),
            )

    def job_runs(self, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        where, params = _filters(job=job)
        query = "SELECT * FROM job_runs" + (" WHERE " + " AND ".join(where) if where else "")
        with (
            self._errors("read job runs"),
            self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
        ):
            return cur.execute(query + " ORDER BY id DESC LIMIT %s", [*params, limit]).fetchall()

    def wal_archived(self, cluster: str, segment: str, size: int, method: str) -> None:
        """A segment reached the bucket: move the cluster's archive position forward."""
        with self._errors("record the archived WAL"):
            self.conn.execute(
                "INSERT INTO wal_archive AS w (cluster, last_segment, last_archived_at, segments,"
                " bytes, method) VALUES (%s, %s, now(), 1, %s, %s)"
                " ON CONFLICT (cluster) DO UPDATE SET"
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

    def wal_switched(self, cluster: str) -> None:
        with self._errors("record a WAL switch"):
            self.conn.execute(
                "UPDATE wal_archive SET last_switch_at = now() WHERE cluster = %s", (cluster,)
            )

    def wal_status(self, cluster: str | None = None) -> list[dict[str, Any]]:
        where, params = _filters(cluster=cluster)
        query = "SELECT *, extract(epoch FROM now() - last_archived_at) AS lag_seconds"
        query += " FROM wal_archive" + (" WHERE " + " AND ".join(where) if where else "")
        with (
            self._errors("read the WAL archive status"),
            self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
        ):
            return cur.execute(query + " ORDER BY cluster", params).fetchall()

    def last_job_runs(self) -> list[dict[str, Any]]:
        """The newest run of each job for each database (database NULL for global jobs)."""
        with (
            self._errors("read job runs"),
            self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
        ):
            return cur.execute(_LAST_RUNS).fetchall()

    def ran_since(self, job: str, database: str | None, since: datetime) -> bool:
        """Whether this job (for this database) ran at or after `since` (an aborted run does not
        count; five minutes of slack cover clocks that disagree)."""
        with self._errors("read job runs"):
            row = self.conn.execute(
                "SELECT 1 FROM job_runs WHERE job = %s AND database IS NOT DISTINCT FROM %s"
                " AND status IN ('succeeded', 'failed', 'running')"
                " AND started_at >= %s::timestamptz - interval '5 minutes' LIMIT 1",
                (job, database, since),
            ).fetchone()
        return row is not None

    def running_job(self, jobs: list[str], database: str) -> dict[str, Any] | None:
        """The newest job run still marked running for this database, for "who holds it"."""
        with (
            self._errors("read job runs"),
            self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
        ):
            return cur.execute(
                "SELECT * FROM job_runs WHERE job = ANY(%s) AND database = %s"
                " AND status = 'running' ORDER BY started_at DESC LIMIT 1",
                (jobs, database),
            ).fetchone()

    def running_runs(self, jobs: list[str]) -> list[dict[str, Any]]:
        with (
            self._errors("read job runs"),
            self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
        ):
            return cur.execute(
                "SELECT * FROM job_runs WHERE status = 'running' AND job = ANY(%s) ORDER BY id",
                (jobs,),
            ).fetchall()

    def abandon_run(self, run_id: int, backup_id: str | None, reason: str) -> None:
        """A run whose process died: aborted, and its backup (never committed) failed."""
        with self._errors("record an abandoned run"), self.conn.transaction():
            self.conn.execute(
                "UPDATE job_runs SET status = 'aborted', finished_at = now(), error = %s"
                " WHERE id = %s AND status = 'running'",
                (reason, run_id),
            )
            if backup_id:
                self.conn.execute(
                    "UPDATE backups SET status = 'failed', error = %s, finished_at = now()"
                    " WHERE id = %s AND status = 'running'",
                    (reason, backup_id),
                )

    # --- locks ----------------------------------------------------------------------------

    def try_lock(self, space: int, name: str) -> bool:
        """A session advisory lock on (space, hashtext(name)); False when someone holds it."""
        with self._errors("take a lock"):
            row = self.conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (space, name)
            ).fetchone()
        return bool(row and row[0])

    def unlock(self, space: int, name: str) -> None:
        with self._errors("release a lock"):
            self.conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (space, name))

    # --- scheduler heartbeats -------------------------------------------------------------

    def heartbeat(
        self,
        instance: str,
        role: str,
        host: str,
        pid: int,
        next_runs: dict[str, Any],
        details: dict[str, Any],
    ) -> None:
        with self._errors("write the heartbeat"):
            self.conn.execute(
                "INSERT INTO heartbeats (instance, role, host, pid, next_runs, details)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (instance) DO UPDATE SET"
                " role = EXCLUDED.role, beat_at = now(), next_runs = EXCLUDED.next_runs,"
                " details = EXCLUDED.details",
                (instance, role, host, pid, Jsonb(next_runs), Jsonb(details)),
            )

    def heartbeats(self) -> list[dict[str, Any]]:
        """Every scheduler seen in the last day, the leader first, with its age in seconds."""
        with (
            self._errors("read heartbeats"),
            self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
        ):
            return cur.execute(
                "SELECT *, extract(epoch FROM now() - beat_at)::float AS age_seconds"
                " FROM heartbeats WHERE beat_at > now() - interval '1 day'"
                " ORDER BY role = 'leader' DESC, beat_at DESC"
            ).fetchall()

    # --- storage accounting ---------------------------------------------------------------

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
            self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
        ):
            return cur.execute("SELECT * FROM storage_usage ORDER BY tier, database").fetchall()

    def move_backup(self, backup_id: str, tier: str, manifest_key: str) -> None:
        """A backup's objects moved (pinned or unpinned): its tier and manifest key follow."""
        with self._errors("record a moved backup"):
            self.conn.execute(
                "UPDATE backups SET tier = %s, manifest_key = %s WHERE id = %s",
                (tier, manifest_key, backup_id),
            )

    def audit(self, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        with self._errors("write the audit log"):
            self.conn.execute(
                "INSERT INTO audit_log (actor, action, target, details) VALUES (%s, %s, %s, %s)",
                (actor, action, target, Jsonb(details)),
            )

    def audit_entries(self, limit: int = 50) -> list[dict[str, Any]]:
        with (
            self._errors("read the audit log"),
            self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
        ):
            return cur.execute(
                "SELECT * FROM audit_log ORDER BY id DESC LIMIT %s", (limit,)
            ).fetchall()

    # --- the task queue ---------------------------------------------------------------------

    def enqueue(self, kind: str, payload: dict[str, Any], requested_by: str) -> int:
        """Queue a task and wake the workers (the NOTIFY is delivered at commit)."""
        with self._errors("queue a task"), self.conn.transaction():
            row = self.conn.execute(
                "INSERT INTO tasks (kind, payload, requested_by) VALUES (%s, %s, %s) RETURNING id",
                (kind, Jsonb(payload), requested_by),
            ).fetchone()
            self.conn.execute("SELECT pg_notify(%s, %s)", (TASK_CHANNEL, kind))
        assert row is not None
        return int(row[0])

    def claim(self, kinds: list[str], worker: str) -> TaskRecord | None:
        """The oldest queued task of these kinds, now ours; locked so no one else takes it.

        The session-level advisory lock on the task id stays while this connection lives: a
        worker that dies releases it, and `requeue_orphans` then puts the task back.
        """
        with (
            self._errors("claim a task"),
            self.conn.transaction(),
            self.conn.cursor(row_factory=class_row(TaskRecord)) as cur,
        ):
            task = cur.execute(_CLAIM, (worker, kinds)).fetchone()
            if task is not None:
                self.conn.execute("SELECT pg_advisory_lock(%s, %s)", (TASK_LOCK, task.id))
            return task

    def finish_task(self, task_id: int, error: str | None, result: dict[str, Any]) -> None:
        with self._errors("record a task result"):
            self.conn.execute(
                "UPDATE tasks SET status = %s, finished_at = now(), error = %s, result = %s"
                " WHERE id = %s",
                ("failed" if error else "succeeded", error, Jsonb(result), task_id),
            )
            self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (TASK_LOCK, task_id))

    def requeue(self, task_id: int) -> None:
        with self._errors("requeue a task"):
            self.conn.execute(
                "UPDATE tasks SET status = 'queued', worker = NULL, started_at = NULL"
                " WHERE id = %s AND status = 'running'",
                (task_id,),
            )
            self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (TASK_LOCK, task_id))
            self.conn.execute("SELECT pg_notify(%s, 'requeued')", (TASK_CHANNEL,))

    def requeue_orphans(self) -> int:
        """Put back running tasks whose worker is gone (its advisory lock was released)."""
        with self._errors("requeue orphaned tasks"):
            rows = self.conn.execute("SELECT id FROM tasks WHERE status = 'running'").fetchall()
            orphans = 0
            for (task_id,) in rows:
                free = self.conn.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (TASK_LOCK, task_id)
                ).fetchone()
                if free and free[0]:
                    self.requeue(task_id)
                    orphans += 1
            return orphans

    def pending_task_backups(self) -> set[str]:
        """Backups with a verification or test restore queued or running."""
        with self._errors("read the task queue"):
            rows = self.conn.execute(
                "SELECT DISTINCT payload->>'backup_id' FROM tasks"
                " WHERE status IN ('queued', 'running') AND payload ? 'backup_id'"
            ).fetchall()
        return {row[0] for row in rows}

    def task(self, task_id: int) -> TaskRecord | None:
        with (
            self._errors("read a task"),
            self.conn.cursor(row_factory=class_row(TaskRecord)) as cur,
        ):
            return cur.execute("SELECT * FROM tasks WHERE id = %s", (task_id,)).fetchone()

    def _errors(self, action: str) -> db_errors:
        return db_errors(action)


def _filters(**values: str | None) -> tuple[list[str], list[Any]]:
    where = [f"{name} = %s" for name, value in values.items() if value is not None]
    return where, [value for value in values.values() if value is not None]


def _migrations() -> Iterator[tuple[int, str, str]]:
    folder = resources.files("permafrost.catalog") / "migrations"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            yield int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()
