"""Verification by restoring, the task queue and the restore worker, plans and estimates."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import time

from tests.conftest import PERMAFROST, run
from tests.helpers import flip_byte, get_object, loads, put_object
from tests.services import Cluster


def test_a_test_restore_verifies_and_measures(env, pg, source_db) -> None:
    run(env, "backup")
    result = run(env, "verify", "latest", "--test-restore", "--json")
    trial = loads(result.stdout)
    assert trial["status"] == "verified" and trial["tables"] == 4
    assert trial["bytes_per_second"] > 0
    assert not [
        d
        for (d,) in pg.execute("SELECT datname FROM pg_database")
        if d.startswith("permafrost_verify_") or "_pfrestore_" in d
    ]
    shown = loads(run(env, "show", "latest", "--json").stdout)
    assert shown["verification"] == "verified"
    assert shown["verifications"][0]["kind"] == "test_restore"
    [estimate] = loads(run(env, "recovery-time", "--json").stdout)["estimates"]
    assert estimate["measured"] is True and estimate["samples"] == 1


def test_all_unverified_checks_each_once(env) -> None:
    run(env, "backup")
    run(env, "backup")
    assert "2 verified, 0 failed" in run(env, "verify", "--all-unverified").stdout
    assert "0 verified, 0 failed" in run(env, "verify", "--all-unverified").stdout


def test_a_failed_test_restore_is_recorded(env, s3, bucket) -> None:
    record = loads(run(env, "backup", "--json").stdout)
    shown = loads(run(env, "show", record["id"], "--json").stdout)
    key = shown["manifest"]["objects"]["data"]
    data = get_object(s3, bucket, key)
    put_object(s3, bucket, key, flip_byte(data, len(data) - 50))
    result = run(env, "verify", record["id"], "--test-restore", check=False)
    assert result.returncode == 5
    shown = loads(run(env, "show", record["id"], "--json").stdout)
    assert shown["verification"] == "failed"
    assert shown["verifications"][0]["kind"] == "test_restore"


def _worker(env) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PERMAFROST, "restore-worker", "--poll", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(env, task_id: int, metadata: tuple[Cluster, str], timeout: float = 60) -> str:
    pg, db = metadata
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ((status,),) = pg.execute(f"SELECT status FROM permafrost.tasks WHERE id = {task_id}", db)
        if status in ("succeeded", "failed"):
            return str(status)
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish")


def test_the_worker_drains_queued_tasks_and_survives_a_failing_one(env, pg, metadata_db) -> None:
    record = loads(run(env, "backup", "--json").stdout)
    queued = [
        loads(run(env, "verify", record["id"], "--queue", "--json").stdout)["task_id"],
        loads(run(env, "verify", record["id"], "--queue", "--test-restore", "--json").stdout)[
            "task_id"
        ],
    ]
    pg.execute(
        "INSERT INTO permafrost.tasks (kind, payload) "
        "VALUES ('verify', '{\"backup_id\": \"20200101T000000Z-abcdef\"}')",
        metadata_db,
    )
    bad = pg.execute("SELECT max(id) FROM permafrost.tasks", metadata_db)[0][0]
    worker = _worker(env)
    try:
        assert [_wait_for(env, t, (pg, metadata_db)) for t in queued] == ["succeeded"] * 2
        assert _wait_for(env, bad, (pg, metadata_db)) == "failed"
        late = loads(run(env, "verify", "latest", "--queue", "--json").stdout)["task_id"]
        assert _wait_for(env, late, (pg, metadata_db), timeout=20) == "succeeded"
    finally:
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=30)[0]
    assert worker.returncode == 0, output
    error = pg.execute(f"SELECT error FROM permafrost.tasks WHERE id = {bad}", metadata_db)
    assert "no backup 20200101T000000Z-abcdef" in error[0][0]


def test_two_workers_never_run_the_same_task(env, pg, metadata_db) -> None:
    record = loads(run(env, "backup", "--json").stdout)
    tasks = [
        loads(run(env, "verify", record["id"], "--queue", "--json").stdout)["task_id"]
        for _ in range(6)
    ]
    workers = [_worker(env), _worker(env)]
    try:
        for task in tasks:
            _wait_for(env, task, (pg, metadata_db))
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [w.communicate(timeout=30)[0] for w in workers]
    started = [int(n) for out in outputs for n in re.findall(r"task (\d+): verify .* started", out)]
    assert sorted(started) == sorted(tasks)
    attempts = pg.execute("SELECT max(attempts) FROM permafrost.tasks", metadata_db)
    assert attempts == [(1,)]


def test_sigterm_puts_the_task_in_hand_back(env, pg, metadata_db, source_db) -> None:
    pg.execute(
        "CREATE TABLE big AS SELECT g, md5(g::text) v FROM generate_series(1, 300000) g", source_db
    )
    record = loads(run(env, "backup", "--json").stdout)
    task = loads(run(env, "verify", record["id"], "--queue", "--test-restore", "--json").stdout)[
        "task_id"
    ]
    worker = _worker(env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ((status,),) = pg.execute(
            f"SELECT status FROM permafrost.tasks WHERE id = {task}", metadata_db
        )
        if status == "running":
            break
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    output = worker.communicate(timeout=60)[0]
    ((status,),) = pg.execute(f"SELECT status FROM permafrost.tasks WHERE id = {task}", metadata_db)
    if "succeeded" in output:  # it finished before the signal arrived: nothing to requeue
        assert status == "succeeded"
        return
    assert status == "queued", output
    assert not [
        d
        for (d,) in pg.execute("SELECT datname FROM pg_database")
        if d.startswith("permafrost_verify_") or "_pfrestore_" in d
    ]
    run(env, "restore-worker", "--once")
    assert _wait_for(env, task, (pg, metadata_db)) == "succeeded"


def test_plan_names_real_backups_and_commands_that_work(env, pg, source_db) -> None:
    record = loads(run(env, "backup", "--json").stdout)
    run(env, "verify", record["id"], "--test-restore")
    for scenario in ("corruption", "deletion", "disaster", "compliance"):
        text = run(env, "plan", scenario).stdout
        assert record["id"] in text and "Estimated recovery time" in text
    text = run(env, "plan", "deletion").stdout
    command = next(
        line.split(": ", 1)[1]
        for line in text.splitlines()
        if "restore it beside production" in line
    )
    args = shlex.split(command)
    assert args[0] == "permafrost"
    run(env, *args[1:])
    side = f"{source_db}_recovered"
    assert pg.execute("SELECT count(*) FROM customers", side) == [(2000,)]
    pg.drop_database(side)


def test_the_worker_waits_out_a_metadata_store_restart(env, pg, source_db) -> None:
    store = Cluster("worker-store").start()
    try:
        meta = store.create_database("meta")
        env = {**env, "METADATA_DATABASE_URL": store.url(meta)}
        record = loads(run(env, "backup", "--json").stdout)
        worker = _worker(env)
        try:
            first = loads(run(env, "verify", record["id"], "--queue", "--json").stdout)["task_id"]
            assert _wait_for(env, first, (store, meta)) == "succeeded"
            store.stop()  # the metadata store restarts, as `pg_ctl restart` does
            time.sleep(2)  # the worker notices while it waits for tasks
            store.start()
            late = loads(run(env, "verify", record["id"], "--queue", "--json").stdout)["task_id"]
            assert _wait_for(env, late, (store, meta), timeout=60) == "succeeded"
            assert worker.poll() is None, "the worker exited"
        finally:
            worker.send_signal(signal.SIGTERM)
            output = worker.communicate(timeout=30)[0]
        assert worker.returncode == 0, output
        assert "connecting again in" in output and "Traceback" not in output, output
    finally:
        store.destroy()


def test_the_worker_refuses_to_start_without_a_metadata_store(env) -> None:
    env = {key: value for key, value in env.items() if key != "METADATA_DATABASE_URL"}
    result = run(env, "restore-worker", check=False)
    assert result.returncode == 8 and "METADATA_DATABASE_URL is not set" in result.stderr
