"""The reference deployment's /backup/... endpoints through the real monitor app, with a real
metadata store, bucket, scheduler and restore worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from monitor.app import create_app
from permafrost.config.settings import Settings
from tests.conftest import run, unique
from tests.helpers import loads, objects
from tests.services import Cluster, S3Server
from tests.test_scheduler import QUIET, Scheduler

TOKEN = "t0ken-for-tests-only-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api_env(env: dict[str, str], source_db: str) -> dict[str, str]:
    return {**env, "DB_NAME": source_db, "MONITOR_API_TOKEN": TOKEN}


def _client(env: dict[str, str]) -> FlaskClient:
    app = create_app(Settings.from_env(env), evaluate=False)
    app.testing = True
    return app.test_client()


@pytest.fixture
def client(api_env: dict[str, str]) -> Iterator[FlaskClient]:
    with _client(api_env) as c:
        yield c


def _finished(client: FlaskClient, task_id: int, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.get(f"/tasks/{task_id}").json
        if task["status"] in ("succeeded", "failed"):
            return dict(task)
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} did not finish")


def test_it_creates_a_backup_with_its_name_description_and_tags(
    client: FlaskClient, api_env: dict[str, str], source_db: str, tmp_path: Path
) -> None:
    body = {"name": "before-migration", "description": "ticket 42", "tags": ["release"]}
    assert client.post("/backup/create", json=body).status_code == 401
    typo = client.post("/backup/create", json={**body, "database": "nosuch"}, headers=AUTH)
    assert typo.status_code == 400 and source_db in typo.json["error"]
    queued = client.post("/backup/create", json=body, headers=AUTH)
    assert queued.status_code == 202, queued.json
    scheduler = Scheduler({**api_env, **QUIET}, tmp_path / "scheduler.log")
    try:
        task = _finished(client, queued.json["task_id"])
    finally:
        scheduler.stop()
    assert task["status"] == "succeeded", scheduler.output()
    backup_id = task["result"]["backups"][0]["backup_id"]
    listed = client.get("/backup/list").json["backups"]
    assert [b["id"] for b in listed] == [backup_id]
    assert listed[0]["description"] == "ticket 42"
    assert listed[0]["tags"] == ["name:before-migration", "release"]
    shown = loads(run(api_env, "show", backup_id, "--json").stdout)
    assert shown["description"] == "ticket 42" and "name:before-migration" in shown["tags"]
    status = client.get("/backup/status")
    assert status.status_code == 200 and source_db in status.json["databases"]


def test_cleanup_is_a_dry_run_unless_applied(api_env: dict[str, str]) -> None:
    env = {**api_env, "RETENTION_MIN_KEEP": "1", "RETENTION_DAILY": "1"}
    env |= {"RETENTION_WEEKLY": "0", "RETENTION_MONTHLY": "0"}
    ids = []
    for _ in range(3):
        # A backup id tells its time to the second, which is what retention orders by: two
        # backups within one second (a fast machine) would be equally new.
        time.sleep(1 - time.time() % 1)
        ids.append(loads(run(env, "backup", "--json").stdout)["id"])
    client = _client(env)
    assert client.post("/backup/cleanup").status_code == 401
    dry = client.post("/backup/cleanup", headers=AUTH)
    assert dry.status_code == 200, dry.json
    doomed = sorted(b["id"] for b in dry.json["would_delete"])
    assert doomed == sorted(ids[:2]) and dry.json["applied"] is False
    assert len(loads(run(env, "list", "--json").stdout)) == 3  # nothing deleted
    applied = client.post("/backup/cleanup", json={"apply": True}, headers=AUTH)
    assert applied.status_code == 200 and applied.json["applied"] is True
    assert sorted(b["id"] for b in applied.json["deleted"]) == doomed
    assert [b["id"] for b in loads(run(env, "list", "--json").stdout)] == [ids[2]]


def test_delete_refuses_pinned_and_busy_backups_and_deletes_the_rest(
    client: FlaskClient, api_env: dict[str, str], pg: Cluster, metadata_db: str, s3: S3Server
) -> None:
    pinned, busy, doomed = (loads(run(api_env, "backup", "--json").stdout) for _ in range(3))
    bucket = api_env["STORAGE_URL"].removeprefix("s3://").split("/")[0]
    run(api_env, "pin", pinned["id"], "--reason", "audit")
    assert client.delete(f"/backup/{doomed['id']}").status_code == 401
    refused = client.delete(f"/backup/{pinned['id']}", headers=AUTH)
    assert refused.status_code == 409 and "pinned" in refused.json["error"]
    task = client.post(f"/verify/{busy['id']}", headers=AUTH).json["task_id"]
    locked = client.delete(f"/backup/{busy['id']}", headers=AUTH)
    assert locked.status_code == 409 and f"task {task}" in locked.json["error"]
    deleted = client.delete(f"/backup/{doomed['id']}", headers=AUTH)
    assert deleted.status_code == 200, deleted.json
    assert not [k for k in objects(s3, bucket) if doomed["id"] in k]
    assert [k for k in objects(s3, bucket) if pinned["id"] in k]
    assert client.get(f"/backup/{doomed['id']}").json["status"] == "deleted"
    assert doomed["id"] not in {b["id"] for b in client.get("/backup/list").json["backups"]}
    ((action, by),) = pg.execute(
        f"SELECT action, details->>'by' FROM permafrost.audit_log WHERE target = '{doomed['id']}'",
        metadata_db,
    )
    assert action == "delete" and by.startswith("api:")
    assert client.delete("/backup/20200101T000000Z-000000", headers=AUTH).status_code == 404


def test_restore_goes_into_a_new_database_never_over_one(
    client: FlaskClient, api_env: dict[str, str], pg: Cluster, source_db: str
) -> None:
    record = loads(run(api_env, "backup", "--json").stdout)
    assert client.post("/backup/restore", json={"target_db": "x"}).status_code == 401
    over = client.post("/backup/restore", json={"target_db": source_db}, headers=AUTH)
    assert over.status_code == 409 and "already exists" in over.json["error"]
    target, raced = unique("apirestore"), unique("apiraced")
    try:
        queued = client.post(
            "/backup/restore", json={"backup_id": record["id"], "target_db": target}, headers=AUTH
        )
        assert queued.status_code == 202, queued.json
        late = client.post("/backup/restore", json={"target_db": raced}, headers=AUTH)
        assert late.status_code == 202
        pg.create_database(raced)  # appears after the request: the worker still refuses it
        pg.execute("CREATE TABLE precious (v int)", raced)
        run(api_env, "restore-worker", "--once")
        done = _finished(client, queued.json["task_id"], timeout=5)
        assert done["status"] == "succeeded", done["error"]
        assert done["result"]["target_db"] == target
        assert pg.execute("SELECT count(*) FROM customers", target) == [(2000,)]
        refused = _finished(client, late.json["task_id"], timeout=5)
        assert refused["status"] == "failed" and "already exists" in refused["error"]
        assert pg.execute("SELECT count(*) FROM precious", raced) == [(0,)]
    finally:
        for name in (target, raced):
            pg.drop_database(name)
