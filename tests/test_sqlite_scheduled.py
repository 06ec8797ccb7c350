"""Scheduled SQLite backups: the scheduler's jobs take them, the dashboard and /metrics show
them like the others, and a failed one emails the on-call person."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.alerts.evaluator import Evaluator
from monitor.app import create_app
from permafrost.catalog.jobs import JobName
from permafrost.config.settings import Settings
from permafrost.logs import sayer
from scheduler.jobs import Jobs, JobSpec
from tests.conftest import bucket_env, run, unique
from tests.helpers import loads
from tests.services import Cluster, S3Server
from tests.test_alerts import SMTPServer, make_settings, parts
from tests.test_sqlite import make_file

HTML = {"Accept": "text/html"}


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.stop()


@pytest.fixture
def app_file(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.db"
    make_file(path, "wal", rows=200)
    return path


@pytest.fixture
def fenv(pg: Cluster, s3: S3Server, app_file: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    bucket = f"pf-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    metadata = pg.create_database(unique("meta"))
    yield {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite://{app_file}",
        "METADATA_DATABASE_URL": pg.url(metadata),
        **bucket_env(s3, bucket),
    }
    pg.drop_database(metadata)


def scrape(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def test_scheduled_sqlite_backups_show_like_the_others_and_a_failure_emails(
    fenv: dict[str, str], app_file: Path, smtp: SMTPServer
) -> None:
    schedules = run(fenv, "scheduler", "--check").stdout
    assert "backup:jobs.db:" in schedules and "compliance_backup:jobs.db:" in schedules
    assert "base_backup" not in schedules, "no PostgreSQL cluster is configured"

    settings: Settings = make_settings(fenv, smtp.port)
    jobs = Jobs(settings, sayer("test"), threading.Event())
    spec = JobSpec("backup:jobs.db", JobName.BACKUP, "jobs.db", "critical")
    jobs.run(spec)  # what the 02:00 cron trigger runs
    tagged = jobs.backup(spec, "task", "before the v3 migration", ("deploy", "v3"))["backup_id"]
    [scheduled, _] = loads(run(fenv, "list", "--json").stdout)[::-1]
    assert scheduled["kind"] == "sqlite" and scheduled["status"] == "completed"

    client = create_app(settings, evaluate=False).test_client()
    page = client.get("/", headers=HTML).get_data(as_text=True)
    assert 'data-database="jobs.db"' in page and "SQLite" in page and tagged in page
    listed = client.get("/backups?tag=v3", headers=HTML).get_data(as_text=True)
    assert tagged in listed and scheduled["id"] not in listed
    assert "before the v3 migration" in listed and ">deploy</a>" in listed
    detail = client.get(f"/backup/{tagged}", headers=HTML).get_data(as_text=True)
    assert str(app_file) in detail and "user_version" in detail
    assert f"--target-path {app_file}.restored" in detail

    samples = scrape(client.get("/metrics").get_data(as_text=True))
    labels = (("database", "jobs.db"), ("kind", "sqlite"))
    assert labels in samples["permafrost_backup_last_success_timestamp_seconds"]
    runs = samples["permafrost_backup_runs_total"]
    assert runs[(*labels, ("status", "succeeded"))] == 2

    app_file.rename(app_file.with_suffix(".moved"))  # the application's volume went away
    jobs.run(spec)
    Evaluator(settings).run_once()
    [message] = smtp.mailbox.about("job_failed:backup:jobs.db")
    assert "backup of jobs.db failed" in message["Subject"]
    assert f"SQLite file {app_file} does not exist" in parts(message)[0]
    samples = scrape(client.get("/metrics").get_data(as_text=True))
    assert samples["permafrost_backup_runs_total"][(*labels, ("status", "failed"))] == 1
    assert labels in samples["permafrost_backup_last_failure_timestamp_seconds"]
    failing = client.get("/", headers=HTML).get_data(as_text=True)
    assert "Last backup FAILED" in failing
