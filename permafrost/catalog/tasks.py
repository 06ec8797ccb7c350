"""The task queue: verifications, test restores, restores and "run now" backups, claimed by
workers.

A task is claimed with FOR UPDATE SKIP LOCKED, so two workers never take the same one, and held
by a session advisory lock on its id, so a task whose worker died can be told apart and put
back. A queued task is announced on TASK_CHANNEL; `TaskListener` sleeps until one is.

The limits hold across workers because they are kept in the claim itself: a backup task carries
its source label and its subject (the backup lock it will take, migration 0021), and a claim
takes a task only when no running task has its subject and fewer than `per_source` running tasks
have its source. Claims take CLAIM_LOCK for their transaction, so two claims never count the
same running tasks: each claim's statement begins after the previous one committed. A claim is
a millisecond's work, so serialising them costs nothing, and one lock needs no lock order.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from permafrost.catalog.db import CONNECT_OPTIONS, Rows, db_errors
from permafrost.catalog.records import TaskRecord
from permafrost.config.settings import Secret

TASK_CHANNEL = "permafrost_tasks"
TASK_LOCK = 0x7461736B  # 'task'
CLAIM_LOCK = 0x636C616D  # 'clam': held by each claim's transaction
UNLIMITED = 2**31 - 1
_CLAIM = """
WITH busy AS (  -- the sources at their limit and the subjects taken, read once per claim
    SELECT source FROM tasks WHERE status = 'running' AND source IS NOT NULL
    GROUP BY source HAVING count(*) >= %(per_source)s
), taken AS (
    SELECT subject FROM tasks WHERE status = 'running' AND subject IS NOT NULL
)
UPDATE tasks SET status = 'running', started_at = now(), worker = %(worker)s,
       attempts = attempts + 1
WHERE id = (
    SELECT t.id FROM tasks t
    WHERE t.status = 'queued' AND t.kind = ANY(%(kinds)s)
      AND (t.subject IS NULL OR t.subject NOT IN (SELECT subject FROM taken))
      AND (t.source IS NULL OR t.source NOT IN (SELECT source FROM busy))
    ORDER BY t.id FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING *
"""


class TaskRows(Rows):
    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        requested_by: str,
        *,
        source: str | None = None,
        subject: str | None = None,
    ) -> int:
        """Queue a task and wake the workers (the NOTIFY is delivered at commit)."""
        with self._errors("queue a task"), self.conn.transaction():
            row = self.conn.execute(
                "INSERT INTO tasks (kind, payload, requested_by, source, subject)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (kind, Jsonb(payload), requested_by, source, subject),
            ).fetchone()
            self.conn.execute("SELECT pg_notify(%s, %s)", (TASK_CHANNEL, kind))
        assert row is not None
        return int(row[0])

    def queued_like(self, kind: str, subject: str, job: str) -> int | None:
        """A task of this kind, subject and job (payload's `job`) still waiting, if any: a
        schedule that fires again while its backup waits does not queue it twice."""
        with self._errors("read the task queue"):
            row = self.conn.execute(
                "SELECT id FROM tasks WHERE status = 'queued' AND kind = %s AND subject = %s"
                " AND payload->>'job' = %s ORDER BY id LIMIT 1",
                (kind, subject, job),
            ).fetchone()
        return int(row[0]) if row else None

    def claim(
        self, kinds: list[str], worker: str, per_source: int = UNLIMITED
    ) -> TaskRecord | None:
        """The oldest queued task of these kinds that the limits allow, now ours; locked so no
        one else takes it.

        The session-level advisory lock on the task id stays while this connection lives: a
        worker that dies releases it, and `requeue_orphans` then puts the task back.
        """
        params = {"worker": worker, "kinds": kinds, "per_source": per_source}
        with (
            self._errors("claim a task"),
            self.conn.transaction(),
            self.conn.cursor(row_factory=class_row(TaskRecord)) as cur,
        ):
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK,))
            task = cur.execute(_CLAIM, params).fetchone()
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
            # A finished task frees its subject and a place on its source: a worker that left
            # a task queued for the limits looks again.
            self.conn.execute("SELECT pg_notify(%s, 'finished')", (TASK_CHANNEL,))

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

    def tasks_on_backup(self, backup_id: str, kinds: tuple[str, ...]) -> list[int]:
        """The queued or running tasks of these kinds that read this backup, oldest first."""
        with self._errors("read the task queue"):
            rows = self.conn.execute(
                "SELECT id FROM tasks WHERE status IN ('queued', 'running')"
                " AND kind = ANY(%s) AND payload->>'backup_id' = %s ORDER BY id",
                (list(kinds), backup_id),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def queued_longer_than(self, seconds: float, limit: int = 20) -> list[dict[str, Any]]:
        """Tasks still queued `seconds` after they were queued, oldest first (at most `limit`),
        each with its age on the server's clock and how many such tasks there are in all."""
        with self._errors("read the task queue"), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT id, kind, payload->>'backup_id' AS backup_id,"
                " payload->>'database' AS database, source, created_at,"
                " extract(epoch FROM now() - created_at)::float AS age_seconds,"
                " count(*) OVER () AS total FROM tasks"
                " WHERE status = 'queued' AND created_at < now() - make_interval(secs => %s)"
                " ORDER BY id LIMIT %s",
                (seconds, limit),
            ).fetchall()

    def queue_depth(self) -> dict[str, int]:
        """How many tasks wait and run, by status (`permafrost status` with workers)."""
        with self._errors("read the task queue"):
            rows = self.conn.execute(
                "SELECT status, count(*) FROM tasks WHERE status IN ('queued', 'running')"
                " GROUP BY status"
            ).fetchall()
        return {"queued": 0, "running": 0, **{str(s): int(n) for s, n in rows}}

    def task(self, task_id: int) -> TaskRecord | None:
        with (
            self._errors("read a task"),
            self.conn.cursor(row_factory=class_row(TaskRecord)) as cur,
        ):
            return cur.execute("SELECT * FROM tasks WHERE id = %s", (task_id,)).fetchone()


class TaskListener:
    """A connection of its own that LISTENs on TASK_CHANNEL, to sleep until a task is queued.

    A lost connection is CatalogUnavailable, like every other store error, so a worker can wait
    the outage out and listen again.
    """

    def __init__(self, url: Secret) -> None:
        with db_errors("listen for tasks"):
            self.conn = psycopg.connect(url.reveal(), **CONNECT_OPTIONS)
            self.conn.execute(f"LISTEN {TASK_CHANNEL}")

    def wait(self, seconds: float) -> None:
        """Return when a task is announced, or after `seconds`."""
        with db_errors("wait for tasks"):
            for _ in self.conn.notifies(timeout=seconds, stop_after=1):
                pass

    def close(self) -> None:
        self.conn.close()
