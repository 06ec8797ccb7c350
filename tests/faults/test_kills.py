"""Process kills: `kill -9` of `permafrost backup` at many moments (during the dump, the upload,
around the manifest). Afterwards every backup whose manifest exists verifies, no manifest
exists without all its data, and retention removes what the killed runs left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import PERMAFROST, make_sample_database, run
from tests.faults.conftest import Ledger, blob
from tests.services import Cluster

FRACTIONS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95]


@pytest.fixture(scope="module")
def kill_db(pg: Cluster) -> str:
    return make_sample_database(pg, extra_sql=blob(120000))


def test_kill_9_at_many_moments_loses_nothing_and_retention_cleans_up(
    env: dict[str, str], pg: Cluster, kill_db: str, tmp_path: Path, ledger: Ledger
) -> None:
    bucket = tmp_path / "bucket"
    kenv = {
        **env,
        "STORAGE_URL": f"file://{bucket}",
        "DATABASE_URL": env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + kill_db,
        "UPLOAD_PART_SIZE_MB": "5",
        "RETENTION_MIN_KEEP": "50",  # so retention removes only what the kills left behind
    }
    run(kenv, "init")
    started = time.monotonic()
    run(kenv, "backup")  # how long one takes, start-up included: kill at fractions of it
    duration = time.monotonic() - started
    killed = 0
    for delay in (duration * f for f in FRACTIONS):
        proc = subprocess.Popen(
            [PERMAFROST, "backup"], env=kenv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    assert killed >= 4, "the backups finished before they could be killed"
    folders = [f for f in (bucket / "standard" / kill_db).iterdir()]
    complete = [f for f in folders if (f / "manifest.json").exists()]
    for folder in complete:  # a manifest never exists without all its data
        result = run(kenv, "verify", folder.name)
        assert "verified" in result.stdout
    # Age everything the killed runs left (orphans, staged parts) past retention's limits.
    old = time.time() - 3 * 86400
    for path in bucket.rglob("*"):
        os.utime(path, (old, old), follow_symlinks=False)
    run(kenv, "retention", "--apply")
    left = [f for f in (bucket / "standard" / kill_db).iterdir()]
    assert sorted(f.name for f in left) == sorted(f.name for f in complete)
    assert (
        not list((bucket / ".multipart").rglob("*")) if (bucket / ".multipart").exists() else True
    )
    for folder in left:
        run(kenv, "verify", folder.name)
    ledger.record("process kills: backup kill -9", injected=killed, survived=killed)


def test_kill_9_of_wal_push_mid_upload_then_the_retry_archives_it(
    env: dict[str, str], tmp_path: Path, ledger: Ledger, request: pytest.FixtureRequest
) -> None:
    from tests.faults.proxy import Plan
    from tests.helpers import objects

    proxy = request.getfixturevalue("proxy")
    s3 = request.getfixturevalue("s3")
    bucket = request.getfixturevalue("bucket")
    wenv = {**env, "S3_ENDPOINT_URL": proxy.url, "WAL_PREFETCH": "0"}
    segment = tmp_path / "000000010000000000000007"
    segment.write_bytes(os.urandom(1024 * 1024) * 16)
    run(wenv, "init")
    proxy.set(Plan("stall", method="PUT", nth={1}, stall_seconds=4.0))
    try:
        push = subprocess.Popen(
            [PERMAFROST, "wal-push", str(segment)],
            env=wenv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(2.0)  # the upload is stalled at the proxy: kill it mid-flight
        assert push.poll() is None
        push.send_signal(signal.SIGKILL)
        push.wait()
    finally:
        proxy.clear()
    time.sleep(2.5)  # the stalled request reaches the S3 server after its sender died
    run(wenv, "wal-push", str(segment))  # what PostgreSQL does next: it retries the file
    out = tmp_path / "fetched"
    run(wenv, "wal-fetch", segment.name, str(out))
    assert out.read_bytes() == segment.read_bytes()
    keys = [k for k in objects(s3, bucket, "backups/wal/") if k.endswith(".pfe")]
    assert keys == [f"backups/wal/main/00000001/{segment.name}.pfe"]
    ledger.record("process kills: wal-push kill -9", injected=1, survived=1)


def test_kill_9_of_the_leading_scheduler_mid_backup_the_standby_finishes_the_job(
    env: dict[str, str],
    pg: Cluster,
    metadata_db: str,
    source_db: str,
    tmp_path: Path,
    ledger: Ledger,
) -> None:
    import psycopg

    from tests.test_scheduler import QUIET, Scheduler, installed_long_ago, leader, query, wait_for

    extra = {
        **QUIET,
        "DB_NAME": source_db,
        "BACKUP_SCHEDULE": "0 0 1 1 *",  # due on 1 January: missed, so run once at election
        "SCHEDULE_MISFIRE_GRACE": "400d",
    }
    installed_long_ago(env, pg, metadata_db)
    blocker = psycopg.connect(pg.url(source_db))
    blocker.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")  # pg_dump waits on it
    first = Scheduler({**env, **extra}, tmp_path / "first.log")
    try:
        wait_for(
            lambda: query(pg, metadata_db, "SELECT 1 FROM job_runs WHERE status = 'running'"),
            "the first scheduler's backup to start",
        )
        second = Scheduler({**env, **extra}, tmp_path / "second.log")
        wait_for(
            lambda: query(pg, metadata_db, "SELECT 1 FROM heartbeats WHERE role = 'standby'"),
            "the standby",
        )
        first.kill()  # kill -9 in the middle of the backup
        blocker.close()
        wait_for(
            lambda: (leader(pg, metadata_db) or "").endswith(f":{second.pid}"),
            "the standby to lead",
        )
        wait_for(
            lambda: query(pg, metadata_db, "SELECT 1 FROM job_runs WHERE status = 'succeeded'"),
            "the new leader's backup",
            timeout=90,
        )
        assert second.stop() == 0
    finally:
        for process in (first,):
            if process.proc.poll() is None:
                process.kill()
    runs = query(pg, metadata_db, "SELECT status, error FROM job_runs ORDER BY id")
    assert [r[0] for r in runs] == ["aborted", "succeeded"], runs
    assert "died" in runs[0][1]
    completed = query(pg, metadata_db, "SELECT count(*) FROM backups WHERE status = 'completed'")
    assert completed == [(1,)]
    ledger.record("process kills: leading scheduler mid-backup", injected=1, survived=1)
