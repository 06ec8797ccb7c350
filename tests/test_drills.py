"""PITR drills end to end: queued the way the schedule queues them, run by the restore worker on
a real cluster (Debian's 15, archiving through wal-push), recorded, reported by recovery-time,
/metrics and the dashboard; a failing drill recorded, alerted and emailed, then resolved."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.alerts.evaluator import Evaluator
from monitor.app import create_app
from monitor.metrics import render
from permafrost.catalog.jobs import JobName
from permafrost.catalog.records import DrillRecord
from permafrost.catalog.store import Catalog, connect
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.logs import sayer
from restore.worker import Worker
from scheduler.jobs import Jobs, JobSpec
from tests.conftest import run
from tests.helpers import loads, objects
from tests.services import Cluster, S3Server
from tests.test_alerts import SMTPServer, make_settings
from tests.test_pitr import Archiving

say = sayer("test")


@pytest.fixture(scope="module")
def archiving(s3: S3Server, pg: Cluster) -> Iterator[Archiving]:
    metadata = pg.create_database(f"meta_drill_{uuid.uuid4().hex[:8]}")
    source = Archiving(s3, pg.url(metadata))
    yield source
    source.cluster.destroy()
    pg.drop_database(metadata)


@pytest.fixture(scope="module")
def scratch_root() -> Iterator[Path]:
    """RESTORE_TMPDIR: where drills make their scratch directories (reachable by postgres)."""
    root = Path(tempfile.mkdtemp(prefix="pf-drill-tmp-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.stop()


def drill_env(archiving: Archiving, tmp: Path, scratch_root: Path) -> dict[str, str]:
    return archiving.env(
        tmp, RESTORE_TMPDIR=str(scratch_root), PITR_DRILL_MARGIN="2", WAL_ARCHIVING="push"
    )


def drills(settings: Settings) -> list[DrillRecord]:
    catalog: Catalog = connect(settings.metadata_url)
    try:
        return catalog.drills("main")
    finally:
        catalog.close()


def test_a_scheduled_drill_run_by_the_worker_records_what_recovery_time_reports(
    archiving: Archiving, scratch_root: Path, tmp_path: Path
) -> None:
    src = archiving.cluster
    db = src.create_database("drilled")
    src.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)", db)
    env = drill_env(archiving, tmp_path, scratch_root)
    base = loads(run(env, "backup", "--kind", "base", "--json").stdout)
    src.execute("INSERT INTO t (v) SELECT 'a' || g FROM generate_series(1, 20000) g", db)
    time.sleep(3.5)  # the target (the newest WAL minus 2 s) falls after the base backup
    src.execute("INSERT INTO t (v) VALUES ('after the target')", db)
    archiving.switch_and_wait()
    settings = Settings.from_env(env)
    before = run(env, "recovery-time").stdout  # no drill yet: said to be an assumption
    assert "cluster main (pitr --latest)" in before
    assert "assumed: no PITR drill has succeeded yet" in before

    Jobs(settings, say, threading.Event()).run(
        JobSpec("pitr_drill:main", JobName.PITR_DRILL, "main")
    )
    assert Worker(Context(settings), say).run(once=True) == 0

    [drill] = drills(settings)
    assert drill.status == "succeeded", drill.error
    assert drill.trigger == "scheduler" and drill.base_backup_id == base["id"]
    assert drill.repository_id != ""  # recorded in the repository's scope, like its backups
    assert drill.target_time is not None and drill.reached_at is not None
    assert drill.reached_at >= drill.target_time  # stopped before the first commit past it
    assert drill.last_replayed_at is not None and drill.last_replayed_at <= drill.target_time
    assert drill.details and str(drill.details["stopped"]).startswith("before commit")
    assert drill.fetch_seconds and drill.replay_seconds and drill.recovery_seconds
    assert drill.recovery_seconds >= drill.fetch_seconds + drill.replay_seconds
    assert drill.wal_bytes and drill.wal_bytes > 1_000_000  # the 20,000 rows, at least
    assert drill.rpo_seconds is not None and 0 <= drill.rpo_seconds < 60
    assert list(scratch_root.iterdir()) == []  # the scratch directory is gone

    day = f"{drill.started_at:%Y-%m-%d}"
    out = run(env, "recovery-time").stdout
    assert "cluster main (pitr --latest)" in out and f"measured by the drill of {day}" in out
    run(env, "backup")  # a logical backup too: the disaster plan lists the databases
    plan = run(env, "plan", "disaster").stdout
    assert "Estimated recovery time with pitr --latest (cluster main)" in plan
    assert (
        f"measured by the drill of {day}" in plan
        and f"the drill of {drill.started_at:%Y-%m-%d}" in plan
    )
    pitr = loads(run(env, "recovery-time", "--json").stdout)["pitr"]
    assert pitr["measured"] is True and pitr["drill"]["base_backup_id"] == base["id"]
    metrics = render(connect(settings.metadata_url), settings).decode()
    assert 'permafrost_pitr_drill_recovery_seconds{cluster="main"}' in metrics
    assert 'permafrost_pitr_drill_rpo_seconds{cluster="main"}' in metrics
    assert 'permafrost_pitr_drill_last_success_timestamp_seconds{cluster="main"}' in metrics
    client = create_app(settings, evaluate=False).test_client()
    page = client.get("/").get_data(as_text=True)
    assert "PITR drills" in page and "SUCCEEDED" in page and "recovered in" in page
    api = client.get("/recovery-time", headers={"Accept": "application/json"}).get_json()
    assert api["pitr"][0]["cluster"] == "main" and api["pitr"][0]["recovery_seconds"] > 0


def test_a_failed_drill_is_recorded_alerted_and_emailed_then_resolved(
    archiving: Archiving, s3: S3Server, scratch_root: Path, smtp: SMTPServer, tmp_path: Path
) -> None:
    src = archiving.cluster
    env = drill_env(archiving, tmp_path, scratch_root)
    run(env, "backup", "--kind", "base")
    for _ in range(2):
        src.execute("CREATE TABLE IF NOT EXISTS more (v int); INSERT INTO more VALUES (1)")
        archiving.switch_and_wait()
    names = [k.rsplit("/", 1)[-1].removesuffix(".pfe") for k in objects(s3, archiving.bucket)]
    segments = sorted(n for n in names if len(n) == 24)
    missing = segments[-2]  # after the base backup, with one archived after it
    key = f"backups/wal/main/00000001/{missing}.pfe"
    kept = s3.client().get_object(Bucket=archiving.bucket, Key=key)["Body"].read()
    s3.client().delete_object(Bucket=archiving.bucket, Key=key)

    failed = run(env, "drill", check=False)
    assert failed.returncode == 5 and missing in failed.stderr, failed.stderr
    settings = make_settings(env, smtp.port)
    newest = drills(settings)[0]
    assert newest.status == "failed" and newest.error and missing in newest.error
    assert list(scratch_root.iterdir()) == []

    evaluator = Evaluator(settings)
    evaluator.run_once()
    [message] = smtp.mailbox.about("pitr_drill:main")
    assert message["Subject"].startswith(
        "[permafrost] CRITICAL: the PITR drill of cluster main failed:"
    )
    assert "permafrost drill --cluster main" in message.get_body(("plain",)).get_content()

    s3.client().put_object(Bucket=archiving.bucket, Key=key, Body=kept)
    src.execute("INSERT INTO more VALUES (2)")
    time.sleep(2.5)
    src.execute("INSERT INTO more VALUES (3)")
    archiving.switch_and_wait()
    assert "succeeded" in run(env, "drill").stdout
    outcome = evaluator.run_once()
    assert outcome is not None and "pitr_drill:main" in outcome.applied.resolved
    evaluator.run_once()
    subjects = [str(m["Subject"]) for m in smtp.mailbox.about("pitr_drill:main")]
    assert subjects[1].startswith("[permafrost] RESOLVED: the PITR drill of cluster main failed")
    assert list(scratch_root.iterdir()) == []

    # No success for twice the weekly schedule: a warning under the same key.
    catalog = connect(settings.metadata_url)
    catalog.conn.execute("UPDATE drills SET started_at = started_at - interval '15 days'")
    catalog.close()
    evaluator.run_once()
    [overdue] = smtp.mailbox.about("pitr_drill:main")[2:]
    assert " ".join(str(overdue["Subject"]).split()) == (
        "[permafrost] WARNING: no PITR drill of cluster main has succeeded for 15 days"
    )
    evaluator.stop()


def test_no_base_backup_is_nothing_to_drill_not_a_failed_drill(env: dict[str, str]) -> None:
    run(env, "init")
    refused = run(env, "drill", check=False)
    assert refused.returncode == 3 and "has no base backup" in refused.stderr, refused.stderr
    queued = loads(run(env, "drill", "--queue", "--json").stdout)
    assert queued == {"cluster": "main", "queued": False, "skipped": "no base backup yet"}
    assert drills(Settings.from_env(env)) == []
