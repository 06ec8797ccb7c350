"""The scheduler as its container runs it: `permafrost scheduler` processes, a real metadata store.

Schedules are driven with six-field cron strings (seconds first), so jobs fire within seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from permafrost.config.schedule import parse, schedules
from permafrost.config.settings import Settings
from permafrost.errors import ConfigError
from tests.conftest import PERMAFROST, run
from tests.helpers import loads, objects, pending_uploads
from tests.services import Cluster, S3Server

QUIET = {
    "BACKUP_SCHEDULE": "off",
    "COMPLIANCE_SCHEDULE": "off",
    "VERIFY_SCHEDULE": "off",
    "CLEANUP_SCHEDULE": "off",
    "LIFECYCLE_SCHEDULE": "off",
    "LIFECYCLE_APPLY": "false",
}


# --- schedules, without a process ----------------------------------------------------------

VARIABLES = {
    "BACKUP_SCHEDULE": "backup",
    "BASE_BACKUP_SCHEDULE": "base_backup",
    "INCREMENTAL_SCHEDULE": "incremental_backup",
    "VERIFY_SCHEDULE": "verify",
    "CLEANUP_SCHEDULE": "retention",
    "COMPLIANCE_SCHEDULE": "compliance_backup",
    "LIFECYCLE_SCHEDULE": "lifecycle",
    "PITR_DRILL_SCHEDULE": "pitr_drill",
}


@pytest.mark.parametrize("variable", sorted(VARIABLES))
def test_each_schedule_variable_parses_into_the_next_run(variable: str) -> None:
    monday = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday
    env = {variable: "15 3 * * 1", "WAL_ARCHIVING": "push", "TZ": "Europe/Berlin"}
    job = schedules(Settings.from_env(env))[VARIABLES[variable]]
    assert job.next_after(monday) == datetime(2026, 11, 23, 2, 15, tzinfo=UTC)  # 03:15 in Berlin
    assert (
        schedules(Settings.from_env({**env, variable: "off"}))[VARIABLES[variable]].enabled is False
    )
    with pytest.raises(ConfigError, match=variable):
        schedules(Settings.from_env({**env, variable: "15 3 * *"}))
    with pytest.raises(ConfigError, match=variable):
        schedules(Settings.from_env({**env, variable: "61 3 * * *"}))


def test_the_defaults_are_the_reference_deployments() -> None:
    jobs = schedules(Settings.from_env({"WAL_ARCHIVING": "push"}))
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)  # a Sunday, noon
    assert jobs["backup"].next_after(now) == datetime(2026, 11, 23, 2, tzinfo=UTC)
    # crontab's 0 is Sunday (APScheduler 3 alone would read it as Monday).
    assert jobs["verify"].next_after(now) == datetime(2026, 11, 29, 3, tzinfo=UTC)
    assert jobs["retention"].next_after(now) == datetime(2026, 11, 23, 4, tzinfo=UTC)
    assert jobs["compliance_backup"].next_after(now) == datetime(2026, 12, 1, 1, tzinfo=UTC)
    assert jobs["base_backup"].next_after(now) == datetime(2026, 11, 29, 1, 30, tzinfo=UTC)
    after_noon = now.replace(minute=1)
    assert jobs["incremental_backup"].next_after(after_noon) == datetime(
        2026, 11, 22, 18, tzinfo=UTC
    )
    # Base backups only with WAL archiving on; incrementals only where base backups run.
    assert schedules(Settings.from_env({}))["base_backup"].enabled is False
    # PITR drills on Saturday at 05:00, only where base backups and WAL archiving run.
    assert jobs["pitr_drill"].next_after(now) == datetime(2026, 11, 28, 5, tzinfo=UTC)
    assert schedules(Settings.from_env({}))["pitr_drill"].enabled is False
    assert schedules(Settings.from_env({}))["incremental_backup"].enabled is False
    no_base = {"WAL_ARCHIVING": "push", "BASE_BACKUP_SCHEDULE": "off"}
    assert schedules(Settings.from_env(no_base))["incremental_backup"].enabled is False
    assert schedules(Settings.from_env(no_base))["pitr_drill"].enabled is False


def test_a_run_missed_many_times_is_found_once() -> None:
    every_hour = parse("BACKUP_SCHEDULE", "0 * * * *", "UTC")
    now = datetime(2026, 11, 22, 12, 30, tzinfo=UTC)
    assert every_hour.previous_before(now, timedelta(hours=10)) == datetime(
        2026, 11, 22, 12, tzinfo=UTC
    )
    assert every_hour.previous_before(now, timedelta(minutes=20)) is None  # outside the grace


def test_scheduler_check_prints_the_schedules_and_refuses_a_bad_one(env: dict[str, str]) -> None:
    server = env["DATABASE_URL"].rsplit("/", 1)[0]  # DB_NAME lists the databases
    result = run(
        {**env, "DATABASE_URL": server, "DB_NAME": "shop,crm", "WAL_ARCHIVING": "push"},
        "scheduler",
        "--check",
    )
    lines = result.stdout.splitlines()
    assert "backup:shop: 0 2 * * * (BACKUP_SCHEDULE)" in lines
    assert "compliance_backup:crm: 0 1 1 * * (COMPLIANCE_SCHEDULE)" in lines
    assert "base_backup:main: 30 1 * * 0 (BASE_BACKUP_SCHEDULE)" in lines
    assert "wal_switch:main: every minute (WAL archived by archive_command)" in lines
    bad = run({**env, "VERIFY_SCHEDULE": "every sunday"}, "scheduler", "--check", check=False)
    assert bad.returncode == 2 and "VERIFY_SCHEDULE" in bad.stderr


def test_the_hour_that_repeats_when_clocks_go_back_is_not_a_trap() -> None:
    from zoneinfo import ZoneInfo

    nightly = parse("BACKUP_SCHEDULE", "30 2 * * *", "Europe/Berlin")
    now = datetime(2024, 10, 27, 5, tzinfo=ZoneInfo("Europe/Berlin"))  # after 02:00-03:00 twice
    missed = nightly.previous_before(now, timedelta(hours=6))
    assert missed is not None and missed <= now.astimezone(UTC)
    assert nightly.longest_gap(datetime(2024, 10, 20, tzinfo=UTC)) <= timedelta(hours=25)


def test_bad_settings_are_refused_by_name() -> None:
    for env, name in (
        ({"TZ": "Mars/Olympus"}, "TZ"),
        ({"STOP_GRACE_PERIOD": "soon"}, "STOP_GRACE_PERIOD"),
        ({"WAL_ARCHIVING": "maybe"}, "WAL_ARCHIVING"),
        ({"COLD_STORAGE_CLASS": "DEEP_ARCHIVE"}, "COLD_STORAGE_CLASS"),
        ({"LIFECYCLE_APPLY": "perhaps"}, "LIFECYCLE_APPLY"),
    ):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env(env)


# --- scheduler processes -------------------------------------------------------------------


class Scheduler:
    """`permafrost scheduler` as a child process, its output in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.handle = log.open("ab")
        self.proc = subprocess.Popen(
            [PERMAFROST, "scheduler"], env=env, stdout=self.handle, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, timeout: float = 90) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.handle.close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.handle.close()


@pytest.fixture
def schedulers(tmp_path: Path) -> Iterator[Callable[..., Scheduler]]:
    started: list[Scheduler] = []

    def start(env: dict[str, str], **extra: str) -> Scheduler:
        log = tmp_path / f"scheduler-{len(started)}.log"
        process = Scheduler({**env, **QUIET, **extra}, log)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.kill()


def query(pg: Cluster, database: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg.url(database), autocommit=True) as conn:
        conn.execute("SET search_path TO permafrost")
        return conn.execute(sql, params).fetchall()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except psycopg.errors.UndefinedTable:
            value = None  # the scheduler has not migrated the store yet
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def leader(pg: Cluster, metadata_db: str) -> str | None:
    rows = query(
        pg,
        metadata_db,
        "SELECT instance FROM heartbeats WHERE role = 'leader'"
        " AND beat_at > now() - interval '90 s' ORDER BY beat_at DESC",
    )
    return rows[0][0] if rows else None


def test_jobs_fire_on_their_schedules_and_run_now_tasks_are_taken(
    env: dict[str, str], pg: Cluster, metadata_db: str, source_db: str, schedulers: Any
) -> None:
    every = "*/3 * * * * *"
    process = schedulers(
        env,
        DB_NAME=source_db,
        BACKUP_SCHEDULE=every,
        COMPLIANCE_SCHEDULE="1-59/20 * * * * *",
        VERIFY_SCHEDULE=every,
        CLEANUP_SCHEDULE=every,
        LIFECYCLE_SCHEDULE=every,
        LIFECYCLE_APPLY="true",
    )
    wanted = {"backup", "compliance_backup", "verify", "retention", "lifecycle_apply", "lifecycle"}

    def fired() -> bool:
        rows = query(pg, metadata_db, "SELECT DISTINCT job FROM job_runs WHERE status <> 'running'")
        return wanted <= {row[0] for row in rows}

    wait_for(fired, "every job to run once", timeout=90)
    task = query(
        pg,
        metadata_db,
        "INSERT INTO tasks (kind, payload, requested_by) VALUES ('backup', %s, 'test')"
        " RETURNING id",
        psycopg.types.json.Jsonb({"database": source_db}),
    )[0][0]
    query(pg, metadata_db, "SELECT pg_notify('permafrost_tasks', 'backup')")
    status, result = wait_for(
        lambda: next(
            iter(
                query(
                    pg,
                    metadata_db,
                    "SELECT status, result FROM tasks WHERE id = %s AND status <> 'running'"
                    " AND status <> 'queued'",
                    task,
                )
            ),
            None,
        ),
        "the backup task to finish",
    )
    assert status == "succeeded", process.output()
    backup_id = result["backups"][0]["backup_id"]
    wait_for(
        lambda: query(
            pg,
            metadata_db,
            "SELECT 1 FROM job_runs WHERE job = 'backup' AND details->>'trigger' = 'schedule'",
        ),
        "a backup on its schedule",
    )
    triggers = dict(
        query(
            pg,
            metadata_db,
            "SELECT backup_id, details->>'trigger' FROM job_runs WHERE job = 'backup'",
        )
    )
    assert triggers[backup_id] == "task"
    # The verify job queues a test restore of the newest backup: the first verify may have run
    # before any backup completed, so wait for one that ran after.
    wait_for(
        lambda: query(pg, metadata_db, "SELECT 1 FROM tasks WHERE kind = 'test_restore'"),
        "the verify job to queue a test restore",
    )
    succeeded = {
        row[0]
        for row in query(pg, metadata_db, "SELECT job FROM job_runs WHERE status = 'succeeded'")
    }
    assert wanted <= succeeded, process.output()
    shown = loads(run(env, "status", "--json").stdout)
    assert shown["scheduler"]["alive"] is True
    assert shown["databases"][source_db]["backup"]["last"]["status"] in ("succeeded", "running")
    assert shown["databases"][source_db]["backup"]["next_run"] is not None
    text = run(env, "status").stdout
    assert "scheduler: alive" in text and source_db in text
    assert process.stop() == 0
    roles = query(pg, metadata_db, "SELECT role FROM heartbeats")
    assert roles == [("stopped",)]
    assert "stopped cleanly" in run(env, "status").stdout


def test_two_schedulers_elect_one_leader_and_the_standby_takes_over(
    env: dict[str, str], pg: Cluster, metadata_db: str, schedulers: Any
) -> None:
    first = schedulers(env)
    wait_for(lambda: leader(pg, metadata_db), "a leader")
    assert leader(pg, metadata_db).endswith(f":{first.pid}")
    second = schedulers(env)
    wait_for(
        lambda: query(pg, metadata_db, "SELECT 1 FROM heartbeats WHERE role = 'standby'"),
        "the second scheduler to stand by",
    )
    assert leader(pg, metadata_db).endswith(f":{first.pid}")
    assert "waiting as a standby" in second.output()
    killed_at = time.monotonic()
    first.kill()  # kill -9: no goodbye, the server drops its session and its lock
    wait_for(
        lambda: (leader(pg, metadata_db) or "").endswith(f":{second.pid}"),
        "the standby to take over",
        timeout=60,
    )
    assert time.monotonic() - killed_at < 60
    status = loads(run(env, "status", "--json").stdout)
    assert status["scheduler"]["leader"].endswith(f":{second.pid}")
    assert status["scheduler"]["alive"] is True
    assert second.stop() == 0


def installed_long_ago(env: dict[str, str], pg: Cluster, metadata_db: str) -> None:
    """The metadata store as if set up two years ago: a scheduled time it has missed since
    (1 January) is caught up; one before its install would not be."""
    run(env, "catalog", "migrate")
    with psycopg.connect(pg.url(metadata_db), autocommit=True) as conn:
        conn.execute("UPDATE permafrost.schema_migrations SET applied_at = now() - interval '2y'")


def test_a_missed_run_is_run_once_not_once_per_miss(
    env: dict[str, str], pg: Cluster, metadata_db: str, source_db: str, schedulers: Any
) -> None:
    # Yearly on 1 January: the scheduler "was down" for every run since, within the grace.
    extra = {"DB_NAME": source_db, "BACKUP_SCHEDULE": "0 0 1 1 *", "SCHEDULE_MISFIRE_GRACE": "400d"}
    installed_long_ago(env, pg, metadata_db)
    first = schedulers(env, **extra)
    wait_for(
        lambda: query(pg, metadata_db, "SELECT 1 FROM job_runs WHERE status = 'succeeded'"),
        "the catch-up backup",
    )
    assert "missed its run" in first.output()
    assert first.stop() == 0
    second = schedulers(env, **extra)
    wait_for(lambda: leader(pg, metadata_db), "the second scheduler to lead")
    time.sleep(2)
    assert second.stop() == 0
    runs = query(pg, metadata_db, "SELECT details->>'trigger' FROM job_runs WHERE job = 'backup'")
    assert runs == [("catch-up",)]
    assert "missed its run" not in second.output()


BACKUP_LOCK = 0x6261636B


def test_an_overlapping_backup_waits_or_refuses_and_says_which(
    env: dict[str, str], pg: Cluster, metadata_db: str, source_db: str
) -> None:
    run(env, "catalog", "migrate")
    holder = psycopg.connect(pg.url(metadata_db), autocommit=True)
    holder.execute("SET search_path TO permafrost")
    holder.execute(
        "INSERT INTO job_runs (job, database, backup_id, status, details)"
        " VALUES ('backup', %s, '20261122T020000Z-abcdef', 'running', %s)",
        (source_db, psycopg.types.json.Jsonb({"trigger": "schedule", "by": "scheduler@db1"})),
    )
    holder.execute(
        "SELECT pg_advisory_lock(%s, hashtext(%s))", (BACKUP_LOCK, f"logical:{source_db}")
    )
    refused = run(env, "backup", "--no-wait", check=False)
    assert refused.returncode == 11
    assert "already running" in refused.stderr
    assert (
        "20261122T020000Z-abcdef, schedule" in refused.stderr and "scheduler@db1" in refused.stderr
    )
    waiting = subprocess.Popen(
        [PERMAFROST, "backup", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiting.stderr is not None
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(waiting.stderr or []), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120  # until it says it waits (its start is slow under load)
    while not any("waiting for it to finish" in line for line in said):
        assert waiting.poll() is None, "".join(said)
        assert time.monotonic() < deadline, "".join(said)
        time.sleep(0.2)
    time.sleep(1)
    assert waiting.poll() is None  # it waits while the other backup holds the lock
    holder.close()  # the other backup ends
    assert waiting.stdout is not None
    out = waiting.stdout.read()
    waiting.wait(timeout=120)
    reader.join(timeout=30)
    assert waiting.returncode == 0, "".join(said)
    assert loads(out)["database"] == source_db


def test_sigterm_during_a_backup_aborts_it_cleanly_after_the_grace_period(
    env: dict[str, str],
    pg: Cluster,
    metadata_db: str,
    source_db: str,
    s3: S3Server,
    bucket: str,
    schedulers: Any,
) -> None:
    # An open transaction holding a table lock makes pg_dump wait: the backup is "running".
    blocker = psycopg.connect(pg.url(source_db))
    blocker.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
    extra = {
        "DB_NAME": source_db,
        "BACKUP_SCHEDULE": "0 0 1 1 *",
        "SCHEDULE_MISFIRE_GRACE": "400d",
        "STOP_GRACE_PERIOD": "2s",
    }
    installed_long_ago(env, pg, metadata_db)
    process = schedulers(env, **extra)
    wait_for(
        lambda: query(pg, metadata_db, "SELECT 1 FROM job_runs WHERE job = 'backup'"),
        "the backup to start",
    )
    time.sleep(1)
    process.proc.send_signal(signal.SIGTERM)
    time.sleep(3)  # past the grace period: the scheduler has asked the backup to abort
    release = threading.Timer(0, blocker.close)
    release.start()
    assert process.stop() == 0
    run_status, error = query(
        pg, metadata_db, "SELECT status, error FROM job_runs WHERE job = 'backup'"
    )[0]
    assert run_status == "aborted", process.output()
    assert "STOP_GRACE_PERIOD" in error
    assert query(pg, metadata_db, "SELECT status FROM backups") == [("failed",)]
    assert [k for k in objects(s3, bucket, "backups/") if "/standard/" in k] == []
    assert pending_uploads(s3, bucket) == []
    assert "grace period over: aborting" in process.output()


def test_a_backup_running_at_sigterm_finishes_within_the_grace_period(
    env: dict[str, str],
    pg: Cluster,
    metadata_db: str,
    source_db: str,
    s3: S3Server,
    bucket: str,
    schedulers: Any,
) -> None:
    blocker = psycopg.connect(pg.url(source_db))
    blocker.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
    installed_long_ago(env, pg, metadata_db)
    process = schedulers(
        env,
        DB_NAME=source_db,
        BACKUP_SCHEDULE="0 0 1 1 *",
        SCHEDULE_MISFIRE_GRACE="400d",
        STOP_GRACE_PERIOD="60s",
    )
    wait_for(
        lambda: query(pg, metadata_db, "SELECT 1 FROM job_runs WHERE job = 'backup'"),
        "the backup to start",
    )
    process.proc.send_signal(signal.SIGTERM)
    time.sleep(1)
    blocker.close()
    assert process.stop() == 0
    assert query(pg, metadata_db, "SELECT status FROM job_runs WHERE job = 'backup'") == [
        ("succeeded",)
    ]
    assert any(k.endswith("manifest.json") for k in objects(s3, bucket, "backups/standard/"))
    assert os.path.exists(process.log)
