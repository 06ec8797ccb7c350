"""Acknowledging and silencing alerts, and which messages they leave to send: through the API
(Flask's test client) against a real metadata store, the evaluator and a real SMTP server
(aiosmtpd). Time passing is played by moving timestamps in the rows, as in test_alerts.py."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from monitor.alerts.evaluator import Evaluator
from monitor.app import create_app
from permafrost.catalog.store import Catalog
from permafrost.config.settings import Settings
from tests.test_alerts import SMTPServer, add_backup, alert, make_settings, prepare

TOKEN = "t0ken-for-alert-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.stop()


def monitor_settings(env: dict[str, str], smtp: SMTPServer | None, **more: str) -> Settings:
    return make_settings(env, smtp.port if smtp else None, MONITOR_API_TOKEN=TOKEN, **more)


def api(settings: Settings) -> FlaskClient:
    app = create_app(settings, evaluate=False)
    app.testing = True
    return app.test_client()


def audit_rows(catalog: Catalog) -> list[tuple[str, str, dict[str, Any]]]:
    return catalog.conn.execute(
        "SELECT action, target, details FROM audit_log WHERE action LIKE 'alert-%' ORDER BY id"
    ).fetchall()


def age(catalog: Catalog, key: str, column: str, hours: float) -> None:
    """Move a timestamp of the alert `key` back by `hours`."""
    catalog.conn.execute(
        psycopg.sql.SQL(
            "UPDATE alerts SET {c} = {c} - %s * interval '1 hour' WHERE key = %s"
        ).format(c=psycopg.sql.Identifier(column)),
        (hours, key),
    )


def test_a_silenced_alert_sends_nothing_shows_its_expiry_and_is_announced_when_it_ends(
    env: dict[str, str], smtp: SMTPServer
) -> None:
    settings = monitor_settings(env, smtp)
    db = settings.source.databases[0]
    catalog = prepare(settings)
    add_backup(catalog, db, "completed", hours_ago=1)
    key, quiet = f"job_failed:backup:{db}", "job_failed:retention:-"
    catalog.raise_alert(key, "critical", f"backup of {db} failed: disk full")
    catalog.raise_alert(quiet, "warning", "retention failed: bucket busy")
    client = api(settings)

    ends = []
    for name in (key, quiet):
        silenced = client.post(
            f"/alerts/{name}/silence",
            headers=AUTH,
            json={"for": "4h", "reason": "disk being replaced", "by": "alice"},
        )
        assert silenced.status_code == 200, silenced.json
        ends.append(datetime.fromisoformat(silenced.json["silenced_until"]))
    until = ends[0]
    assert timedelta(hours=3, minutes=59) < until - datetime.now(UTC) <= timedelta(hours=4)
    evaluator = Evaluator(settings)
    evaluator.run_once()
    evaluator.run_once()
    assert smtp.mailbox.messages == [], "a silenced alert sends no email"

    page = client.get("/alerts", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert 'class="alert critical silenced' in page
    assert f'Silenced until <strong class="expiry">{until:%Y-%m-%d %H:%M} UTC' in page
    assert "by alice: disk being replaced" in page
    listed = {a["key"]: a for a in client.get("/alerts").json["active"]}
    assert listed[key]["silenced_by"] == "alice" and listed[key]["silence_reason"]

    # The quiet one resolves while silenced: it was never announced, so no RESOLVED either.
    catalog.resolve_alert(quiet)
    evaluator.run_once()
    assert smtp.mailbox.messages == []
    assert alert(catalog, quiet)["resolved_notified_at"] is not None, "owed nothing"

    # The silence ends and the alert still fires: it is announced then.
    age(catalog, key, "silenced_until", 5)
    evaluator.run_once()
    assert smtp.mailbox.subjects() == [f"[permafrost] CRITICAL: backup of {db} failed: disk full"]
    evaluator.run_once()
    catalog.resolve_alert(key)
    evaluator.run_once()
    assert smtp.mailbox.subjects()[1:] == [
        f"[permafrost] RESOLVED: backup of {db} failed: disk full"
    ], "an announced alert's resolution is news"
    assert [(action, target) for action, target, _ in audit_rows(catalog)] == [
        ("alert-silence", key),
        ("alert-silence", quiet),
    ]
    _, _, details = audit_rows(catalog)[0]
    assert details["by"] == "alice" and details["reason"] == "disk being replaced"
    assert datetime.fromisoformat(details["until"]) == until


def test_an_announced_alert_silenced_then_still_firing_gets_one_reminder(
    env: dict[str, str], smtp: SMTPServer
) -> None:
    settings = monitor_settings(env, smtp, MAX_BACKUP_AGE="1h", ALERT_REPEAT_HOURS="24")
    db = settings.source.databases[0]
    catalog = prepare(settings)
    add_backup(catalog, db, "completed", hours_ago=3)
    key = f"backup_stale:{db}"
    evaluator = Evaluator(settings)
    evaluator.run_once()
    assert len(smtp.mailbox.messages) == 1
    client = api(settings)
    lifted = client.delete(f"/alerts/{key}/silence", headers=AUTH)
    assert lifted.status_code == 404 and "is silenced" in lifted.json["error"]
    assert (
        client.post(
            f"/alerts/{key}/silence", headers=AUTH, json={"for": "2h", "reason": "known"}
        ).status_code
        == 200
    )
    age(catalog, key, "notified_at", 30)  # a reminder would be due, but the silence holds it
    evaluator.run_once()
    assert len(smtp.mailbox.messages) == 1
    assert client.delete(f"/alerts/{key}/silence", headers=AUTH, json={"by": "bob"}).json[
        "silenced_until"
    ]
    evaluator.run_once()
    evaluator.run_once()
    assert smtp.mailbox.subjects()[1:] == [
        f"[permafrost] REMINDER: CRITICAL: no successful backup of {db} for 3h"
    ]
    reminder = smtp.mailbox.messages[1].get_body(preferencelist=("plain",))
    assert reminder is not None and "its silence ended at" in reminder.get_content()
    assert "known (api:127.0.0.1)" in reminder.get_content()
    assert [a for a, _, _ in audit_rows(catalog)] == ["alert-silence", "alert-unsilence"]

    # Silenced again and resolved meanwhile: the silence covers the RESOLVED too.
    client.post(f"/alerts/{key}/silence", headers=AUTH, json={"for": "1h", "reason": "again"})
    add_backup(catalog, db, "completed", hours_ago=0.1)
    evaluator.run_once()
    evaluator.run_once()
    assert alert(catalog, key)["status"] == "resolved"
    assert len(smtp.mailbox.messages) == 2, "no RESOLVED for an alert resolved while silenced"


def test_an_acknowledged_alert_gets_no_reminders_but_shows_and_resolves(
    env: dict[str, str], smtp: SMTPServer
) -> None:
    settings = monitor_settings(env, smtp, MAX_BACKUP_AGE="1h", ALERT_REPEAT_HOURS="24")
    db = settings.source.databases[0]
    catalog = prepare(settings)
    add_backup(catalog, db, "completed", hours_ago=3)
    key = f"backup_stale:{db}"
    evaluator = Evaluator(settings)
    evaluator.run_once()
    client = api(settings)

    acked = client.post(
        f"/alerts/{key}/acknowledge", headers=AUTH, json={"reason": "restoring the scheduler"}
    )
    assert acked.status_code == 200
    assert acked.json["acknowledged_by"] == "api:127.0.0.1"
    age(catalog, key, "notified_at", 25)
    evaluator.run_once()
    assert len(smtp.mailbox.messages) == 1, "no reminder for an acknowledged alert"
    [active] = client.get("/alerts").json["active"]
    assert active["key"] == key and active["ack_reason"] == "restoring the scheduler"
    page = client.get("/alerts", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "Acknowledged" in page and "by api:127.0.0.1: restoring the scheduler" in page
    [(action, target, details)] = audit_rows(catalog)
    assert (action, target) == ("alert-acknowledge", key)
    assert details["reason"] == "restoring the scheduler" and details["alert_id"] == active["id"]

    add_backup(catalog, db, "completed", hours_ago=0.1)
    evaluator.run_once()
    assert smtp.mailbox.subjects()[1].startswith("[permafrost] RESOLVED: no successful backup")


def test_acknowledging_and_silencing_refuse_bad_input_in_one_line(
    env: dict[str, str], smtp: SMTPServer
) -> None:
    settings = monitor_settings(env, smtp)
    catalog = prepare(settings)
    catalog.raise_alert("scheduler_dead", "critical", "no heartbeat")
    client = api(settings)
    ack, silence = "/alerts/scheduler_dead/acknowledge", "/alerts/scheduler_dead/silence"
    assert client.post(ack, json={"reason": "x"}).status_code == 401
    cases = [
        (ack, {}, 400, "reason is required"),
        (ack, {"reason": "  "}, 400, "reason is required"),
        (ack, {"reason": "x", "color": "red"}, 400, "unknown fields color"),
        ("/alerts/nosuch/acknowledge", {"reason": "x"}, 404, "no active alert nosuch"),
        ("/alerts/a;b/acknowledge", {"reason": "x"}, 400, "is not an alert key"),
        (silence, {"reason": "x"}, 400, 'either "for"'),
        (silence, {"reason": "x", "for": "soon"}, 400, "for must be a duration"),
        (silence, {"reason": "x", "for": "100d"}, 400, "at most 90 days"),
        (silence, {"reason": "x", "until": "2020-01-01T00:00:00Z"}, 400, "in the past"),
        (silence, {"reason": "x", "until": "2099-01-01T00:00:00"}, 400, "needs a time zone"),
        (silence, {"reason": "x", "until": "tomorrow"}, 400, "ISO 8601"),
        (silence, {"for": "1h"}, 400, "reason is required"),
        # schemathesis found it: a NUL reached PostgreSQL's text and answered 500
        (ack, {"reason": "x\x00y"}, 400, "reason must not contain a NUL character"),
        (ack, {"reason": "x", "by": "\x00"}, 400, "by must not contain a NUL character"),
    ]
    for path, body, status, words in cases:
        answer = client.post(path, headers=AUTH, json=body)
        assert answer.status_code == status, (path, body, answer.json)
        assert words in answer.json["error"] and "\n" not in answer.json["error"]
    assert audit_rows(catalog) == [], "nothing refused is recorded"
    row = alert(catalog, "scheduler_dead")
    assert row["acknowledged_at"] is None and row["silenced_until"] is None
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    good = client.post(silence, headers=AUTH, json={"reason": "maintenance", "until": soon})
    assert good.status_code == 200


def test_a_resolution_goes_only_for_an_alert_that_was_announced(
    env: dict[str, str], smtp: SMTPServer
) -> None:
    """Opened while no email was configured (or its mail server refused), resolved before it
    reached anyone: no RESOLVED email once mail works, and the log says the opening was dropped."""
    quiet = monitor_settings(env, None, MAX_BACKUP_AGE="1h")
    db = quiet.source.databases[0]
    catalog = prepare(quiet)
    add_backup(catalog, db, "completed", hours_ago=3)
    key = f"backup_stale:{db}"
    Evaluator(quiet).run_once()
    add_backup(catalog, db, "completed", hours_ago=0.1)
    settings = monitor_settings(env, smtp, MAX_BACKUP_AGE="1h")
    evaluator = Evaluator(settings)
    evaluator.run_once()
    evaluator.run_once()
    assert alert(catalog, key)["status"] == "resolved"
    assert smtp.mailbox.messages == [], "never announced: no RESOLVED"
    [logged] = api(settings).get("/alerts").json["notifications"]
    assert logged["status"] == "dropped" and "resolved first" in logged["error"]


def test_with_no_channel_the_panel_shows_the_opening_pending(env: dict[str, str]) -> None:
    quiet = monitor_settings(env, None, MAX_BACKUP_AGE="1h")
    db = quiet.source.databases[0]
    catalog = prepare(quiet)
    add_backup(catalog, db, "completed", hours_ago=3)
    Evaluator(quiet).run_once()
    client = api(quiet)
    pending = client.get("/alerts").json["notifications"]
    assert [(n["alert_key"], n["event"], n["status"]) for n in pending] == [
        (f"backup_stale:{db}", "opened", "pending")
    ]
    assert "set ALERT_EMAIL and SMTP_HOST" in pending[0]["error"]
    page = client.get("/alerts", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert f"[permafrost] CRITICAL: no successful backup of {db} for 3h" in page


def test_the_alerts_page_lists_the_sent_emails_and_the_runbook_and_metrics_count_silences(
    env: dict[str, str], smtp: SMTPServer
) -> None:
    settings = monitor_settings(env, smtp, MAX_BACKUP_AGE="1h")
    db = settings.source.databases[0]
    catalog = prepare(settings)
    add_backup(catalog, db, "completed", hours_ago=3)
    Evaluator(settings).run_once()
    [message] = smtp.mailbox.messages
    client = api(settings)
    body = client.get("/alerts").json
    [sent] = body["notifications"]
    assert sent["subject"] == message["Subject"] and sent["status"] == "delivered"
    assert (
        sent["channel"] == "email"
        and sent["recipients"] == "oncall@example.com, second@example.com"
    )
    page = client.get("/alerts", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert f"permafrost backup --database {db}" in page, "the runbook, as in the email"
    assert "<h2>Notifications sent</h2>" in page
    assert str(message["Subject"]) in page and "delivered" in page

    client.post(
        f"/alerts/backup_stale:{db}/silence", headers=AUTH, json={"for": "1h", "reason": "x"}
    )
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'permafrost_alerts_active{severity="critical"} 1.0' in metrics
    assert 'permafrost_alerts_silenced{severity="critical"} 1.0' in metrics
    assert 'permafrost_alerts_acknowledged{severity="critical"} 0.0' in metrics


def test_the_dashboards_forms_need_its_login_and_a_csrf_token(
    env: dict[str, str], smtp: SMTPServer
) -> None:
    open_settings = monitor_settings(env, smtp)
    catalog = prepare(open_settings)
    catalog.raise_alert("scheduler_dead", "critical", "no heartbeat")
    form = {"reason": "x", "for": "1h"}
    refused = api(open_settings).post("/ui/alerts/scheduler_dead/silence", data=form)
    assert refused.status_code == 403
    assert "set DASHBOARD_USER and DASHBOARD_PASSWORD" in refused.get_data(as_text=True)
    guarded = monitor_settings(env, smtp, DASHBOARD_USER="oncall", DASHBOARD_PASSWORD="pw-123456")
    login = {"Authorization": "Basic " + base64.b64encode(b"oncall:pw-123456").decode()}
    stale = api(guarded).post("/ui/alerts/scheduler_dead/acknowledge", data=form, headers=login)
    assert stale.status_code == 400 and "CSRF" in stale.get_data(as_text=True)
    overview = api(guarded).get("/", headers=login).get_data(as_text=True)
    assert "silenced until" not in overview
    row = alert(catalog, "scheduler_dead")
    assert row["acknowledged_at"] is None and row["silenced_until"] is None
    assert audit_rows(catalog) == []
    api(guarded).post(
        "/alerts/scheduler_dead/silence", headers=AUTH, json={"for": "2h", "reason": "moving"}
    )
    overview = api(guarded).get("/", headers=login).get_data(as_text=True)
    assert 'class="alert critical silenced"' in overview and "silenced until" in overview
