"""The metadata store goes down during a backup and during monitor requests, and the database
host dies under a running monitor.

The backup completes to the bucket (with a warning); /health answers 503 naming the store and
the monitor answers its other pages with a clear 503, not a crash; once the store is back,
`catalog sync` brings the catalog in line and no backup is missing from it. When the server
holding the store and the source stops, the monitor emails about both once, by itself, and
sends RESOLVED when the server is back."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from monitor.app import create_app
from permafrost.config.settings import Settings
from tests.conftest import KEY, PERMAFROST, make_sample_database, run
from tests.faults.conftest import Ledger, blob
from tests.helpers import loads
from tests.services import Cluster, free_port, serve_http
from tests.test_alerts import SMTPServer


@pytest.fixture
def store() -> Iterator[Cluster]:
    cluster = Cluster("meta-outage").start()
    yield cluster
    cluster.destroy()


def test_the_store_down_mid_backup_and_mid_requests_loses_nothing(
    env: dict[str, str], pg: Cluster, store: Cluster, ledger: Ledger
) -> None:
    db = make_sample_database(pg, extra_sql=blob(120000))
    store.create_database("permafrost")
    senv = {
        **env,
        "METADATA_DATABASE_URL": store.url("permafrost"),
        "DATABASE_URL": env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + db,
        "DB_NAME": db,
    }
    first = loads(run(senv, "backup", "--json").stdout)["id"]
    app = create_app(Settings.from_env(senv), evaluate=False)
    client = app.test_client()
    assert client.get("/health").status_code == 200

    # pg_dump waits on a table lock, so the store can be stopped while the backup is running.
    blocker = psycopg.connect(pg.url(db))
    blocker.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
    backup = subprocess.Popen(
        [PERMAFROST, "backup", "--json"],
        env=senv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    with psycopg.connect(store.url("permafrost"), autocommit=True) as conn:
        while not conn.execute(
            "SELECT 1 FROM permafrost.backups WHERE status = 'running'"
        ).fetchone():
            assert time.monotonic() < deadline, "the backup never recorded its start"
            time.sleep(0.1)
    store.stop("immediate")
    blocker.close()
    out, err = backup.communicate(timeout=300)
    assert backup.returncode == 0, err
    second = loads(out)["id"]
    assert "metadata store" in err  # it said the catalog will catch up

    health = client.get("/health")
    assert health.status_code == 503
    assert health.json["failing"][0].startswith("metadata store:")
    for path in ("/status", "/backups", f"/backup/{first}", "/alerts", "/metrics"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "metadata store" in response.json["error"]
    listed = run(senv, "list", "--json")  # the CLI falls back to the bucket
    assert {second, first} <= {b["id"] for b in loads(listed.stdout)}

    store.start()
    run(senv, "catalog", "sync")
    with psycopg.connect(store.url("permafrost")) as conn:
        rows = conn.execute(
            "SELECT id, status FROM permafrost.backups WHERE status = 'completed'"
        ).fetchall()
    assert {first, second} <= {r[0] for r in rows}
    assert client.get("/health").status_code == 200  # the monitor heals without a restart
    page = client.get(f"/backups?database={db}").json
    assert {b["id"] for b in page["backups"]} >= {first, second}
    pg.drop_database(db)
    ledger.record("metadata store outage", injected=2, survived=2)


def wait_for(check: Callable[[], Any], what: str, seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def get(url: str, accept: str = "application/json") -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening (yet)
        return 0, str(exc)


def test_the_database_host_down_is_emailed_once_and_resolved(
    store: Cluster, tmp_path: Path, ledger: Ledger
) -> None:
    store.create_database("permafrost")
    store.create_database("shop")
    smtp = SMTPServer()
    state = tmp_path / "state"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "METADATA_DATABASE_URL": store.url("permafrost"),
        "DATABASE_URL": store.url("shop"),
        "STORAGE_URL": f"file://{tmp_path / 'bucket'}",
        "BACKUP_ENCRYPTION_KEY": KEY,
        "MONITOR_STATE_DIR": str(state),
        "ALERT_CHECK_INTERVAL": "1",
        "ALERT_EMAIL": "oncall@example.com",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "SMTP_TLS": "none",
        "SMTP_FROM": "permafrost@example.com",
    }
    run(env, "init")

    def start(port: int) -> subprocess.Popen[bytes]:
        bind = ["--bind", f"127.0.0.1:{port}", "--workers", "2"]
        log = (tmp_path / "monitor.log").open("ab")
        return subprocess.Popen([PERMAFROST, "monitor", *bind], env=env, stdout=log, stderr=log)

    monitor, port = serve_http(start)
    base = f"http://127.0.0.1:{port}"
    keys = ("metadata_unreachable", "source_unreachable")
    try:
        store.stop("immediate")  # the host dies: the store and the source with it
        for key in keys:
            wait_for(lambda key=key: smtp.mailbox.about(key), f"the {key} email")
        status, page = get(base + "/", "text/html")
        assert status == 503 and "The metadata store is unreachable" in page
        assert "permafrost list" in page and "permafrost restore latest" in page
        status, body = get(base + "/backups")
        assert status == 503 and " since " in json.loads(body)["error"]

        runs = {_last_run(state)}  # several more evaluations: nothing is sent again
        wait_for(lambda: runs.add(_last_run(state)) or len(runs) > 4, "four more evaluations")
        assert sorted(m["X-Permafrost-Alert"] for m in smtp.mailbox.messages) == sorted(keys)

        monitor.terminate()  # a restarted monitor remembers what was sent
        monitor.wait(timeout=60)
        port = free_port()
        monitor, base = start(port), f"http://127.0.0.1:{port}"  # /health is 503: watch the state
        runs = {_last_run(state)}
        wait_for(
            lambda: monitor.poll() is None and (runs.add(_last_run(state)) or len(runs) > 3),
            "three evaluations of the restarted monitor",
        )
        assert len(smtp.mailbox.messages) == 2

        store.start()
        for key in keys:
            wait_for(lambda key=key: len(smtp.mailbox.about(key)) == 2, f"{key} resolved")
            assert str(smtp.mailbox.about(key)[1]["Subject"]).startswith("[permafrost] RESOLVED")
        assert wait_for(lambda: get(base + "/status")[0] == 200, "the dashboard back")
        assert len(smtp.mailbox.messages) == 4
    finally:
        monitor.terminate()
        monitor.wait(timeout=30)
        smtp.stop()
    ledger.record("database host down", injected=1, survived=1)


def _last_run(state: Path) -> str | None:
    for path in state.glob("outages-*.json"):
        try:
            return str(json.loads(path.read_text()).get("last_run"))
        except ValueError:
            return None
    return None
