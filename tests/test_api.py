"""The monitor's JSON API against a real metadata store and bucket (Flask's test client)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from monitor.app import create_app
from permafrost.config.settings import Settings
from tests.conftest import run
from tests.helpers import loads
from tests.services import Cluster

TOKEN = "t0ken-for-tests-only-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api_env(env: dict[str, str], source_db: str) -> dict[str, str]:
    return {**env, "DB_NAME": source_db, "MONITOR_API_TOKEN": TOKEN}


@pytest.fixture
def client(api_env: dict[str, str]) -> Iterator[FlaskClient]:
    app = create_app(Settings.from_env(api_env), evaluate=False)
    app.testing = True
    with app.test_client() as c:
        yield c


def synthetic(pg: Cluster, metadata_db: str, count: int, database: str = "bulk") -> None:
    with psycopg.connect(pg.url(metadata_db), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO permafrost.backups (id, database, kind, tier, status, started_at,"
            " finished_at, size_bytes, dump_bytes, description)"
            " SELECT to_char(t, 'YYYYMMDD\"T\"HH24MISS\"Z\"') || '-' || lpad(to_hex(g), 6, '0'),"
            " %s, 'logical', CASE WHEN g %% 10 = 0 THEN 'compliance' ELSE 'standard' END,"
            " CASE WHEN g %% 7 = 0 THEN 'failed' ELSE 'completed' END, t, t + interval '1 min',"
            " 1000 + g, 5000 + g, 'bulk ' || g"
            " FROM generate_series(1, %s) g, LATERAL (SELECT now() - g * interval '1 hour' AS t) x",
            (database, count),
        )


def test_health_names_the_failing_part(client: FlaskClient, api_env: dict[str, str]) -> None:
    ok = client.get("/health")
    assert ok.status_code == 200 and ok.json == {
        "status": "ok",
        "metadata_store": "ok",
        "bucket": "ok",
    }
    broken = create_app(
        Settings.from_env({**api_env, "STORAGE_URL": "s3://no-such-bucket-here/x"}),
        evaluate=False,
    ).test_client()
    down = broken.get("/health")
    assert down.status_code == 503
    assert down.json["status"] == "unhealthy"
    assert [f.split(":")[0] for f in down.json["failing"]] == ["bucket"]
    no_store = create_app(
        Settings.from_env({**api_env, "METADATA_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}),
        evaluate=False,
    ).test_client()
    gone = no_store.get("/health")
    assert gone.status_code == 503 and gone.json["failing"][0].startswith("metadata store:")
    assert no_store.get("/backups").status_code == 503  # a clear 503, not a 500


def test_backups_pages_filters_and_counts(
    client: FlaskClient, api_env: dict[str, str], pg: Cluster, metadata_db: str
) -> None:
    real = loads(run(api_env, "backup", "--json").stdout)
    synthetic(pg, metadata_db, 120)
    page = client.get("/backups?per_page=50")
    assert page.status_code == 200
    assert page.json["total"] == 121 and page.json["pages"] == 3
    assert len(page.json["backups"]) == 50
    assert page.json["backups"][0]["id"] == real["id"]  # newest first
    last = client.get("/backups?per_page=50&page=3").json
    assert len(last["backups"]) == 21
    ids = {
        b["id"]
        for p in (1, 2, 3)
        for b in client.get(f"/backups?per_page=50&page={p}").json["backups"]
    }
    assert len(ids) == 121  # pages do not overlap
    failed = client.get("/backups?database=bulk&status=failed").json
    assert failed["total"] == 17 and all(b["status"] == "failed" for b in failed["backups"])
    compliance = client.get("/backups?database=bulk&tier=compliance").json
    assert compliance["total"] == 12
    for bad in ("page=0", "per_page=500", "page=x", "tier=gold", "status=great", "database=../x"):
        response = client.get(f"/backups?{bad}")
        assert response.status_code == 400, bad
        assert "error" in response.json


def test_one_backup_with_its_restore_command(client: FlaskClient, api_env: dict[str, str]) -> None:
    real = loads(run(api_env, "backup", "--json").stdout)
    body = client.get(f"/backup/{real['id']}").json
    assert body["database"] == real["database"] and body["status"] == "completed"
    assert {"schema": "public", "table": "customers", "rows": 2000} in body["row_counts"]
    assert body["restore_command"].startswith(
        f"docker compose exec restore permafrost restore {real['id']}"
    )
    assert client.get("/backup/20200101T000000Z-000000").status_code == 404
    for bad in ("..%2F..%2Fetc", "not-an-id", "20200101T000000Z-00000%00"):
        assert client.get(f"/backup/{bad}").status_code in (400, 404), bad


def test_writes_need_the_token_and_queue_tasks(
    client: FlaskClient, api_env: dict[str, str]
) -> None:
    real = loads(run(api_env, "backup", "--json").stdout)
    assert client.post(f"/verify/{real['id']}").status_code == 401
    wrong = client.post(f"/verify/{real['id']}", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    queued = client.post(f"/verify/{real['id']}", headers=AUTH)
    assert queued.status_code == 202
    task = client.get(queued.json["status_url"]).json
    assert task["kind"] == "verify" and task["status"] == "queued"
    assert task["payload"] == {"backup_id": real["id"]}
    test = client.post("/restore-test", headers=AUTH)
    assert test.status_code == 202 and test.json["backup_id"] == real["id"]
    named = client.post("/restore-test", headers=AUTH, json={"backup_id": real["id"]})
    assert named.status_code == 202
    now = client.post("/backup/run-now", headers=AUTH, json={"database": real["database"]})
    assert now.status_code == 202
    assert client.get(f"/tasks/{now.json['task_id']}").json["payload"] == {
        "kind": "logical",
        "database": real["database"],
        "tier": "standard",
    }
    assert client.get("/tasks/999999").status_code == 404
    assert (
        client.post(
            "/backup/run-now", headers=AUTH, data="[1,2", content_type="application/json"
        ).status_code
        == 400
    )
    assert (
        client.post("/backup/run-now", headers=AUTH, json={"database": "a;drop"}).status_code == 400
    )
    huge = client.post(
        "/backup/run-now", headers=AUTH, data="x" * 200_000, content_type="application/json"
    )
    assert huge.status_code == 413


def test_writes_are_disabled_without_a_token(api_env: dict[str, str]) -> None:
    env = {k: v for k, v in api_env.items() if k != "MONITOR_API_TOKEN"}
    c = create_app(Settings.from_env(env), evaluate=False).test_client()
    refused = c.post("/backup/run-now", headers={"Authorization": "Bearer anything"})
    assert refused.status_code == 403
    assert "MONITOR_API_TOKEN" in refused.json["error"]


def test_status_next_backup_alerts_recovery_time_and_openapi(
    client: FlaskClient, api_env: dict[str, str], pg: Cluster, metadata_db: str, source_db: str
) -> None:
    real = loads(run(api_env, "backup", "--json").stdout)
    with psycopg.connect(pg.url(metadata_db), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO permafrost.heartbeats (instance, role, host, pid, next_runs)"
            " VALUES ('h:1', 'leader', 'h', 1, %s)",
            (json.dumps({f"backup:{source_db}": "2026-11-23T02:00:00+00:00"}),),
        )
        conn.execute(
            "INSERT INTO permafrost.alerts (key, severity, summary) VALUES"
            " ('x', 'critical', 'something <b>bad</b>')"
        )
    status = client.get("/status").json
    db = status["databases"][source_db]
    assert db["last_success"]["id"] == real["id"] and db["last_success"]["age_seconds"] < 120
    assert db["next_runs"]["backup"] == "2026-11-23T02:00:00+00:00"
    assert status["scheduler"]["alive"] is True
    assert status["alerts"][0]["summary"] == "something <b>bad</b>"
    nxt = client.get("/backup/next-backup").json
    assert nxt["next"] == {
        "database": source_db,
        "job": "backup",
        "at": "2026-11-23T02:00:00+00:00",
    }
    alerts = client.get("/alerts").json
    assert [a["key"] for a in alerts["active"]] == ["x"]
    rt = client.get("/recovery-time").json["estimates"][0]
    assert rt["backup_id"] == real["id"] and rt["measured"] is False
    assert client.get("/recovery-time?database=nope").status_code == 404
    spec = client.get("/openapi.json").json
    paths = set(spec["paths"])
    routes = {
        rule.rule.replace("<name>", "{name}").replace("<int:task_id>", "{id}")
        for rule in client.application.url_map.iter_rules()
        if not rule.rule.startswith(("/ui/", "/static")) and rule.rule != "/"
    }
    assert routes == paths


def test_metrics_are_served(client: FlaskClient, api_env: dict[str, str]) -> None:
    run(api_env, "backup")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    assert b"permafrost_backup_last_success_timestamp_seconds" in response.data


def _unused(_: Any) -> None:
    return None
