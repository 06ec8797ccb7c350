"""The monitor when the metadata store or the source goes away: connections checked out healthy
after a restart, the outage alerts it sends by itself (real SMTP), and the page it shows."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.alerts.outage import OutageWatch
from monitor.app import create_app
from permafrost.config.settings import Settings
from tests.conftest import run
from tests.services import PASSWORD, Cluster, _as_owner
from tests.test_alerts import SMTPServer


@pytest.fixture
def store() -> Iterator[Cluster]:
    cluster = Cluster("meta-restart").start()
    cluster.create_database("permafrost")
    yield cluster
    cluster.destroy()


def pg_ctl_restart(cluster: Cluster) -> None:
    """`pg_ctl restart`, as an operator runs it: every session of the server ends."""
    pg_ctl = [*_as_owner(), str(cluster.bin / "pg_ctl"), "-D", str(cluster.data)]
    subprocess.run(
        [*pg_ctl, "-m", "fast", "-l", str(cluster.root / "log"), "-w", "-t", "60", "restart"],
        check=True,
        capture_output=True,
    )


def test_it_answers_the_first_requests_after_a_restart_of_the_store(
    store: Cluster, tmp_path: Path
) -> None:
    settings = Settings.from_env(
        {
            "METADATA_DATABASE_URL": store.url("permafrost"),
            "STORAGE_URL": f"file://{tmp_path / 'bucket'}",
            "MONITOR_STATE_DIR": str(tmp_path / "state"),
        }
    )
    client = create_app(settings, evaluate=False).test_client()
    for path in ("/status", "/alerts", "/metrics"):
        assert client.get(path).status_code == 200, path
    pg_ctl_restart(store)
    for path in ("/status", "/alerts", "/metrics", "/status"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_data(as_text=True))


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.stop()


def outage_settings(store: Cluster, smtp: SMTPServer, tmp_path: Path) -> Settings:
    """The metadata store and the source on one server, as in native mode."""
    return Settings.from_env(
        {
            "METADATA_DATABASE_URL": store.url("permafrost"),
            "DATABASE_URL": store.url("shop"),
            "STORAGE_URL": f"file://{tmp_path / 'bucket'}",
            "MONITOR_STATE_DIR": str(tmp_path / "state"),
            "ALERT_EMAIL": "oncall@example.com",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp.port),
            "SMTP_TLS": "none",
            "SMTP_FROM": "permafrost@example.com",
        }
    )


def test_it_alerts_once_on_a_dead_store_and_source_and_resolves_without_the_store(
    store: Cluster, smtp: SMTPServer, tmp_path: Path
) -> None:
    store.create_database("shop")
    settings = outage_settings(store, smtp, tmp_path)
    clock = Clock()
    assert OutageWatch(settings).run_once(clock.now) == []
    store.stop()
    assert OutageWatch(settings).run_once(clock.later(61)) == []  # one failed probe: a blip
    store.start()
    assert OutageWatch(settings).run_once(clock.later(61)) == []  # forgotten, not resolved
    store.stop()
    watch = OutageWatch(settings)
    assert watch.run_once(clock.later(61)) == []
    assert watch.run_once(clock.later(10)) == []  # two failures, but not an interval apart
    assert sorted(watch.run_once(clock.later(51)) or []) == [
        "opened:email:metadata_unreachable",
        "opened:email:source_unreachable",
    ]
    subjects = smtp.mailbox.subjects()
    assert len(subjects) == 2 and all(s.startswith("[permafrost] CRITICAL: the") for s in subjects)
    [mail] = smtp.mailbox.about("metadata_unreachable")
    text = str(mail.get_body(preferencelist=("plain",)).get_content())  # type: ignore[union-attr]
    assert "permafrost list" in text and "permafrost restore latest" in text
    written = "".join(p.read_text() for p in (tmp_path / "state").glob("*.json"))
    assert "metadata_unreachable" in written and PASSWORD not in written
    assert all(PASSWORD not in m.as_string() for m in smtp.mailbox.messages)
    assert watch.run_once(clock.later(61)) == []
    assert OutageWatch(settings).run_once(clock.later(61)) == []  # a restarted monitor remembers
    assert len(smtp.mailbox.messages) == 2

    store.start()
    assert sorted(OutageWatch(settings).run_once(clock.later(61)) or []) == [
        "resolved:email:metadata_unreachable",
        "resolved:email:source_unreachable",
    ]
    assert [s.split(":")[0] for s in smtp.mailbox.subjects()[2:]] == ["[permafrost] RESOLVED"] * 2
    assert OutageWatch(settings).run_once(clock.later(61)) == []
    assert len(smtp.mailbox.messages) == 4


class Clock:
    """Moments for the watch's probes, starting ten minutes ago: time passing, played."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) - timedelta(minutes=10)

    def later(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def test_it_shows_what_is_down_since_when_and_what_still_works(
    store: Cluster, smtp: SMTPServer, tmp_path: Path
) -> None:
    store.create_database("shop")
    settings = outage_settings(store, smtp, tmp_path)
    client = create_app(settings, evaluate=False).test_client()
    assert client.get("/status").status_code == 200
    store.stop()
    watch, clock = OutageWatch(settings), Clock()
    watch.run_once(clock.now)
    watch.run_once(clock.later(61))
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 503
    html = page.get_data(as_text=True)
    assert "The metadata store is unreachable" in html and "Down since" in html
    assert f"{clock.now - timedelta(seconds=61):%Y-%m-%d %H:%M:%S} UTC" in html
    assert "the source database server" in html  # the other outage the watch knows of
    assert "sent (email)" in html
    assert "The bucket answers" in html and "permafrost restore latest" in html
    api = client.get("/status")
    assert api.status_code == 503
    line = api.json["error"]
    assert line.startswith("the metadata store (127.0.0.1:") and " since 20" in line
    assert "the bucket answers" in line and "`permafrost list`" in line and "\n" not in line
    assert [d["alerted"] for d in api.json["down"]] == [True, True]
    no_bucket = replace(
        settings, storage=replace(settings.storage, url="file:///nonexistent-pf/bucket")
    )
    both = create_app(no_bucket, evaluate=False).test_client().get("/status")
    assert both.status_code == 503 and both.json["bucket"] == "unreachable"
    assert (
        "the bucket does not answer either (cannot use /nonexistent-pf/bucket"
        in (both.json["error"])
    )
    store.start()
    assert client.get("/status").status_code == 200


def test_it_refuses_a_state_dir_it_cannot_write(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "METADATA_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
        "MONITOR_STATE_DIR": "/proc/permafrost-state",
    }
    result = run(env, "monitor", "--bind", "127.0.0.1:1", check=False)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("permafrost: error: MONITOR_STATE_DIR=/proc/permafrost-state: cannot")
