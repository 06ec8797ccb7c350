"""Storage faults: backups, restores, wal-push and wal-fetch through a proxy that breaks requests.

Transient faults (500, 503 SlowDown, reset connections, stalls, responses cut midway) are
survived: the backup completes and restores to identical rows. Persistent faults fail cleanly:
the command says so and exits 6, no manifest is written, no multipart upload is left, the
catalog records the run as failed, and the alert evaluator raises the alert.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import psycopg
import pytest

from monitor.alerts.evaluator import Evaluator
from permafrost.config.settings import Settings
from tests.conftest import make_sample_database, run
from tests.faults.conftest import Ledger, blob
from tests.faults.proxy import FaultProxy, Plan
from tests.helpers import loads, objects, pending_uploads, table_digest
from tests.services import Cluster, S3Server


@pytest.fixture(scope="module")
def big_db(pg: Cluster) -> str:
    # About 14 MB of dump, 6 MB stored: a multipart upload of two parts, ranged downloads.
    return make_sample_database(pg, extra_sql=blob(120000))


def through(env: dict[str, str], proxy: FaultProxy, db: str) -> dict[str, str]:
    return {
        **env,
        "S3_ENDPOINT_URL": proxy.url,
        "DATABASE_URL": env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + db,
        "S3_MAX_ATTEMPTS": "6",
        "UPLOAD_PART_SIZE_MB": "5",
    }


@pytest.mark.parametrize("fault", ["error500", "slowdown", "reset", "cut", "stall"])
def test_transient_faults_are_survived_and_the_backup_restores_identically(
    fault: str,
    env: dict[str, str],
    pg: Cluster,
    big_db: str,
    proxy: FaultProxy,
    ledger: Ledger,
) -> None:
    fenv = through(env, proxy, big_db)
    before = proxy.total_injected()
    if fault == "stall":
        proxy.set(Plan("stall", nth={2, 5}, stall_seconds=2.0))
    else:
        # A seeded rate, and the third request for certain, so no run injects nothing; a cut
        # response is a download's (GET) fault.
        method = "GET" if fault == "cut" else None
        proxy.set(Plan(fault, rate=0.25, nth={3}, method=method, seed=zlib.crc32(fault.encode())))
    try:
        backup = loads(run(fenv, "backup", "--json").stdout)
        target = f"{big_db}_{fault}"
        run(fenv, "restore", backup["id"], "--target-db", target)
    finally:
        proxy.clear()
    injected = proxy.total_injected() - before
    assert injected > 0, "the plan injected nothing: the test would prove nothing"
    identical = table_digest(pg, target) == table_digest(pg, big_db)
    pg.drop_database(target)
    assert identical
    ledger.record(f"storage: transient {fault}", injected=injected, survived=injected)


def test_persistent_upload_faults_fail_cleanly_and_raise_the_alert(
    env: dict[str, str],
    pg: Cluster,
    big_db: str,
    proxy: FaultProxy,
    s3: S3Server,
    bucket: str,
    metadata_db: str,
    ledger: Ledger,
) -> None:
    fenv = through(env, proxy, big_db)
    run(fenv, "init")
    before = proxy.total_injected()
    # Every upload fails; aborting the multipart upload (a DELETE) still goes through.
    proxy.set(Plan("error500", rate=1.0, method="PUT"))
    try:
        failed = run(fenv, "backup", check=False)
    finally:
        proxy.clear()
    injected = proxy.total_injected() - before
    assert failed.returncode == 6, failed.stderr
    assert failed.stderr.count("\n") == 1 and "permafrost: error:" in failed.stderr
    assert not [k for k in objects(s3, bucket, "backups/standard/") if k.endswith("manifest.json")]
    assert pending_uploads(s3, bucket) == []
    with psycopg.connect(pg.url(metadata_db)) as conn:
        rows = conn.execute("SELECT status, error FROM permafrost.backups").fetchall()
        runs = conn.execute("SELECT status FROM permafrost.job_runs").fetchall()
    assert [r[0] for r in rows] == ["failed"] and rows[0][1]
    assert runs == [("failed",)]
    settings = Settings.from_env({**fenv, "DB_NAME": big_db, "ALERT_CHECK_INTERVAL": "0"})
    outcome = Evaluator(settings).run_once()
    assert outcome is not None
    assert f"backup_failed:{big_db}" in [f.key for f in outcome.findings]
    ledger.record("storage: persistent upload failure", injected=injected, survived=injected)


def test_wal_push_and_fetch_get_through_transient_faults(
    env: dict[str, str], proxy: FaultProxy, tmp_path: Path, ledger: Ledger
) -> None:
    fenv = {**env, "S3_ENDPOINT_URL": proxy.url, "S3_MAX_ATTEMPTS": "6", "WAL_PREFETCH": "0"}
    segments = []
    for n in range(1, 4):
        name = f"0000000100000000000000{n:02X}"
        path = tmp_path / name
        path.write_bytes(os.urandom(1024 * 1024) * 16)
        segments.append(path)
    before = proxy.total_injected()
    proxy.set(Plan("slowdown", rate=0.3, seed=11))
    try:
        for path in segments:
            run(fenv, "wal-push", str(path))
        proxy.set(Plan("cut", rate=0.3, seed=12))
        for path in segments:
            out = tmp_path / f"{path.name}.fetched"
            run(fenv, "wal-fetch", path.name, str(out))
            assert out.read_bytes() == path.read_bytes()
    finally:
        proxy.clear()
    injected = proxy.total_injected() - before
    assert injected > 0
    ledger.record("storage: wal-push/wal-fetch faults", injected=injected, survived=injected)
