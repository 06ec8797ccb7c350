"""Job runs: the scheduler's and the CLI's memory of what ran, when, and how it ended.

`RecordedRun` is the one way a run is written: started, then succeeded, failed or aborted,
with "aborted or failed" decided by `outcome_of` and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from permafrost.catalog.db import Rows, filters

T = TypeVar("T")

# 'back': one backup of a database (or cluster) at a time, a session advisory lock on
# (BACKUP_LOCK, hashtext(backup_lock_name(kind, database))) held by the backup's own catalog
# session. Its absence is how a reader knows a `running` backup's process is gone.
BACKUP_LOCK = 0x6261636B
INTERRUPTED = (
    "the process taking this backup ended before it finished "
    "(killed, or its metadata session was lost)"
)


def backup_lock_name(kind: str, database: str) -> str:
    return f"{kind}:{database}"


# The newest run of each (job, database): the keys from the tallies, then one descent of
# job_runs_latest each, so the cost grows with the number of jobs, not of runs.
_LAST_RUNS = """
WITH keys AS (  -- every (job, database) that has a run, from the tallies (migration 0025)
    SELECT job, database AS db FROM job_run_tallies
    WHERE runs > 0 AND (%(only)s::text[] IS NULL OR database = '' OR database = ANY(%(only)s))
    GROUP BY job, database
)
SELECT r.* FROM keys k, LATERAL (
    SELECT id, job, database, backup_id, started_at, finished_at, status, error
    FROM job_runs j WHERE j.job = k.job AND coalesce(j.database, '') = k.db
    ORDER BY started_at DESC, id DESC LIMIT 1) r
ORDER BY r.job, r.database
"""


class JobName(StrEnum):
    """What a job run is of, as stored in job_runs.job."""

    BACKUP = "backup"
    COMPLIANCE_BACKUP = "compliance_backup"
    BASE_BACKUP = "base_backup"
    INCREMENTAL_BACKUP = "incremental_backup"  # an incremental base backup (PostgreSQL 17+)
    VERIFY = "verify"
    RETENTION = "retention"
    LIFECYCLE = "lifecycle"
    LIFECYCLE_APPLY = "lifecycle_apply"
    WAL_SWITCH = "wal_switch"
    PITR_DRILL = "pitr_drill"  # queues a drill for the restore worker (restore/drills/)
    COPY = "copy"  # backups and WAL to the copy destinations (copies/), recorded when it did any


BACKUP_JOBS = (
    JobName.BACKUP,
    JobName.COMPLIANCE_BACKUP,
    JobName.BASE_BACKUP,
    JobName.INCREMENTAL_BACKUP,
)
BASE_JOBS = (JobName.BASE_BACKUP, JobName.INCREMENTAL_BACKUP)  # their lock is the cluster's


class RunStatus(StrEnum):
    """A job run's status, as stored in job_runs.status."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


class Aborted(Exception):
    """A job stopped on purpose (the scheduler is shutting down and its grace ran out)."""


def outcome_of(exc: BaseException) -> RunStatus:
    """How a run that raised `exc` ended: stopped on purpose is aborted, anything else failed."""
    if isinstance(exc, KeyboardInterrupt | SystemExit | Aborted):
        return RunStatus.ABORTED
    return RunStatus.FAILED


class JobRows(Rows):
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
                (str(status), error, Jsonb(details or {}), run_id),
            )

    def job_runs(self, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        where, params = filters(job=job)
        query = "SELECT * FROM job_runs" + (" WHERE " + " AND ".join(where) if where else "")
        with self._errors("read job runs"), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query + " ORDER BY id DESC LIMIT %s", [*params, limit]).fetchall()

    def last_job_runs(self, only: list[str] | None = None) -> list[dict[str, Any]]:
        """The newest run of each job for each database (database NULL for global jobs), without
        its details (a fleet's 1,000 runs' JSON was a tenth of the overview: bench/fleet.py);
        with `only`, those databases' runs and the global jobs' (no database)."""
        with self._errors("read job runs"), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(_LAST_RUNS, {"only": only}).fetchall()

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
        with self._errors("read job runs"), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT * FROM job_runs WHERE job = ANY(%s) AND database = %s"
                " AND status = 'running' ORDER BY started_at DESC LIMIT 1",
                (jobs, database),
            ).fetchone()

    def running_runs(self, jobs: list[str]) -> list[dict[str, Any]]:
        with self._errors("read job runs"), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT * FROM job_runs WHERE status = 'running' AND job = ANY(%s) ORDER BY id",
                (jobs,),
            ).fetchall()

    def abandon_run(self, run_id: int, backup_id: str | None, reason: str) -> None:
        """A run whose process died: aborted, and its backup (never committed) interrupted."""
        with self._errors("record an abandoned run"), self.conn.transaction():
            self.conn.execute(
                "UPDATE job_runs SET status = 'aborted', finished_at = now(), error = %s"
                " WHERE id = %s AND status = 'running'",
                (reason, run_id),
            )
            if backup_id:
                self.conn.execute(
                    "UPDATE backups SET status = 'interrupted', error = %s, finished_at = now()"
                    " WHERE id = %s AND status = 'running'",
                    (reason, backup_id),
                )


class Recorder(Protocol):
    """What records a run (a Context): writes when the store answers, warns once when not."""

    def record(self, action: Callable[[JobRows], T], purpose: str) -> T | None: ...


class RecordedRun:
    """One job run, written as it goes: `start`, then `succeeded` or `ended_by(exc)`.

    Every write goes through the recorder, so a metadata store that is down costs the record,
    never the work; `purpose` says in its warning what goes unrecorded.
    """

    def __init__(self, recorder: Recorder, purpose: str, run_id: int | None) -> None:
        self.recorder, self.purpose, self.run_id = recorder, purpose, run_id

    @classmethod
    def start(
        cls,
        recorder: Recorder,
        purpose: str,
        job: str,
        database: str | None,
        backup_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> RecordedRun:
        run_id = recorder.record(
            lambda c: c.job_started(job, database, backup_id, details), purpose
        )
        return cls(recorder, purpose, run_id)

    def succeeded(self, details: dict[str, Any] | None = None) -> None:
        self._finish(RunStatus.SUCCEEDED, None, details)

    def ended_by(self, exc: BaseException, error: str) -> RunStatus:
        """Record the run as ended by `exc` (aborted or failed, with `error`); say which."""
        status = outcome_of(exc)
        self._finish(status, error, None)
        return status

    def _finish(self, status: RunStatus, error: str | None, details: dict[str, Any] | None) -> None:
        run_id = self.run_id
        if run_id is not None:
            self.recorder.record(
                lambda c: c.job_finished(run_id, status, error, details), self.purpose
            )
