"""The alerts page in a real browser (Debian's headless Chromium through Playwright), against
`permafrost monitor` (gunicorn) with its evaluator emailing a real SMTP server (aiosmtpd):
the runbook, the notifications sent, and acknowledging and silencing through the forms."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from permafrost.catalog.store import connect
from permafrost.config.settings import Secret
from tests.conftest import PERMAFROST
from tests.services import Cluster, serve_http
from tests.test_alerts import SMTPServer
from tests.test_dashboard import ARTIFACTS, CHROMIUM, PASSWORD, USER

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is missing: run ./setup.sh test"
)


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.stop()


@pytest.fixture
def monitor(env: dict[str, str], source_db: str, tmp_path: Path, smtp: SMTPServer) -> Iterator[str]:
    menv = {
        **env,
        "DB_NAME": source_db,
        "DASHBOARD_USER": USER,
        "DASHBOARD_PASSWORD": PASSWORD,
        "ALERT_CHECK_INTERVAL": "3600",  # one evaluation, at start
        "ALERT_EMAIL": "oncall@example.com",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "SMTP_TLS": "none",
        "SMTP_FROM": "permafrost@example.com",
    }
    catalog = connect(Secret(env["METADATA_DATABASE_URL"]))
    catalog.raise_alert(f"job_failed:backup:{source_db}", "critical", "backup failed: disk full")
    catalog.set_runbook(
        f"job_failed:backup:{source_db}", f"permafrost backup --database {source_db}"
    )
    catalog.raise_alert("job_failed:retention:-", "warning", "retention failed: bucket busy")
    catalog.close()
    log = (tmp_path / "monitor.log").open("wb")

    def start(port: int) -> subprocess.Popen[bytes]:
        menv["MONITOR_PORT"] = str(port)
        command = [PERMAFROST, "monitor", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        return subprocess.Popen(command, env=menv, stdout=log, stderr=subprocess.STDOUT)

    try:
        proc, port = serve_http(start)
    except RuntimeError as exc:
        raise AssertionError(f"{exc}: {(tmp_path / 'monitor.log').read_text()}") from None
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def until(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def test_the_alerts_page_shows_runbook_and_emails_and_acknowledges_and_silences(
    monitor: str, smtp: SMTPServer, pg: Cluster, metadata_db: str, source_db: str
) -> None:
    from playwright.sync_api import sync_playwright

    failed, retention = f"job_failed:backup:{source_db}", "job_failed:retention:-"
    until(lambda: {failed, retention} <= {m["X-Permafrost-Alert"] for m in smtp.mailbox.messages})
    [opening] = smtp.mailbox.about(failed)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_context(
            http_credentials={"username": USER, "password": PASSWORD}
        ).new_page()
        page.goto(monitor + "/alerts")
        card = page.locator(f"section.alert[data-alert='{failed}']")
        assert (
            f"permafrost backup --database {source_db}" in card.locator("pre.runbook").inner_text()
        )
        sent = page.locator(f"table.notifications tr[data-alert='{failed}']")
        row = sent.inner_text()
        assert str(opening["Subject"]) in row and "oncall@example.com" in row
        assert "delivered" in row

        card.locator("form.ack input[name=reason]").fill("looking at the disk")
        card.get_by_role("button", name="Acknowledge").click()
        page.locator(".flash").wait_for()
        assert f"Alert {failed} acknowledged" in page.locator(".flash").inner_text()
        card = page.locator(f"section.alert[data-alert='{failed}']")
        assert f"by dashboard:{USER}: looking at the disk" in card.inner_text()
        assert card.get_by_role("button", name="Acknowledge").count() == 0

        quiet = page.locator(f"section.alert[data-alert='{retention}']")
        quiet.locator("select[name=for]").select_option("24h")
        quiet.locator("form.silence input[name=reason]").fill("bucket migration tonight")
        asked = datetime.now(UTC)
        quiet.get_by_role("button", name="Silence").click()
        page.locator(".flash").wait_for()
        quiet = page.locator(f"section.alert[data-alert='{retention}']")
        assert "silenced" in (quiet.get_attribute("class") or "")
        assert quiet.evaluate("e => getComputedStyle(e).filter") == "grayscale(1)"
        expiry = datetime.strptime(
            quiet.locator(".expiry").inner_text(), "%Y-%m-%d %H:%M UTC"
        ).replace(tzinfo=UTC)
        assert (
            asked + timedelta(hours=23, minutes=58)
            < expiry
            < asked + timedelta(hours=24, minutes=2)
        )
        assert "bucket migration tonight" in quiet.inner_text()
        page.screenshot(path=str(ARTIFACTS / "dashboard-alerts.png"), full_page=True)
        browser.close()

    with psycopg.connect(pg.url(metadata_db)) as conn:
        rows = conn.execute(
            "SELECT action, target, details->>'by', details->>'reason' FROM permafrost.audit_log"
            " WHERE action LIKE 'alert-%' ORDER BY id"
        ).fetchall()
    assert rows == [
        ("alert-acknowledge", failed, f"dashboard:{USER}", "looking at the disk"),
        ("alert-silence", retention, f"dashboard:{USER}", "bucket migration tonight"),
    ]
