"""A backup killed mid-way (`kill -9` of `permafrost backup`) is `interrupted` at once in
`list`, `show`, the API and the dashboard's alerts; `verify` says it never completed."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from monitor.alerts.rules import evaluate
from monitor.app import create_app
from permafrost.config.settings import Settings
from permafrost.context import Context
from tests.conftest import PERMAFROST, run
from tests.helpers import loads
from tests.services import Cluster


def poll(check: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


@pytest.fixture
def table_locked(pg: Cluster, source_db: str) -> Iterator[psycopg.Connection]:
    """A transaction holding an exclusive lock on a table: pg_dump waits on it, so the backup
    is mid-way for as long as the test needs."""
    conn = psycopg.connect(pg.url(source_db))
    conn.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
    yield conn
    conn.rollback()
    conn.close()


def start_backup(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    proc = subprocess.Popen(
        [PERMAFROST, "backup"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def running() -> dict[str, Any] | None:
        rows = loads(run(env, "list", "--json").stdout)
        return next((r for r in rows if r["status"] == "running"), None)

    return proc, poll(running)


def test_it_shows_a_killed_backup_as_interrupted_and_verify_says_it_never_completed(
    env: dict[str, str], source_db: str, table_locked: psycopg.Connection
) -> None:
    proc, alive = start_backup(env)
    assert proc.poll() is None, "the backup is mid-way, waiting for pg_dump"
    assert loads(run(env, "show", alive["id"], "--json").stdout)["status"] == "running"

    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # The dashboard's reads say so first (nothing else has looked since the kill).
    settings = Settings.from_env({**env, "DB_NAME": source_db})
    client = create_app(settings, evaluate=False).test_client()
    metrics = client.get("/metrics").get_data(as_text=True)
    assert (
        f'permafrost_backups{{database="{source_db}",status="interrupted",tier="standard"}} 1.0'
        in metrics
    )
    assert f'permafrost_backup_last_failure_timestamp_seconds{{database="{source_db}"' in metrics
    [served] = client.get("/backups").json["backups"]
    assert served["id"] == alive["id"] and served["status"] == "interrupted"
    page = client.get("/backups", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "interrupted" in page

    [listed] = loads(run(env, "list", "--json").stdout)
    assert listed["id"] == alive["id"] and listed["status"] == "interrupted"
    assert "ended before it finished" in listed["error"]
    table = run(env, "list").stdout
    assert "interrupted" in table and "running" not in table
    shown = run(env, "show", alive["id"]).stdout
    assert "interrupted" in shown
    assert [r["id"] for r in loads(run(env, "list", "--status", "interrupted", "--json").stdout)]

    verify = run(env, "verify", alive["id"], check=False)
    assert verify.returncode == 3
    [line] = verify.stderr.strip().splitlines()
    assert f"backup {alive['id']} never completed (it was interrupted" in line

    # The alerts treat it as a failed backup of the database.
    findings = evaluate(Context(settings), datetime.now(UTC))
    failed = [f for f in findings if f.key == f"backup_failed:{source_db}"]
    assert failed and "ended before it finished" in failed[0].summary
    assert "--status interrupted" in failed[0].runbook


def test_a_backup_still_running_is_not_interrupted(
    env: dict[str, str], source_db: str, table_locked: psycopg.Connection, pg: Cluster
) -> None:
    proc, alive = start_backup(env)
    try:
        for _ in range(3):  # read, and write (another backup's start settles the others)
            assert loads(run(env, "show", alive["id"], "--json").stdout)["status"] == "running"
        settings = Settings.from_env({**env, "DB_NAME": source_db})
        findings = evaluate(Context(settings), datetime.now(UTC))
        assert not [f for f in findings if f.key.startswith("backup_failed:")]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
