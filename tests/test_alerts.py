"""Alerts, their emails, the webhook and the healthcheck pings, against real services: the
metadata database and the moto bucket of the `env` fixture, an SMTP server (aiosmtpd) and tiny
HTTP servers on loopback ports. Time passing is played by moving timestamps in the rows."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from monitor.alerts.evaluator import ALERT_LOCK, LOCK_NAME, Evaluator, apply_findings
from monitor.alerts.rules import evaluate
from monitor.notify.messages import Event, Message
from monitor.notify.transports import TransportError, Webhook
from permafrost import layout
from permafrost.catalog.store import Catalog, connect
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.logs import sayer
from permafrost.repo import crypto
from permafrost.repo.manifest import Manifest
from permafrost.retention import lifecycle
from permafrost.storage import open_storage
from permafrost.text import spoken_duration
from scheduler.jobs import Jobs, JobSpec
from scheduler.pings import ping
from tests.services import START_ATTEMPTS, S3Server, free_port

ONCALL = ("oncall@example.com", "second@example.com")
DASHBOARD = "https://backups.example.com"
SMTP_PASSWORD = "smtp-Secret-pw-42"


# --- the services ------------------------------------------------------------------------------


class Mailbox:
    """aiosmtpd's handler: every message it accepts, parsed, with its recipients."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def about(self, key: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["X-Permafrost-Alert"] == key]

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]


class SMTPServer:
    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        self.mailbox = Mailbox()
        extra: dict[str, Any] = {}
        if password is not None:

            def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
                ok = isinstance(data, LoginPassword) and data.password == password.encode()
                return AuthResult(success=ok)

            extra = {"authenticator": check, "auth_require_tls": False}
        self.controller = self._start(port, extra)

    def _start(self, port: int | None, extra: dict[str, Any]) -> Controller:
        """Listen on `port`, or on a free one; a free port taken before the bind is replaced."""
        for _ in range(START_ATTEMPTS):
            self.port = port or free_port()
            controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port, **extra)
            try:
                controller.start()
                return controller
            except OSError:
                if port is not None:
                    raise
        raise RuntimeError(f"the SMTP stub found no free port in {START_ATTEMPTS} tries")

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.stop()


class Recorder(ThreadingHTTPServer):
    """A loopback HTTP server that records each request (method, path, body) and answers with
    the next status in `statuses` (200 once they run out)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.statuses: list[int] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append((self.command, self.path, body))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.shutdown()
    server.server_close()


# --- helpers -----------------------------------------------------------------------------------


def make_settings(env: dict[str, str], smtp_port: int | None, **overrides: str) -> Settings:
    values = dict(env)
    values["MONITOR_PUBLIC_URL"] = DASHBOARD
    if smtp_port is not None:
        values |= {
            "ALERT_EMAIL": ",".join(ONCALL),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "SMTP_TLS": "none",
            "SMTP_FROM": "permafrost@example.com",
        }
    values |= overrides
    return Settings.from_env(values)


def prepare(settings: Settings) -> Catalog:
    """A repository in the bucket and our lifecycle rules on it, as the scheduler leaves them;
    the metadata store migrated. Returns a catalog for the test's own SQL."""
    ctx = Context(settings)
    ctx.repository(create=True)
    assert lifecycle.apply(settings, ctx.storage).ok
    ctx.close()
    return connect(settings.metadata_url)


def add_backup(
    catalog: Catalog,
    database: str,
    status: str,
    hours_ago: float,
    *,
    size: int = 1_000_000,
    description: str = "",
    error: str | None = None,
) -> str:
    backup_id = f"20260101T000000Z-{uuid.uuid4().hex[:6]}"
    catalog.conn.execute(
        "INSERT INTO backups (id, database, kind, tier, status, started_at, finished_at,"
        " size_bytes, description, error) VALUES (%s, %s, 'logical', 'standard', %s,"
        " now() - %s * interval '1 hour', now() - %s * interval '1 hour', %s, %s, %s)",
        (backup_id, database, status, hours_ago, hours_ago, size, description, error),
    )
    return backup_id


def alert(catalog: Catalog, key: str) -> dict[str, Any]:
    with catalog.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM alerts WHERE key = %s ORDER BY id DESC LIMIT 1", (key,)
        ).fetchone()
    assert row is not None, f"no alert {key}"
    return row


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None, "both a text and an HTML part"
    return str(text.get_content()), str(html.get_content())


def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


# --- the alert lifecycle, by email -------------------------------------------------------------


def test_a_stale_backup_opens_one_alert_then_one_reminder_then_one_resolution(
    env: dict[str, str], smtp: SMTPServer
) -> None:
    settings = make_settings(env, smtp.port, MAX_BACKUP_AGE="26h", ALERT_REPEAT_HOURS="24")
    db = settings.source.databases[0]
    catalog = prepare(settings)
    add_backup(catalog, db, "completed", hours_ago=27)
    evaluator = Evaluator(settings)

    outcome = evaluator.run_once()
    assert outcome is not None
    assert outcome.applied.opened == [f"backup_stale:{db}"]
    assert {"backup_stale", "lifecycle_drift", "key_check"} <= outcome.findings.evaluated
    [message] = smtp.mailbox.messages
    assert message["Subject"] == f"[permafrost] CRITICAL: no successful backup of {db} for 27h"
    assert sorted(smtp.mailbox.recipients[0]) == sorted(ONCALL)
    text, html = parts(message)
    for part in (text, html):
        assert f"permafrost backup --database {db}" in part
        assert "permafrost status" in part
        assert f"{DASHBOARD}/alerts" in part
        assert "newest backup" in part and "26h" in part  # the facts, MAX_BACKUP_AGE among them
    assert alert(catalog, f"backup_stale:{db}")["notified_at"] is not None

    evaluator.run_once()
    assert len(smtp.mailbox.messages) == 1, "an open alert is not announced twice"

    catalog.conn.execute(
        "UPDATE alerts SET notified_at = now() - interval '25 hours' WHERE key = %s",
        (f"backup_stale:{db}",),
    )
    evaluator.run_once()
    evaluator.run_once()
    assert smtp.mailbox.subjects()[1:] == [
        f"[permafrost] REMINDER: CRITICAL: no successful backup of {db} for 27h"
    ]
    assert alert(catalog, f"backup_stale:{db}")["reminded_count"] == 1
    reminder = smtp.mailbox.messages[1]
    assert reminder["In-Reply-To"] == message["Message-ID"], "threaded under the first email"

    add_backup(catalog, db, "completed", hours_ago=0.1)
    outcome = evaluator.run_once()
    assert outcome is not None and outcome.applied.resolved == [f"backup_stale:{db}"]
    evaluator.run_once()
    assert smtp.mailbox.subjects()[2:] == [
        f"[permafrost] RESOLVED: no successful backup of {db} for 27h"
    ]
    resolved = alert(catalog, f"backup_stale:{db}")
    assert resolved["status"] == "resolved" and resolved["resolved_notified_at"] is not None
    assert "permafrost backup" in parts(smtp.mailbox.messages[2])[0]
    evaluator.stop()


def test_a_failed_backup_alerts_with_its_text_escaped_and_job_alerts_stay_the_schedulers(
    env: dict[str, str], smtp: SMTPServer
) -> None:
    settings = make_settings(env, smtp.port)
    db = settings.source.databases[0]
    catalog = prepare(settings)
    add_backup(catalog, db, "completed", hours_ago=2)
    failed = add_backup(
        catalog,
        db,
        "failed",
        hours_ago=1,
        description='<b>nightly</b> & "more"',
        error='pg_dump: error: relation "<script>alert(1)</script>" does not exist',
    )
    catalog.raise_alert("job_failed:retention:-", "warning", "retention failed: <boom>")
    evaluator = Evaluator(settings)
    evaluator.run_once()

    [message] = smtp.mailbox.about(f"backup_failed:{db}")
    assert message["Subject"] == (
        f"[permafrost] CRITICAL: the newest backup of {db} failed: pg_dump: error: relation "
        '"<script>alert(1)</script>" does not exist'
    )
    text, html = parts(message)
    assert "<script>" not in html and "<b>nightly</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;nightly&lt;/b&gt; &amp; &quot;more&quot;" in html
    assert '<b>nightly</b> & "more"' in text and failed in text
    assert f"permafrost list --database {db} --status failed" in text

    [job] = smtp.mailbox.about("job_failed:retention:-")  # the scheduler's alert is emailed too
    assert "&lt;boom&gt;" in parts(job)[1] and "permafrost status" in parts(job)[0]

    add_backup(catalog, db, "completed", hours_ago=0.1)
    outcome = evaluator.run_once()
    assert outcome is not None and outcome.applied.resolved == [f"backup_failed:{db}"]
    assert alert(catalog, "job_failed:retention:-")["status"] == "active", "not ours to resolve"
    assert [str(m["Subject"]) for m in smtp.mailbox.about(f"backup_failed:{db}")][1].startswith(
        "[permafrost] RESOLVED: the newest backup of"
    )
    assert len(smtp.mailbox.messages) == 3


def test_a_scheduled_backup_failure_is_one_alert_not_two(
    env: dict[str, str], smtp: SMTPServer
) -> None:
    settings = make_settings(env, smtp.port)
    db = settings.source.databases[0]
    catalog = prepare(settings)
    add_backup(catalog, db, "completed", hours_ago=2)
    add_backup(catalog, db, "failed", hours_ago=1, error="pg_dump: error: out of memory")
    catalog.raise_alert(f"job_failed:backup:{db}", "critical", f"backup of {db} failed: oom")
    Evaluator(settings).run_once()
    assert alert_or_none(catalog, f"backup_failed:{db}") is None
    assert [m["Subject"] for m in smtp.mailbox.messages] == [
        f"[permafrost] CRITICAL: backup of {db} failed: oom"
    ]


def test_the_dead_mans_switch(env: dict[str, str], smtp: SMTPServer) -> None:
    settings = make_settings(env, smtp.port)
    catalog = prepare(settings)
    evaluator = Evaluator(settings)
    outcome = evaluator.run_once()
    assert outcome is not None and "scheduler_dead" in outcome.findings.evaluated
    assert outcome.findings == [], "a monitor that just started waits for a first heartbeat"

    catalog.conn.execute(
        "INSERT INTO heartbeats (instance, role, host, pid, beat_at)"
        # 7.5 minutes: at exactly 7 the age is 419.99 s or 420.01 s by which clock reads first.
        " VALUES ('sched-1:41', 'leader', 'sched-1', 41, now() - interval '450 seconds')"
    )
    evaluator.run_once()
    [message] = smtp.mailbox.messages
    assert message["Subject"] == (
        "[permafrost] CRITICAL: the scheduler has not written a heartbeat for 7 minutes: "
        "no backups are being scheduled"
    )
    assert "sched-1" in parts(message)[0]

    catalog.conn.execute("UPDATE heartbeats SET beat_at = now()")
    outcome = evaluator.run_once()
    assert outcome is not None and outcome.applied.resolved == ["scheduler_dead"]
    assert smtp.mailbox.subjects()[1].startswith("[permafrost] RESOLVED: the scheduler has not")

    catalog.conn.execute("DELETE FROM heartbeats")
    evaluator.watching_since = datetime.now(UTC) - timedelta(minutes=6)
    evaluator.run_once()
    assert smtp.mailbox.subjects()[2] == (
        "[permafrost] CRITICAL: no scheduler has ever written a heartbeat: "
        "no backups are being scheduled"
    )


def test_smtp_down_is_recorded_and_retried_and_the_evaluator_lives_on(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()  # nothing listens here yet
    settings = make_settings(
        env,
        port,
        ALERT_CHECK_INTERVAL="1",
        MAX_BACKUP_AGE="1h",
        SMTP_USER="permafrost",
        SMTP_PASSWORD=SMTP_PASSWORD,
    )
    db = settings.source.databases[0]
    catalog = prepare(settings)
    add_backup(catalog, db, "completed", hours_ago=3)
    key = f"backup_stale:{db}"
    evaluator = Evaluator(settings)
    evaluator.start()
    try:
        row = until(lambda: (a := alert_or_none(catalog, key)) and a["notify_error"] and a)
        assert row["status"] == "active" and row["notified_at"] is None
        assert row["notify_attempts"] >= 1 and "email:" in row["notify_error"]
        assert "Connection refused" in row["notify_error"] or "Errno" in row["notify_error"]
        assert row["next_notify_at"] > datetime.now(UTC) + timedelta(seconds=45), "backs off"
        time.sleep(2)
        assert evaluator.alive
        assert alert(catalog, key)["notify_attempts"] == row["notify_attempts"], "waits it out"

        server = SMTPServer(port, password=SMTP_PASSWORD)
        try:
            catalog.conn.execute(
                "UPDATE alerts SET next_notify_at = now() - interval '1 second' WHERE key = %s",
                (key,),
            )  # the minute of backoff has passed
            until(lambda: server.mailbox.messages)
            time.sleep(1.5)
            [message] = server.mailbox.messages
            assert (
                message["Subject"] == f"[permafrost] CRITICAL: no successful backup of {db} for 3h"
            )
            done = alert(catalog, key)
            assert done["notified_at"] is not None and done["notify_error"] is None
            assert done["notify_attempts"] == 0 and done["next_notify_at"] is None
        finally:
            server.stop()
    finally:
        evaluator.stop()
    assert not evaluator.alive
    assert SMTP_PASSWORD not in caplog.text
    assert "notification failed" in caplog.text


def alert_or_none(catalog: Catalog, key: str) -> dict[str, Any] | None:
    with catalog.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM alerts WHERE key = %s", (key,)).fetchone()


def test_racing_evaluators_open_each_alert_once_and_send_one_email(
    env: dict[str, str], smtp: SMTPServer
) -> None:
    settings = make_settings(env, smtp.port, MAX_BACKUP_AGE="1h")
    db = settings.source.databases[0]
    catalog = prepare(settings)
    add_backup(catalog, db, "completed", hours_ago=5)
    first, second = Evaluator(settings), Evaluator(settings)

    # Another replica is evaluating: this one skips its turn, touching nothing.
    assert settings.metadata_url is not None
    with psycopg.connect(settings.metadata_url.reveal(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (ALERT_LOCK, LOCK_NAME))
        assert first.run_once() is None
        assert alert_or_none(catalog, f"backup_stale:{db}") is None
        assert smtp.mailbox.messages == []

    results: list[Any] = []
    for _ in range(3):
        barrier = threading.Barrier(2)

        def race(evaluator: Evaluator, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            results.append(evaluator.run_once())

        threads = [threading.Thread(target=race, args=(e,)) for e in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    opened = [r.applied.opened for r in results if r is not None]
    assert sum(len(keys) for keys in opened) == 1
    [[count]] = catalog.conn.execute("SELECT count(*) FROM alerts").fetchall()
    assert count == 1
    assert smtp.mailbox.subjects() == [
        f"[permafrost] CRITICAL: no successful backup of {db} for 5h"
    ]
    # The threads ask whether a run is due: one ran a moment ago, so the other lets it be.
    assert second.run_once(if_due=True) is None
    first.stop()
    second.stop()


# --- the webhook and the pings -----------------------------------------------------------------


def test_the_webhook_gets_a_slack_style_post_and_its_failure_is_retried_without_the_url(
    env: dict[str, str], http: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    token = "T000/B000/SECRETTOKEN"
    settings = make_settings(
        env, None, MAX_BACKUP_AGE="1h", ALERT_WEBHOOK_URL=f"{http.url}/services/{token}"
    )
    db = settings.source.databases[0]
    catalog = prepare(settings)
    add_backup(catalog, db, "completed", hours_ago=30)
    key = f"backup_stale:{db}"
    http.statuses = [500]
    evaluator = Evaluator(settings)

    evaluator.run_once()  # no email configured: the webhook alone; it fails this time
    failing = alert(catalog, key)
    assert failing["notified_at"] is None and "HTTP Error 500" in failing["notify_error"]
    assert token not in json.dumps(failing, default=str) and "SECRETTOKEN" not in caplog.text

    catalog.conn.execute("UPDATE alerts SET next_notify_at = now() WHERE key = %s", (key,))
    evaluator.run_once()
    evaluator.run_once()
    assert [(m, p) for m, p, _ in http.requests] == [("POST", f"/services/{token}")] * 2
    body = json.loads(http.requests[1][2])
    assert list(body) == ["text"]
    assert f"[permafrost] CRITICAL: no successful backup of {db} for 30h" in body["text"]
    assert f"`permafrost backup --database {db}`" in body["text"]
    assert f"<{DASHBOARD}/alerts|Dashboard>" in body["text"]
    assert alert(catalog, key)["notified_at"] is not None
    assert "alert email is off" in caplog.text


def test_it_says_whether_a_failed_webhook_post_would_fail_again(
    env: dict[str, str], http: Recorder
) -> None:
    token = "T000/B000/SECRETTOKEN"
    settings = make_settings(env, None, ALERT_WEBHOOK_URL=f"{http.url}/services/{token}")
    alert = {"key": "scheduler_dead", "severity": "critical", "summary": "no heartbeat"}
    message = Message(alert, Event.OPENED)
    http.statuses = [404, 503]
    hook = Webhook(settings)
    with pytest.raises(TransportError) as refused:
        hook.notify(message)
    assert refused.value.permanent and "HTTP Error 404" in str(refused.value)
    with pytest.raises(TransportError) as unavailable:
        hook.notify(message)  # an HTTP answer is that message's: the next one is tried
    assert not unavailable.value.permanent and "HTTP Error 503" in str(unavailable.value)
    hook.notify(message)
    assert [p for _, p, _ in http.requests] == [f"/services/{token}"] * 3


def test_a_scheduled_backup_pings_start_then_success_and_a_failed_one_pings_fail(
    env: dict[str, str], http: Recorder, caplog: pytest.LogCaptureFixture, refused: int
) -> None:
    settings = make_settings(env, None, HEALTHCHECK_PING_URL=f"{http.url}/ping/abc-secret")
    db = settings.source.databases[0]
    jobs = Jobs(settings, say=sayer("scheduler"), abort=threading.Event())

    result = jobs.backup(JobSpec(f"backup:{db}", "backup", db, "critical"), "schedule")
    assert "backup_id" in result
    (m1, start, _), (m2, success, body) = http.requests
    assert (m1, start.split("?")[0]) == ("GET", "/ping/abc-secret/start")
    assert (m2, success.split("?")[0]) == ("POST", "/ping/abc-secret")
    assert start.split("?")[1] == success.split("?")[1]  # the same rid pairs them
    assert result["backup_id"] in body.decode()

    result = jobs.backup(JobSpec("backup:nosuchdb", "backup", "nosuchdb", "critical"), "task")
    assert "error" in result
    assert [p.split("?")[0] for _, p, _ in http.requests[2:]] == [
        "/ping/abc-secret/start",
        "/ping/abc-secret/fail",
    ]
    assert b"nosuchdb" in http.requests[3][2]

    down = make_settings(env, None, HEALTHCHECK_PING_URL=f"http://127.0.0.1:{refused}/p/tok")
    assert ping(down, "start") is False  # swallowed
    assert "healthcheck ping (start) failed" in caplog.text and "/p/tok" not in caplog.text


def test_humanised_durations() -> None:
    assert spoken_duration(27 * 3600 + 59) == "27h"
    assert spoken_duration(7 * 60 + 3) == "7 minutes"
    assert spoken_duration(45) == "45 seconds"
    assert spoken_duration(4 * 86400) == "4 days"


# --- the other rules, straight from evaluate ---------------------------------------------------


def put_base_backup(ctx: Context, cluster: str, start: int, stop: int) -> None:
    """A base backup's signed manifest, all `wal verify` reads of one."""
    repo = ctx.repository()
    backup_id = "20260101T000000Z-ba5e00"
    now = datetime.now(UTC).isoformat()
    manifest = Manifest(
        id=backup_id,
        database=cluster,
        kind="base",
        tier=layout.BASE_TIER,
        started_at=now,
        finished_at=now,
        server_version="16",
        tool_version="16",
        dump_bytes=1,
        compressed_bytes=1,
        stored_bytes=1,
        dump_sha256="",
        stored_sha256="",
        key_id=repo.key.key_id,
        compression={},
        encryption={},
        objects={},
        physical={
            "timeline": 1,
            "start_lsn": f"0/{start * 0x1000000 + 0x28:X}",
            "stop_lsn": f"0/{stop * 0x1000000 + 0x100:X}",
            "wal_start": f"0000000100000000000000{start:02X}",
            "wal_stop": f"0000000100000000000000{stop:02X}",
        },
    )
    key = layout.manifest_key(repo.prefix, layout.BASE_TIER, cluster, backup_id)
    repo.storage.put(key, manifest.to_json(repo.key))


def test_size_verification_wal_and_lifecycle_rules_and_an_unreachable_bucket_resolves_nothing(
    env: dict[str, str], s3: S3Server, bucket: str, refused: int
) -> None:
    settings = make_settings(env, None, WAL_ARCHIVING="push", WAL_MAX_LAG="15m")
    db = settings.source.databases[0]
    catalog = prepare(settings)
    for day in range(7, 0, -1):
        add_backup(catalog, db, "completed", hours_ago=24 * day + 1, size=10 * 2**20)
    newest = add_backup(catalog, db, "completed", hours_ago=1, size=2 * 2**20)
    catalog.conn.execute(
        "INSERT INTO verifications (backup_id, kind, started_at, finished_at, status, error)"
        " VALUES (%s, 'test_restore', now(), now(), 'failed', 'row counts differ: customers')",
        (newest,),
    )
    catalog.conn.execute(
        "INSERT INTO wal_archive (cluster, last_segment, last_archived_at)"
        " VALUES ('main', '000000010000000000000005', now() - interval '20 minutes')"
    )
    storage = open_storage(settings.storage)
    put_base_backup(Context(settings), "main", start=1, stop=2)
    for number in (1, 2, 3, 5):
        name = f"0000000100000000000000{number:02X}"
        storage.put(layout.wal_key(settings.storage.prefix, "main", 1, name), b"wal")
    s3.client().delete_bucket_lifecycle(Bucket=bucket)  # someone removed our rules

    now = datetime.now(UTC)
    findings = evaluate(Context(settings), now)
    assert findings.skipped == {}
    found = {f.key: f for f in findings}
    assert set(found) == {
        f"backup_size:{db}",
        f"verification_failed:{db}",
        "wal_lag:main",
        "wal_gap:main",
        "lifecycle_drift",
    }
    assert found[f"backup_size:{db}"].summary == (
        f"the newest backup of {db} is 2.0 MiB, 20% of the usual 10.0 MiB: much smaller than "
        "the ones before it"
    )
    assert found[f"verification_failed:{db}"].summary == (
        f"the newest test restore of a backup of {db} failed: row counts differ: customers"
    )
    assert found["wal_lag:main"].summary == "the WAL archive of cluster main is 20 minutes behind"
    assert "000000010000000000000004 is missing" in found["wal_gap:main"].summary
    assert found["wal_gap:main"].runbook.startswith("permafrost wal verify --cluster main")
    assert found["lifecycle_drift"].severity == "warning"
    assert all(f.runbook.startswith("permafrost ") for f in findings)
    apply_findings(catalog, findings, findings.evaluated)

    # The bucket stops answering: the rules that need it are not evaluated, and keep their alerts.
    down = make_settings(
        env,
        None,
        WAL_ARCHIVING="push",
        S3_ENDPOINT_URL=f"http://127.0.0.1:{refused}",
        S3_MAX_ATTEMPTS="1",
    )
    findings = evaluate(Context(down), now + timedelta(minutes=1))
    assert {"key_check", "wal_gap", "lifecycle_drift"} <= set(findings.skipped)
    assert "bucket_unreachable" in findings.alert_keys()
    applied = apply_findings(catalog, findings, findings.evaluated)
    assert applied.opened == ["bucket_unreachable"]
    assert alert(catalog, "wal_gap:main")["status"] == "active"
    assert alert(catalog, "lifecycle_drift")["status"] == "active"

    # A key that is not the repository's.
    wrong = make_settings(env, None, BACKUP_ENCRYPTION_KEY=crypto.generate_key())
    findings = evaluate(Context(wrong), now)
    [key_check] = [f for f in findings if f.key == "key_check"]
    assert key_check.summary.startswith("the encryption key check failed")
    assert key_check.runbook == "permafrost init"
