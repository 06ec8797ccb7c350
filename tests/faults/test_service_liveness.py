"""Services against their own faults: the restore worker through real restarts of its metadata
store (it waits them out, beats again and runs the next queued verification), and kill -9 of a
scheduler streaming WAL (its wal-receive and pg_receivewal go with it, and the next scheduler
takes the replication slot and archives)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import PERMAFROST, run
from tests.faults.conftest import Ledger
from tests.helpers import loads
from tests.services import Cluster, S3Server
from tests.test_wal_receive import _gone, _pids, _receive_env, wait_for_segment


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the store may be on its way back
            value = check()
            if value:
                return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_worker_killed_by_a_metadata_restart_no_longer_is(
    env: dict[str, str], ledger: Ledger
) -> None:
    store = Cluster("fault-worker-store").start()
    try:
        meta = store.create_database("meta")
        env = {**env, "METADATA_DATABASE_URL": store.url(meta)}
        record = loads(run(env, "backup", "--json").stdout)
        worker = subprocess.Popen(
            [PERMAFROST, "restore-worker", "--poll", "1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        survived = 0
        beat_sql = (
            "SELECT beat_at FROM permafrost.service_heartbeats"
            " WHERE service = 'worker' AND stopped_at IS NULL"
        )
        try:
            for mode in ("fast", "immediate"):  # pg_ctl restart, and a crash of the server
                store.stop(mode)
                time.sleep(2)  # the worker notices while it waits for tasks
                store.start()
                back = datetime.now(UTC) - timedelta(seconds=1)
                task = loads(run(env, "verify", record["id"], "--queue", "--json").stdout)
                status = f"SELECT status FROM permafrost.tasks WHERE id = {task['task_id']}"
                until(lambda q=status: store.execute(q, meta) == [("succeeded",)], 90, "the task")
                until(lambda t=back: store.execute(beat_sql, meta)[0][0] > t, 60, "a heartbeat")
                assert worker.poll() is None, "the worker exited"
                survived += 1
        finally:
            worker.send_signal(signal.SIGTERM)
            output = worker.communicate(timeout=30)[0]
        assert worker.returncode == 0 and "Traceback" not in output, output
    finally:
        store.destroy()
    ledger.record("service liveness: worker through a metadata restart", injected=2, survived=2)
    assert survived == 2


def test_kill_9_of_a_streaming_scheduler_leaves_the_slot_to_the_next_one(
    pg: Cluster, s3: S3Server, tmp_path: Path, ledger: Ledger
) -> None:
    managed = Cluster("fault-managed", {"wal_level": "replica", "archive_mode": "off"}).start()
    children: list[int] = []
    first = None
    try:
        env = _receive_env(managed, pg, s3, tmp_path)
        bucket = env["STORAGE_URL"].removeprefix("s3://")
        first = _scheduler(env, tmp_path / "first.log")
        until(lambda: managed.execute("SELECT 1 FROM pg_stat_replication"), 60, "a stream")
        children = until(lambda: _pids(f"pg_receivewal --directory={tmp_path}"), 30, "it")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert _gone(children, 60) == [], "pg_receivewal outlived its scheduler"

        second = _scheduler(env, tmp_path / "second.log")
        try:
            until(lambda: _pids(f"pg_receivewal --directory={tmp_path}"), 60, "a new stream")
            managed.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
            segment = managed.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
            wait_for_segment(s3, bucket, segment, 60)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=90)
        assert second.returncode == 0
        assert "disconnected" not in (tmp_path / "second.log").read_text()
    finally:
        if first is not None and first.poll() is None:
            first.kill()
            first.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        managed.destroy()
    ledger.record("process kills: streaming scheduler kill -9", injected=1, survived=1)


def _scheduler(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(
            [PERMAFROST, "scheduler"], env=env, stdout=handle, stderr=subprocess.STDOUT
        )
