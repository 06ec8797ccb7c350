"""Every long-running service outlives a metadata-store restart and writes a heartbeat; a
missing heartbeat, and a task left queued too long, alert by email. Real processes, a real
restart of a real cluster, a real SMTP server; time passing is played by moving timestamps."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitor.alerts.evaluator import Evaluator
from tests.conftest import PERMAFROST, run
from tests.helpers import loads
from tests.services import Cluster
from tests.test_alerts import SMTPServer, make_settings, prepare


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.stop()


@pytest.fixture
def store() -> Iterator[Cluster]:
    """A metadata store of the test's own, so restarting it disturbs no other test."""
    cluster = Cluster("liveness-store").start()
    yield cluster
    cluster.destroy()


def until(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or check}")


def worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PERMAFROST, "restore-worker", "--poll", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def worker_rows(store: Cluster, db: str) -> list[tuple[Any, ...]]:
    return store.execute(
        "SELECT instance, stopped_at, beat_at FROM permafrost.service_heartbeats"
        " WHERE service = 'worker' ORDER BY beat_at DESC",
        db,
    )


def test_a_vanished_worker_alerts_by_email_and_a_cleanly_stopped_one_does_not(
    env: dict[str, str], pg: Cluster, metadata_db: str, smtp: SMTPServer
) -> None:
    settings = make_settings(env, smtp.port)
    catalog = prepare(settings)
    evaluator = Evaluator(settings)
    outcome = evaluator.run_once()
    assert outcome is not None and "service_dead" in outcome.findings.evaluated
    assert outcome.findings == [], "a worker never deployed is no alarm"

    first = worker(env)
    until(lambda: worker_rows(pg, metadata_db), what="the worker's heartbeat")
    outcome = evaluator.run_once()
    assert outcome is not None and outcome.findings == []
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    catalog.conn.execute("UPDATE service_heartbeats SET beat_at = now() - interval '10 minutes'")
    evaluator.run_once()
    [message] = smtp.mailbox.about("service_dead:worker")
    assert str(message["Subject"]).startswith(
        "[permafrost] CRITICAL: no restore worker has written a heartbeat for 10 minutes"
    ), message["Subject"]
    assert f":{first.pid}" in str(message["Subject"])

    second = worker(env)  # a new worker resolves it
    until(lambda: len(worker_rows(pg, metadata_db)) == 2, what="the second worker's heartbeat")
    outcome = evaluator.run_once()
    assert outcome is not None and outcome.applied.resolved == ["service_dead:worker"]
    second.send_signal(signal.SIGTERM)
    output = second.communicate(timeout=30)[0]
    assert second.returncode == 0, output
    newest = worker_rows(pg, metadata_db)[0]
    assert newest[0].endswith(f":{second.pid}") and newest[1] is not None, "marked stopped"
    catalog.conn.execute(
        "UPDATE service_heartbeats SET beat_at = beat_at - interval '1 hour',"
        " stopped_at = stopped_at - interval '1 hour'"
    )
    outcome = evaluator.run_once()
    assert outcome is not None and outcome.findings == [], "a clean stop is no alarm"
    assert len(smtp.mailbox.about("service_dead:worker")) == 2  # the alert and its resolution


def test_a_task_queued_too_long_pages_saying_which_and_since_when(
    env: dict[str, str], pg: Cluster, metadata_db: str, smtp: SMTPServer
) -> None:
    settings = make_settings(env, smtp.port)
    catalog = prepare(settings)
    record = loads(run(env, "backup", "--json").stdout)
    task = loads(run(env, "verify", record["id"], "--queue", "--json").stdout)["task_id"]
    evaluator = Evaluator(settings)
    outcome = evaluator.run_once()
    assert outcome is not None and outcome.findings == [], "queued 30 minutes ago, not yet"

    catalog.conn.execute("UPDATE tasks SET created_at = now() - interval '40 minutes'")
    queued_at = catalog.task(task).created_at  # type: ignore[union-attr]
    evaluator.run_once()
    [message] = smtp.mailbox.about("task_stuck")
    subject = str(message["Subject"])
    assert subject.startswith(
        f"[permafrost] CRITICAL: 1 task(s) queued for over 30 minutes: {task} (verify of "
        f"{record['id']}), the oldest since {queued_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    ), subject
    assert "no restore worker has ever run" in subject

    taker = worker(env)
    try:
        until(
            lambda: (
                pg.execute(f"SELECT status FROM permafrost.tasks WHERE id = {task}", metadata_db)
                == [("succeeded",)]
            ),
            what="the worker to run the task",
        )
    finally:
        taker.send_signal(signal.SIGTERM)
        taker.communicate(timeout=30)
    outcome = evaluator.run_once()
    assert outcome is not None and outcome.applied.resolved == ["task_stuck"]

    # A `backup` task is the scheduler's to take: said so, as a warning (scheduler_dead pages).
    catalog.conn.execute(
        "INSERT INTO tasks (kind, payload, created_at)"
        " VALUES ('backup', '{}', now() - interval '40 minutes')"
    )
    outcome = evaluator.run_once()
    assert outcome is not None
    [finding] = [f for f in outcome.findings if f.key == "task_stuck"]
    assert finding.severity == "warning" and "taken by the leading scheduler" in finding.summary


def test_the_monitor_records_its_own_heartbeat(
    env: dict[str, str], pg: Cluster, metadata_db: str
) -> None:
    settings = make_settings(env, None)
    prepare(settings)
    assert Evaluator(settings).run_once() is not None
    rows = pg.execute(
        "SELECT instance FROM permafrost.service_heartbeats WHERE service = 'monitor'", metadata_db
    )
    assert len(rows) == 1 and rows[0][0].endswith(f":{os.getpid()}")


def test_the_scheduler_leads_again_after_a_metadata_store_restart(
    env: dict[str, str], store: Cluster, tmp_path: Any
) -> None:
    meta = store.create_database("meta")
    env = {
        **env,
        "METADATA_DATABASE_URL": store.url(meta),
        **{
            name: "off"
            for name in (
                "BACKUP_SCHEDULE",
                "COMPLIANCE_SCHEDULE",
                "VERIFY_SCHEDULE",
                "CLEANUP_SCHEDULE",
                "LIFECYCLE_SCHEDULE",
            )
        },
        "LIFECYCLE_APPLY": "false",
    }
    log = tmp_path / "scheduler.log"
    with log.open("wb") as handle:
        scheduler = subprocess.Popen(
            [PERMAFROST, "scheduler"], env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    try:

        def leader_beat() -> datetime | None:
            try:
                rows = store.execute(
                    "SELECT beat_at FROM permafrost.heartbeats WHERE role = 'leader'", meta
                )
            except Exception:
                return None
            return rows[0][0] if rows else None

        until(leader_beat, what=f"a leader: {log}")
        store.stop()  # the metadata store restarts, as `pg_ctl restart` does
        time.sleep(2)
        store.start()
        restarted = datetime.now(UTC) - timedelta(seconds=1)
        until(
            lambda: (beat := leader_beat()) is not None and beat > restarted,
            timeout=120,
            what="a leader's heartbeat after the restart",
        )
        assert scheduler.poll() is None, log.read_text()
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(timeout=90)
    text = log.read_text()
    assert "lost the metadata store" in text and "is the leader" in text, text
    assert "Traceback" not in text, text
    assert scheduler.returncode == 0, text


def test_the_monitors_alert_loop_evaluates_again_after_a_metadata_store_restart(
    env: dict[str, str], store: Cluster, smtp: SMTPServer
) -> None:
    meta = store.create_database("meta")
    settings = make_settings(
        {**env, "METADATA_DATABASE_URL": store.url(meta)}, smtp.port, ALERT_CHECK_INTERVAL="1"
    )
    catalog = prepare(settings)
    catalog.close()
    evaluator = Evaluator(settings)
    evaluator.start()
    try:
        until(
            lambda: store.execute(
                "SELECT 1 FROM permafrost.service_heartbeats WHERE service = 'monitor'", meta
            ),
            what="a first evaluation",
        )
        store.stop()
        time.sleep(3)  # evaluations fail meanwhile
        store.start()
        store.execute(
            "INSERT INTO permafrost.heartbeats (instance, role, host, pid, beat_at)"
            " VALUES ('sched-1:41', 'leader', 'sched-1', 41, now() - interval '7 minutes')",
            meta,
        )
        until(lambda: smtp.mailbox.about("scheduler_dead"), what="the alert after the restart")
        assert evaluator.alive
    finally:
        evaluator.stop()


def test_status_shows_the_workers_and_the_monitor_from_their_heartbeats(
    env: dict[str, str], pg: Cluster, metadata_db: str
) -> None:
    settings = make_settings(env, None)
    prepare(settings)
    assert Evaluator(settings).run_once() is not None
    taker = worker(env)
    try:
        until(lambda: worker_rows(pg, metadata_db), what="the worker's heartbeat")
        text = run(env, "status").stdout
        assert f"restore workers: alive; {socket.gethostname()}:{taker.pid} (" in text, text
    finally:
        taker.send_signal(signal.SIGTERM)
        taker.communicate(timeout=30)
    text = run(env, "status").stdout
    assert f"restore workers: none running; {socket.gethostname()}:{taker.pid} stopped" in text
    assert f"monitor: alerts last evaluated by {socket.gethostname()}:{os.getpid()} " in text
    shown = loads(run(env, "status", "--json").stdout)["services"]
    assert {s["service"] for s in shown} == {"worker", "monitor"}
