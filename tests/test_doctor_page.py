"""The dashboard's /doctor: the same report as `permafrost doctor`, linked from every page."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from monitor.app import create_app
from permafrost.config.settings import Settings
from tests.services import Cluster

HTML = {"Accept": "text/html"}


@pytest.fixture
def client(env: dict[str, str], source_db: str) -> FlaskClient:
    app = create_app(Settings.from_env({**env, "DB_NAME": source_db}), evaluate=False)
    app.testing = True
    return app.test_client()


def test_the_doctor_page_shows_the_server_version_and_the_overview_links_to_it(
    client: FlaskClient, pg: Cluster, source_db: str
) -> None:
    overview = client.get("/", headers=HTML).get_data(as_text=True)
    assert '<a href="/doctor">Doctor</a>' in overview
    page = client.get("/doctor", headers=HTML)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    version = pg.execute("SHOW server_version")[0][0].split()[0]
    assert f"127.0.0.1:{pg.port}: PostgreSQL {version}" in text
    assert '<tr data-feature="logical"><td>logical backups</td><td>ready</td>' in text
    assert "/usr/lib/postgresql/15/bin/pg_dump" in text
    report = client.get("/doctor").json
    assert report["ok"] is True
    assert report["source"]["databases"][0]["name"] == source_db
    assert report["source"]["settings"]["archive_command"] == "(hidden)"


def test_an_unreachable_source_is_a_line_on_the_page_not_a_hung_dashboard(
    env: dict[str, str], refused: int
) -> None:
    url = f"postgresql://backup:pw@127.0.0.1:{refused}/shop"
    app = create_app(Settings.from_env({**env, "DATABASE_URL": url}), evaluate=False)
    client = app.test_client()
    started = time.monotonic()
    text = client.get("/doctor", headers=HTML).get_data(as_text=True)
    assert time.monotonic() - started < 15
    assert f"127.0.0.1:{refused} does not answer" in text
    report = client.get("/doctor").json  # the same report, from the cache
    assert report["ok"] is False and report["tools"] == []
    assert report["problems"][0].startswith(f"the source at 127.0.0.1:{refused} does not answer")


def test_a_sqlite_only_deployment_shows_its_files_not_a_source_that_does_not_answer(
    env: dict[str, str], tmp_path: Path
) -> None:
    """DATABASE_URL names a SQLite file: there is no server to examine, so the page must not
    say the source does not answer (it did: it probed PostgreSQL defaults)."""
    app_db = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(app_db)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("PRAGMA user_version = 7")
    missing = tmp_path / "gone.db"
    files = {"DATABASE_URL": f"sqlite://{app_db}", "SQLITE_DATABASES": f"sqlite://{missing}"}
    app = create_app(Settings.from_env({**env, **files}), evaluate=False)
    client = app.test_client()

    text = client.get("/doctor", headers=HTML).get_data(as_text=True)
    report = client.get("/doctor").json

    assert "does not answer" not in text
    assert "No PostgreSQL server" in text
    assert f"<td>{app_db}</td><td>readable" in text and "user_version 7" in text
    assert report["source"] is None and report["store"]["reachable"] is True
    assert [f["ok"] for f in report["sqlite"]] == [True, False]
    assert report["ok"] is False and str(missing) in report["problems"][0]
