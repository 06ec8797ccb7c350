"""The metadata store goes down during a backup and during monitor requests.

The backup completes to the bucket (with a warning); /health answers 503 naming the store and
the monitor answers its other pages with a clear 503, not a crash; once the store is back,
`catalog sync` brings the catalog in line and no backup is missing from it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import psycopg
import pytest

from monitor.app import create_app
from permafrost.config.settings import Settings
from tests.conftest import PERMAFROST, make_sample_database, run
from tests.faults.conftest import Ledger, blob
from tests.helpers import loads
from tests.services import Cluster


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
