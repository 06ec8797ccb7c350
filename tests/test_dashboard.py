"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against
`permafrost monitor` (gunicorn) on a loopback port, a real metadata store and bucket."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PERMAFROST, run
from tests.helpers import loads
from tests.services import Cluster, serve_http

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
USER, PASSWORD = "oncall", "dashboard-pass-123"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is missing: run ./setup.sh test"
)


@pytest.fixture
def monitor(
    env: dict[str, str], source_db: str, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    menv = {
        **env,
        "DB_NAME": source_db,
        "MONITOR_API_TOKEN": "api-token-for-the-dashboard-test",
        "DASHBOARD_USER": USER,
        "DASHBOARD_PASSWORD": PASSWORD,
        "ALERT_CHECK_INTERVAL": "3600",
    }
    log = (tmp_path / "monitor.log").open("wb")

    def start(port: int) -> subprocess.Popen[bytes]:
        menv["MONITOR_PORT"] = str(port)
        command = [PERMAFROST, "monitor", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        return subprocess.Popen(command, env=menv, stdout=log, stderr=subprocess.STDOUT)

    try:
        proc, port = serve_http(start)
    except RuntimeError as exc:
        raise AssertionError(f"{exc}: {(tmp_path / 'monitor.log').read_text()}") from None
    url = f"http://127.0.0.1:{port}"
    yield url, menv
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_the_dashboard_shows_a_failure_and_queues_a_verification(
    monitor: tuple[str, dict[str, str]], pg: Cluster, metadata_db: str, source_db: str
) -> None:
    from playwright.sync_api import sync_playwright

    url, menv = monitor
    hostile = "<script>alert('x')</script><b>bold</b>"
    good = loads(run(menv, "backup", "--json", "--description", hostile).stdout)
    failing = pg.create_database(f"{source_db}_gone")
    pg.drop_database(failing)  # its backup fails: the database no longer exists
    # An unknown database is refused; DB_NAME names both over a URL that names neither.
    configured = {**menv, "DATABASE_URL": pg.url(""), "DB_NAME": f"{source_db},{failing}"}
    failed = run(configured, "backup", "--database", failing, check=False)
    assert failed.returncode != 0
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_context(
            http_credentials={"username": USER, "password": PASSWORD}
        ).new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        page.goto(url + "/")
        card = page.locator(f"article.card[data-database='{failing}']")
        assert "failing" in (card.get_attribute("class") or "")
        assert "FAILED" in card.inner_text()
        page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

        page.goto(url + "/backups")
        failed_row = page.locator("tr.failed").first
        assert failing in failed_row.inner_text()
        assert failed_row.evaluate("r => getComputedStyle(r).backgroundColor") != "rgba(0, 0, 0, 0)"
        good_row = page.locator(f"tr[data-backup='{good['id']}']")
        assert hostile in good_row.inner_text()  # shown as text, escaped
        assert page.locator("b", has_text="bold").count() == 0
        good_row.get_by_role("button", name="Verify").click()
        flash = page.locator(".flash")
        flash.wait_for()
        assert f"Verification of {good['id']} queued as task" in flash.inner_text()
        page.screenshot(path=str(ARTIFACTS / "dashboard-verify.png"), full_page=True)
        facts = page.locator("table.facts").inner_text()
        assert hostile in facts
        # the source server's version and the client's that took the backup (Debian's 15)
        assert re.search(r"PostgreSQL server\s+15\.\d+", facts), facts
        assert re.search(r"pg_dump \(client\)\s+15\.\d+", facts), facts
        browser.close()
    assert dialogs == []  # no script ran
    with psycopg.connect(pg.url(metadata_db)) as conn:
        tasks = conn.execute(
            "SELECT kind, payload->>'backup_id', requested_by FROM permafrost.tasks"
        ).fetchall()
    assert tasks == [("verify", good["id"], f"dashboard:{USER}")]
    assert (ARTIFACTS / "dashboard-verify.png").stat().st_size > 10_000


def test_the_dashboard_asks_for_a_login_and_refuses_forms_without_csrf(
    monitor: tuple[str, dict[str, str]],
) -> None:
    url, _ = monitor
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(url + "/", timeout=5)
    assert denied.value.code == 401
    import base64

    login = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        url + "/ui/run-now",
        data=b"database=x",
        headers={"Authorization": f"Basic {login}"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400
    assert b"CSRF" in refused.value.read()
    with urllib.request.urlopen(url + "/metrics", timeout=5) as metrics:  # probes need no login
        assert metrics.status == 200
