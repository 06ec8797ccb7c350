"""PostgreSQL faults: the source down at backup time, the connection cut mid-dump, the restore
target unreachable. Each is one clear line and exit 7, with nothing partial left looking
complete; and 1,000 queued tasks drained by two restore workers, none run twice."""

from __future__ import annotations

import re
import subprocess
import time

import psycopg

from tests.conftest import PERMAFROST, make_sample_database, run
from tests.faults.conftest import Ledger, blob
from tests.helpers import loads, objects, pending_uploads
from tests.services import Cluster, S3Server, refused_port


def test_source_down_dump_cut_and_target_unreachable_fail_cleanly(
    env: dict[str, str],
    pg: Cluster,
    s3: S3Server,
    bucket: str,
    metadata_db: str,
    ledger: Ledger,
) -> None:
    db = make_sample_database(pg, extra_sql=blob(200000))
    denv = {**env, "DATABASE_URL": env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + db}
    # 1. The source is down (a port held so that nothing listens there).
    with refused_port() as port:
        down = {**denv, "DATABASE_URL": f"postgresql://postgres:x@127.0.0.1:{port}/{db}"}
        result = run(down, "backup", check=False)
    assert result.returncode == 7, result.stderr
    assert re.fullmatch(
        rf"permafrost: error: cannot connect to database {db} at 127\.0\.0\.1:{port}: "
        r"[^\n]*Connection refused\n",
        result.stderr,
    ), result.stderr

    # 2. The connection is cut under pg_dump (held on a table lock, so it is surely there).
    blocker = psycopg.connect(pg.url(db))
    blocker.execute("LOCK TABLE blob IN ACCESS EXCLUSIVE MODE")
    proc = subprocess.Popen(
        [PERMAFROST, "backup"], env=denv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    killed = 0
    while not killed and time.monotonic() < deadline:
        killed = len(
            pg.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                f" WHERE datname = '{db}' AND application_name = 'pg_dump'"
            )
        )
        time.sleep(0.05)
    blocker.close()
    _, err = proc.communicate(timeout=120)
    assert killed, "pg_dump was never seen"
    assert proc.returncode == 7, err
    assert "pg_dump" in err
    assert not [k for k in objects(s3, bucket, "backups/standard/") if k.endswith("manifest.json")]
    assert pending_uploads(s3, bucket) == []

    # 3. The restore target cannot be reached: nothing is created anywhere.
    good = loads(run(denv, "backup", "--json").stdout)["id"]
    with refused_port() as port:
        unreachable = f"postgresql://postgres:x@127.0.0.1:{port}/postgres"
        result = run(
            denv,
            "restore",
            good,
            "--target-db",
            "never_made",
            "--target-url",
            unreachable,
            check=False,
        )
    assert result.returncode == 7, result.stderr
    assert re.fullmatch(
        rf"permafrost: error: [^\n]*127\.0\.0\.1:{port}[^\n]*Connection refused\n", result.stderr
    ), result.stderr
    with psycopg.connect(pg.url(metadata_db)) as conn:
        states = dict(conn.execute("SELECT status, count(*) FROM permafrost.backups GROUP BY 1"))
    assert states == {"failed": 2, "completed": 1}
    pg.drop_database(db)
    ledger.record("postgresql: source down, dump cut, target unreachable", injected=3, survived=3)


def test_a_thousand_tasks_are_drained_by_two_workers_none_twice(
    env: dict[str, str], pg: Cluster, metadata_db: str, ledger: Ledger
) -> None:
    run(env, "catalog", "migrate")
    with psycopg.connect(pg.url(metadata_db), autocommit=True) as conn:
        conn.execute(  # verifications of backups that do not exist: each fails at once, once
            "INSERT INTO permafrost.tasks (kind, payload, requested_by)"
            " SELECT 'verify', jsonb_build_object('backup_id',"
            " '20200101T000000Z-' || lpad(to_hex(g), 6, '0')), 'load'"
            " FROM generate_series(1, 1000) g"
        )
    workers = [
        subprocess.Popen(
            [PERMAFROST, "restore-worker", "--once"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.wait(timeout=600) == 0
    with psycopg.connect(pg.url(metadata_db)) as conn:
        rows = conn.execute(
            "SELECT status, attempts, worker FROM permafrost.tasks WHERE requested_by = 'load'"
        ).fetchall()
    assert len(rows) == 1000
    assert {r[0] for r in rows} == {"failed"}  # every one run, and its failure recorded
    assert {r[1] for r in rows} == {1}  # none run twice
    by_worker = {r[2] for r in rows}
    assert len(by_worker) == 2, "both workers took tasks"
    ledger.record("load: 1,000 tasks, two workers", injected=1000, survived=1000)
