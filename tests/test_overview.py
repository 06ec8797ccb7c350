"""The dashboard's overview as a browser gets it, and the scheduler state it and /status show."""

from __future__ import annotations

import os
import re

import pytest
from flask.testing import FlaskClient

from monitor.app import create_app
from permafrost.catalog.store import connect
from permafrost.config.settings import Settings
from tests.conftest import run
from tests.helpers import loads

HTML = {"Accept": "text/html"}


@pytest.fixture
def app_env(env: dict[str, str], source_db: str) -> dict[str, str]:
    return {**env, "DB_NAME": source_db}


@pytest.fixture
def client(app_env: dict[str, str]) -> FlaskClient:
    app = create_app(Settings.from_env(app_env), evaluate=False)
    app.testing = True
    return app.test_client()


def test_storage_per_tier_counts_a_backup_at_once(
    client: FlaskClient, app_env: dict[str, str]
) -> None:
    record = loads(run(app_env, "backup", "--json").stdout)  # no retention run since
    page = client.get("/", headers=HTML).get_data(as_text=True)
    row = re.search(
        r'<tr data-tier="standard"><td>standard</td><td>(\d+)</td><td>([^<]+)</td>', page
    )
    assert row is not None, page
    assert row.group(1) == "1" and row.group(2) != "0 B"
    assert record["size_bytes"] > 0


def test_the_chart_has_a_series_per_kind_and_a_duration_axis_with_units(
    client: FlaskClient, app_env: dict[str, str]
) -> None:
    run(app_env, "backup")
    run(app_env, "backup", "--kind", "base")
    page = client.get("/", headers=HTML).get_data(as_text=True)
    assert '<g class="series logical"' in page and '<g class="series base"' in page
    axis = re.search(r'class="label duration-axis">duration ([^<]+)</text>', page)
    assert axis is not None, page
    assert axis.group(1) != "0 s" and re.fullmatch(r"[0-9.]+ (ms|s|min|h|days)", axis.group(1))


def test_a_finished_job_is_not_shown_running(
    client: FlaskClient, app_env: dict[str, str], source_db: str
) -> None:
    settings = Settings.from_env(app_env)
    assert settings.metadata_url is not None
    catalog = connect(settings.metadata_url)
    record = loads(run(app_env, "backup", "--json").stdout)
    task = catalog.enqueue("verify", {"backup_id": record["id"]}, "test")
    # The leader's heartbeat while these run, as the scheduler writes it every 30 s.
    running = [f"backup:{source_db}", f"task:{task}", "retention"]
    catalog.heartbeat("test:1", "leader", "test", os.getpid(), {}, {"running": running})
    run(app_env, "backup")
    run(app_env, "restore-worker", "--once")
    assert client.get("/status").json["scheduler"]["running"] == ["retention"]
    assert "running now: retention\n" in run(app_env, "status").stdout
    catalog.close()
