"""A fleet from SOURCES_FILE against real servers: three sources on three PostgreSQL majors
(one `databases: all` on a cluster of its own), each backed up by the scheduler's jobs at its own
schedule; a database created between runs is picked up; one dropped raises database_gone, whose
email arrives; two sources' databases of one name are kept apart; `backup --all --source`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.alerts.evaluator import Evaluator
from permafrost.catalog.jobs import JobName
from permafrost.catalog.store import Catalog, connect
from permafrost.config.fleet import forget_cached
from permafrost.config.settings import Settings
from permafrost.layout import new_backup_id
from permafrost.logs import sayer
from scheduler.jobs import Jobs, JobSpec
from scheduler.service import Service
from tests.conftest import bucket_env, run, unique
from tests.majors import Servers, client_bin, server_bin
from tests.services import Cluster, S3Server
from tests.test_alerts import SMTPServer, alert, make_settings


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.stop()


@pytest.fixture
def alpha() -> Iterator[Cluster]:
    """A server of its own for `databases: all`: nothing else creates databases on it."""
    cluster = Cluster("alpha", bin_dir=server_bin(17)).start()
    yield cluster
    cluster.destroy()


class Fleet:
    """Three sources: alpha (17, all), beta (14, a list), gamma (the session's server, a list);
    beta and gamma each have a database of the same name."""

    def __init__(self, tmp: Path, alpha: Cluster, beta: Cluster, gamma: Cluster) -> None:
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.app = unique("app")
        for cluster in (beta, gamma):
            cluster.create_database(self.app)
            cluster.execute(f"CREATE TABLE t AS SELECT '{cluster.port}' AS port", self.app)
        for name in ("one", "two", "scratch"):
            alpha.create_database(name)
        self.secret = tmp / "alpha-password"
        self.secret.write_text(alpha.url().split(":")[2].split("@")[0])
        self.path = tmp / "sources.yaml"
        self.write(exclude="[scratch, postgres]")

    def write(self, exclude: str) -> None:
        alpha_url = self.alpha.url().replace(":" + self.secret.read_text() + "@", "@")
        self.path.write_text(
            f"""\
sources:
  - name: alpha
    url: {alpha_url}   # password from password_file
    password_file: {self.secret}
    databases: all
    exclude: {exclude}
  - name: beta
    url: {self.beta.url()}
    databases: [{self.app}]
    schedules: {{backup: "15 3 * * *"}}
  - name: gamma
    url: {self.gamma.url()}
    databases: [{self.app}]
    kinds: [logical]
"""
        )
        forget_cached()

    def drop(self) -> None:
        for cluster in (self.beta, self.gamma):
            cluster.drop_database(self.app)


@pytest.fixture
def fleet(tmp_path: Path, alpha: Cluster, servers: Servers, pg: Cluster) -> Iterator[Fleet]:
    made = Fleet(tmp_path, alpha, servers(14), pg)
    yield made
    made.drop()
    forget_cached()


@pytest.fixture
def fleet_env(
    fleet: Fleet, pg: Cluster, s3: S3Server, bucket: str, metadata_db: str, tmp_path: Path
) -> dict[str, str]:
    import os

    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SOURCES_FILE": str(fleet.path),
        "METADATA_DATABASE_URL": pg.url(metadata_db),
        "PG_BIN_DIRS": str(client_bin(18)),
        **bucket_env(s3, bucket),
    }


def _completed(catalog: Catalog) -> dict[str, int]:
    rows = catalog.conn.execute(
        "SELECT database, count(*) FROM backups WHERE status = 'completed' GROUP BY database"
    ).fetchall()
    return {name: count for name, count in rows}


def _source_job(jobs: Jobs, source: str) -> None:
    jobs.run(JobSpec(f"backup:@{source}", JobName.BACKUP, None, "critical", source))


def test_the_scheduler_backs_up_every_source_and_notices_new_and_dropped_databases(
    fleet: Fleet, fleet_env: dict[str, str], smtp: SMTPServer, s3: S3Server, bucket: str
) -> None:
    settings = make_settings(fleet_env, smtp.port)
    service = Service(settings, sayer("scheduler"))
    ids = {spec.id: sched.text for spec, sched in service.specs}
    # each source's own jobs at its own schedule; gamma runs only logical backups
    assert ids["backup:@alpha"] == "0 2 * * *" and ids["backup:@beta"] == "15 3 * * *"
    assert "compliance_backup:@beta" in ids and "compliance_backup:@gamma" not in ids
    jobs = Jobs(settings, sayer("scheduler"), threading.Event())
    for source in ("alpha", "beta", "gamma"):
        _source_job(jobs, source)
    catalog = connect(settings.metadata_url)
    app = fleet.app
    assert _completed(catalog) == {
        "alpha.one": 1,
        "alpha.two": 1,
        f"beta.{app}": 1,
        f"gamma.{app}": 1,
    }
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.startswith(f"backups/standard/beta.{app}/") for k in keys)
    assert any(k.startswith(f"backups/standard/gamma.{app}/") for k in keys)
    assert not any("/alpha.scratch/" in k or "/alpha.postgres/" in k for k in keys)

    # a leader's catch-up: a source's job ran when any of its databases' did
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    specs = {spec.id: spec for spec, _ in service.specs}
    assert service._ran_since(catalog, specs["backup:@alpha"], hour_ago)
    assert not service._ran_since(catalog, specs["compliance_backup:@alpha"], hour_ago)

    fleet.alpha.create_database("three")  # between two runs: backed up from the next one on
    _source_job(jobs, "alpha")
    assert _completed(catalog)["alpha.three"] == 1
    assert _completed(catalog)["alpha.one"] == 2

    fleet.alpha.drop_database("two")
    _source_job(jobs, "alpha")
    assert "alpha.two" in _completed(catalog)  # its backups stay; its absence is news
    evaluator = Evaluator(settings)
    outcome = evaluator.run_once()
    assert outcome is not None and "database_gone:alpha:two" in outcome.applied.opened
    [message] = smtp.mailbox.about("database_gone:alpha:two")
    assert "database two of source alpha is no longer on the server" in str(message["Subject"])
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and "exclude of source alpha" in str(body.get_content())

    # every alert about a fleet database says its source (details, so the email too)
    catalog.conn.execute(
        "INSERT INTO backups (id, database, kind, tier, status, started_at, finished_at, error)"
        " VALUES (%s, %s, 'logical', 'standard', 'failed', now(), now(), 'pg_dump: oom')",
        (new_backup_id(), f"beta.{app}"),
    )
    evaluator.run_once()
    failed = alert(catalog, f"backup_failed:beta.{app}")
    assert failed["details"]["source"] == "beta"
    [mail] = smtp.mailbox.about(f"backup_failed:beta.{app}")
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None and "beta" in str(text.get_content())

    # dropped on purpose: excluded in the file, the next listing forgets it and it resolves
    fleet.write(exclude="[scratch, postgres, two]")
    settings = make_settings(fleet_env, smtp.port)
    _source_job(Jobs(settings, sayer("scheduler"), threading.Event()), "alpha")
    outcome = Evaluator(settings).run_once()
    assert outcome is not None and "database_gone:alpha:two" in outcome.applied.resolved
    evaluator.stop()


def test_backup_all_takes_every_database_of_one_source_now(
    fleet: Fleet, fleet_env: dict[str, str]
) -> None:
    done = run(fleet_env, "backup", "--all", "--source", "alpha", "--json")
    taken = json.loads(done.stdout)
    assert sorted(t["database"] for t in taken) == ["alpha.one", "alpha.two"]
    assert {t["source"] for t in taken} == {"alpha"}
    done = run(fleet_env, "backup", "--all", "--json")
    assert len(json.loads(done.stdout)) == 4  # alpha's two, beta's and gamma's app
    refused = run(fleet_env, "backup", "--all", "--source", "nope", check=False)
    assert refused.returncode == 2
    assert "no source named 'nope'" in refused.stderr and "alpha, beta, gamma" in refused.stderr
    # a restore goes to the backup's own server by default, and never over its database
    run(fleet_env, "restore", "latest", "--database", "alpha.one", "--target-db", "one_copy")
    assert fleet.alpha.execute("SELECT 1 FROM pg_database WHERE datname = 'one_copy'")
    over = run(
        fleet_env,
        "restore",
        "latest",
        "--database",
        "alpha.one",
        "--target-db",
        "one",
        check=False,
    )
    assert over.returncode == 2 and "refusing to restore over one" in over.stderr
    listed = json.loads(run(fleet_env, "list", "--source", "alpha", "--json").stdout)
    assert {b["database"] for b in listed} == {"alpha.one", "alpha.two"} and len(listed) == 4
    status = run(fleet_env, "status", "--source", "beta").stdout
    assert f"beta.{fleet.app}" in status and "alpha.one" not in status
    state = json.loads(run(fleet_env, "status", "--source", "alpha", "--json").stdout)
    assert sorted(state["databases"]) == ["alpha.one", "alpha.two"]
    times = json.loads(run(fleet_env, "recovery-time", "--source", "gamma", "--json").stdout)
    assert [e["database"] for e in times["estimates"]] == [f"gamma.{fleet.app}"]
    plan = run(fleet_env, "plan", "disaster", "--source", "gamma").stdout
    assert f"gamma.{fleet.app}" in plan and f"beta.{fleet.app}" not in plan
    one = run(fleet_env, "backup", "--database", f"beta.{fleet.app}", "--json")
    assert json.loads(one.stdout)["database"] == f"beta.{fleet.app}"
    typo = run(fleet_env, "backup", "--database", fleet.app, check=False)
    assert typo.returncode == 2 and "name it SOURCE.DATABASE" in typo.stderr


def test_the_old_variables_still_mean_one_server_with_unchanged_names(
    env: dict[str, str], source_db: str
) -> None:
    taken = json.loads(run(env, "backup", "--all", "--json").stdout)
    assert [t["database"] for t in taken] == [source_db]  # no source prefix: keys as before
    assert Settings.from_env(env).sources_file is None


@pytest.fixture
def fleet_monitor(fleet_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    import subprocess

    from tests.conftest import PERMAFROST
    from tests.services import serve_http

    menv = {**fleet_env, "ALERT_CHECK_INTERVAL": "3600"}
    log = (tmp_path / "monitor.log").open("wb")

    def start(port: int) -> subprocess.Popen[bytes]:
        command = [PERMAFROST, "monitor", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        return subprocess.Popen(command, env=menv, stdout=log, stderr=subprocess.STDOUT)

    proc, port = serve_http(start)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_the_dashboard_shows_every_source_filters_by_one_and_metrics_label_the_source(
    fleet: Fleet, fleet_env: dict[str, str], fleet_monitor: str
) -> None:
    import shutil
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    run(fleet_env, "backup", "--all")
    fleet.alpha.drop_database("two")
    fleet.alpha.create_database("three")  # backed up by the next run
    run(fleet_env, "backup", "--all", "--source", "gamma")
    run(fleet_env, "backup", "--all", "--source", "alpha")

    with urllib.request.urlopen(fleet_monitor + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    labels = [
        s.labels
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "permafrost_backup_last_success_timestamp_seconds"
    ]
    assert {"database": f"beta.{fleet.app}", "kind": "logical", "source": "beta"} in labels
    assert {"database": "alpha.one", "kind": "logical", "source": "alpha"} in labels
    assert all(
        "source" in s.labels
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if "database" in s.labels
    )

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.goto(fleet_monitor + "/")
        cards = page.locator("article.card")
        shown = {cards.nth(i).get_attribute("data-database") for i in range(cards.count())}
        assert shown == {
            "alpha.one",
            "alpha.two",
            "alpha.three",
            f"beta.{fleet.app}",
            f"gamma.{fleet.app}",
        }
        gone = page.locator("article.card[data-database='alpha.two']")
        assert "gone" in (gone.get_attribute("class") or "") and "GONE" in gone.inner_text()
        three = page.locator("article.card[data-database='alpha.three']").inner_text()
        assert "Last backup: never" not in three  # created between two runs, taken by the next
        assert "alpha (3, 1 gone)" in page.locator("nav.sources").inner_text()
        page.locator("nav.sources a[data-source='beta']").click()
        page.wait_for_url("**source=beta")
        cards = page.locator("article.card")
        assert cards.count() == 1
        assert cards.first.get_attribute("data-source") == "beta"
        assert "beta" in page.locator("nav.sources a.current").inner_text()
        jobs = page.locator("h2:has-text('Recent jobs') + table").inner_text()
        assert f"beta.{fleet.app}" in jobs and "alpha.one" not in jobs
        page.screenshot(path="test-artifacts/dashboard-fleet.png", full_page=True)
        browser.close()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(fleet_monitor + "/?source=nope", timeout=10)
    assert missing.value.code == 404
