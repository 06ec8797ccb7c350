"""Telling the on-call person: email (SMTP) and a Slack-compatible webhook.

`notify_pending` runs after each evaluation, under the evaluator's lock. For each alert row:

    opened     active, never notified                              one email, one webhook post
    reminder   active, notified more than ALERT_REPEAT_HOURS ago   a reminder (0: never)
    resolved   resolved, its resolution not yet notified           one RESOLVED email and post

What was delivered is recorded on the alert (notified_at, reminded_count, resolved_notified_at;
notify_sent for the channels that already have a pending event), so nothing goes out twice. A
failed delivery is recorded (notify_error, notify_attempts) and retried on a later run, no sooner
than next_notify_at (1 minute, doubling to 1 hour). Nothing here raises for a delivery problem,
and no secret (SMTP password, webhook URL) reaches a log line, an alert row or an error.
"""

from __future__ import annotations

import html
import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from permafrost import __version__
from permafrost.config.settings import Secret, Settings
from permafrost.errors import CatalogUnavailable
from permafrost.text import human_bytes, one_line, spoken_duration

if TYPE_CHECKING:
    from permafrost.catalog.store import Catalog

log = logging.getLogger("permafrost.monitor.notify")

SMTP_TIMEOUT = 10
WEBHOOK_TIMEOUT = 10
LEASE = timedelta(minutes=5)  # a delivery in progress: no one else tries it meanwhile
FIRST_RETRY = 60
LAST_RETRY = 3600
RESOLVED_NEWS = timedelta(days=1)  # a resolution older than this is history, not news
EMAIL, WEBHOOK = "email", "webhook"
_warned: set[str] = set()


@dataclass
class Delivery:
    """What one call of `notify_pending` did: (alert key, event, channel) per message."""

    sent: list[tuple[str, str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str, str]] = field(default_factory=list)  # … and the error


def channels(settings: Settings) -> list[str]:
    """The configured channels; an unconfigured email is said once per process."""
    m = settings.monitor
    out = []
    if m.alert_emails and m.smtp_host:
        out.append(EMAIL)
    else:
        _once("email", "alert email is off: set ALERT_EMAIL and SMTP_HOST to have alerts emailed")
    if m.webhook_url:
        out.append(WEBHOOK)
    return out


def notify_pending(catalog: Catalog, settings: Settings, now: datetime | None = None) -> Delivery:
    """Send what is owed for every alert, recording it; never raises for a delivery failure."""
    moment = now or datetime.now(UTC)
    delivery = Delivery()
    wanted = channels(settings)
    with _Mailer(settings) as mailer:
        hook = _Webhook(settings)
        for alert in _pending(catalog):
            event = event_of(alert, settings, moment)
            if event is None:
                continue
            if event == "resolved" and alert["resolved_at"] < moment - RESOLVED_NEWS:
                _finish(catalog, alert, event, moment)  # history: nobody needs it now
                continue
            if not wanted:
                continue  # kept for when a channel is configured
            if alert["next_notify_at"] is not None and alert["next_notify_at"] > moment:
                continue  # backing off
            done = {c.split(":", 1)[1] for c in alert["notify_sent"] if c.startswith(f"{event}:")}
            todo = [channel for channel in wanted if channel not in done]
            if not todo:
                _finish(catalog, alert, event, moment)
                continue
            if not _lease(catalog, alert, moment):
                continue  # another notifier took it
            errors: list[str] = []
            for channel in todo:
                error = _send(channel, alert, event, settings, mailer, hook)
                if error is None:
                    done.add(channel)
                    delivery.sent.append((alert["key"], event, channel))
                else:
                    errors.append(f"{channel}: {error}")
                    delivery.failed.append((alert["key"], event, channel, error))
            if errors:
                _failed(catalog, alert, event, done, "; ".join(errors), moment)
            else:
                _finish(catalog, alert, event, moment)
    return delivery


def event_of(alert: dict[str, Any], settings: Settings, now: datetime) -> str | None:
    """What this alert is owed now: opened, reminder, resolved, or nothing."""
    if alert["status"] == "resolved":
        return "resolved" if alert["resolved_notified_at"] is None else None
    if alert["notified_at"] is None:
        return "opened"
    hours = settings.monitor.alert_repeat_hours
    if hours > 0 and alert["notified_at"] <= now - timedelta(hours=hours):
        return "reminder"
    return None


# --- the rows ----------------------------------------------------------------------------------


def _pending(catalog: Catalog) -> list[dict[str, Any]]:
    with _db("read alerts"), catalog.conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM alerts WHERE status = 'active' OR resolved_notified_at IS NULL"
            " ORDER BY id"
        ).fetchall()


def _lease(catalog: Catalog, alert: dict[str, Any], now: datetime) -> bool:
    with _db("claim an alert notification"):
        row = catalog.conn.execute(
            "UPDATE alerts SET next_notify_at = %s WHERE id = %s"
            " AND next_notify_at IS NOT DISTINCT FROM %s RETURNING id",
            (now + LEASE, alert["id"], alert["next_notify_at"]),
        ).fetchone()
    return row is not None


def _finish(catalog: Catalog, alert: dict[str, Any], event: str, now: datetime) -> None:
    column = {
        "opened": "notified_at = %(now)s",
        "reminder": "notified_at = %(now)s, reminded_count = reminded_count + 1",
        "resolved": "resolved_notified_at = %(now)s",
    }[event]
    with _db("record an alert notification"):
        catalog.conn.execute(
            f"UPDATE alerts SET {column}, notify_sent = '{{}}', notify_error = NULL,"
            " notify_attempts = 0, next_notify_at = NULL WHERE id = %(id)s",
            {"now": now, "id": alert["id"]},
        )


def _failed(
    catalog: Catalog, alert: dict[str, Any], event: str, done: set[str], error: str, now: datetime
) -> None:
    attempts = int(alert["notify_attempts"]) + 1
    delay = min(FIRST_RETRY * 2 ** (attempts - 1), LAST_RETRY)
    sent = sorted(
        {c for c in alert["notify_sent"] if c.startswith(f"{event}:")}
        | {f"{event}:{channel}" for channel in done}
    )
    with _db("record an alert notification failure"):
        catalog.conn.execute(
            "UPDATE alerts SET notify_sent = %s, notify_error = %s, notify_attempts = %s,"
            " next_notify_at = %s WHERE id = %s",
            (sent, error[:1000], attempts, now + timedelta(seconds=delay), alert["id"]),
        )
    log.warning(
        "alert %s: %s notification failed (attempt %d, next in %d s): %s",
        alert["key"],
        event,
        attempts,
        delay,
        error,
    )


@contextmanager
def _db(action: str) -> Iterator[None]:
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise CatalogUnavailable(f"metadata store failed to {action}: {exc}") from exc


# --- sending -----------------------------------------------------------------------------------


def _send(
    channel: str,
    alert: dict[str, Any],
    event: str,
    settings: Settings,
    mailer: _Mailer,
    hook: _Webhook,
) -> str | None:
    """Deliver on one channel; the error (secret-free, one line) or None."""
    try:
        if channel == EMAIL:
            mailer.send(email_message(alert, event, settings))
        else:
            hook.post(webhook_text(alert, event, settings))
    except Exception as exc:  # a delivery failure is recorded, never raised
        return scrub(f"{type(exc).__name__}: {exc}", settings)
    return None


class _Mailer:
    """One SMTP session for all the messages of a run, opened on the first one. A connection
    that fails is not tried again in the same run: the rest back off with the same error."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.smtp: smtplib.SMTP | None = None
        self.down: str | None = None

    def __enter__(self) -> _Mailer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                self.smtp.close()
            self.smtp = None

    def send(self, message: EmailMessage) -> None:
        if self.down is not None:
            raise ConnectionError(self.down)
        m = self.settings.monitor
        try:
            if self.smtp is None:
                self.smtp = self._connect()
            refused = self.smtp.send_message(
                message, from_addr=m.smtp_from, to_addrs=list(m.alert_emails)
            )
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPSenderRefused):
            raise  # this message's problem; the session may carry on
        except (smtplib.SMTPException, OSError) as exc:
            self.down = f"{type(exc).__name__}: {exc}"
            if self.smtp is not None:
                self.smtp.close()
                self.smtp = None
            raise
        if refused:
            log.warning("alert email refused for %s", ", ".join(sorted(refused)))

    def _connect(self) -> smtplib.SMTP:
        m = self.settings.monitor
        assert m.smtp_host is not None
        smtp: smtplib.SMTP
        if m.smtp_tls == "ssl":
            context = ssl.create_default_context()
            smtp = smtplib.SMTP_SSL(m.smtp_host, m.smtp_port, timeout=SMTP_TIMEOUT, context=context)
        else:
            smtp = smtplib.SMTP(m.smtp_host, m.smtp_port, timeout=SMTP_TIMEOUT)
        try:
            smtp.ehlo()
            if m.smtp_tls == "starttls":
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if m.smtp_user and m.smtp_password:
                smtp.login(m.smtp_user, m.smtp_password.reveal())
        except BaseException:
            smtp.close()
            raise
        return smtp


class _Webhook:
    """The webhook for one run: a server that cannot be reached is not tried again in the
    same run (an HTTP error answer is that message's, and the next one is tried)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.down: str | None = None

    def post(self, text: str) -> None:
        if self.down is not None:
            raise ConnectionError(self.down)
        try:
            post_webhook(self.settings, text)
        except urllib.error.HTTPError:
            raise
        except OSError as exc:
            self.down = f"{type(exc).__name__}: {exc}"
            raise


def post_webhook(settings: Settings, text: str) -> None:
    """A Slack-compatible incoming webhook: POST {"text": ...} as JSON."""
    assert settings.monitor.webhook_url is not None
    request = urllib.request.Request(
        settings.monitor.webhook_url.reveal(),
        data=json.dumps({"text": text}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"permafrost/{__version__}"},
    )
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
        response.read()


# --- what the messages say ---------------------------------------------------------------------


def subject(alert: dict[str, Any], event: str) -> str:
    """[permafrost] CRITICAL: …, [permafrost] REMINDER: CRITICAL: …, [permafrost] RESOLVED: …"""
    summary = one_line(alert["summary"], 160)
    severity = str(alert["severity"]).upper()
    if event == "resolved":
        return f"[permafrost] RESOLVED: {summary}"
    if event == "reminder":
        return f"[permafrost] REMINDER: {severity}: {summary}"
    return f"[permafrost] {severity}: {summary}"


def dashboard_url(settings: Settings) -> str:
    return settings.monitor.public_url.rstrip("/") + "/alerts"


def runbook_of(alert: dict[str, Any]) -> list[str]:
    """The commands to run first: the rule's, or for the scheduler's job alerts, status."""
    text = alert.get("runbook") or ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines or ["permafrost status"]


def _facts(alert: dict[str, Any], event: str) -> list[tuple[str, str]]:
    facts = [
        ("alert", alert["key"]),
        ("severity", alert["severity"]),
        ("opened", _when(alert["first_seen"])),
        ("last seen", _when(alert["last_seen"])),
    ]
    if event == "resolved" and alert["resolved_at"] is not None:
        open_for = alert["resolved_at"] - alert["first_seen"]
        facts.append(("resolved", f"{_when(alert['resolved_at'])} (open {_span(open_for)})"))
    if event == "reminder":
        facts.append(("reminder", str(int(alert["reminded_count"]) + 1)))
    for name, value in sorted((alert.get("details") or {}).items()):
        if value is None or value == "" or value == [] or name.endswith("_seconds"):
            continue  # nothing to say, or said already in words (age beside age_seconds)
        if isinstance(value, list):
            shown = ", ".join(map(str, value))
        elif name.endswith("_bytes") and isinstance(value, int):
            shown = f"{human_bytes(value)} ({value} bytes)"
        else:
            shown = str(value)
        facts.append((name.replace("_", " "), one_line(shown, 600)))
    return facts


def _opening(alert: dict[str, Any], event: str) -> str:
    if event == "resolved":
        return "This alert is resolved: what it reported is no longer the case."
    if event == "reminder":
        return "This alert is still open."
    return "A new alert is open."


def email_message(alert: dict[str, Any], event: str, settings: Settings) -> EmailMessage:
    m = settings.monitor
    dashboard = dashboard_url(settings)
    commands = runbook_of(alert)
    facts = _facts(alert, event)
    width = max(len(name) for name, _ in facts)
    text = "\n".join(
        [
            one_line(alert["summary"], 2000),
            "",
            _opening(alert, event),
            "",
            *(f"  {name.ljust(width)}  {value}" for name, value in facts),
            "",
            "What to do first:" if event != "resolved" else "To look at it:",
            *(f"  {command}" for command in commands),
            "",
            f"Dashboard: {dashboard}",
            "",
            "-- ",
            f"Permafrost {__version__}: sent to {', '.join(m.alert_emails)}. Reminders every "
            + (f"{m.alert_repeat_hours} h" if m.alert_repeat_hours else "never")
            + " while an alert stays open (ALERT_REPEAT_HOURS).",
        ]
    )
    e = html.escape
    color = {"critical": "#b00020", "warning": "#a15c00"}.get(str(alert["severity"]), "#555")
    if event == "resolved":
        color = "#1b7f3b"
    rows = "".join(
        f'<tr><th style="text-align:left;padding:2px 12px 2px 0;vertical-align:top">{e(name)}'
        f'</th><td style="padding:2px 0">{e(value)}</td></tr>'
        for name, value in facts
    )
    body = (
        '<!DOCTYPE html><html><body style="font-family:sans-serif;font-size:14px">'
        f'<p style="font-size:16px;color:{color}"><strong>{e(subject(alert, event))}</strong></p>'
        f"<p>{e(_opening(alert, event))}</p>"
        f"<table>{rows}</table>"
        f"<p><strong>{'What to do first' if event != 'resolved' else 'To look at it'}:</strong></p>"
        f'<pre style="background:#f4f4f4;padding:8px">{e(chr(10).join(commands))}</pre>'
        f'<p><a href="{e(dashboard, quote=True)}">Open the dashboard</a> ({e(dashboard)})</p>'
        "</body></html>"
    )
    message = EmailMessage()
    message["Subject"] = subject(alert, event)
    message["From"] = m.smtp_from
    message["To"] = ", ".join(m.alert_emails)
    message["Date"] = format_datetime(datetime.now(UTC))
    domain = m.smtp_from.rsplit("@", 1)[-1] if "@" in m.smtp_from else "permafrost.local"
    thread = f"<permafrost-alert-{alert['id']}-{alert['first_seen']:%Y%m%d%H%M%S}@{domain}>"
    if event == "opened":
        message["Message-ID"] = thread
    else:
        message["Message-ID"] = make_msgid("permafrost", domain=domain)
        message["In-Reply-To"] = thread
        message["References"] = thread
    message["X-Permafrost-Alert"] = alert["key"]
    message["X-Permafrost-Event"] = event
    message.set_content(text + "\n")
    message.add_alternative(body, subtype="html")
    return message


def webhook_text(alert: dict[str, Any], event: str, settings: Settings) -> str:
    """Slack's mrkdwn: only &, < and > are escaped; the link is <url|text>."""

    def esc(value: str) -> str:
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    lines = [f"*{esc(subject(alert, event))}*"]
    if event != "resolved":
        lines.append("What to do first: " + ", ".join(f"`{esc(c)}`" for c in runbook_of(alert)))
    lines.append(f"<{dashboard_url(settings)}|Dashboard> · alert `{esc(alert['key'])}`")
    return "\n".join(lines)


# --- secrets and small helpers -----------------------------------------------------------------


def scrub(text: str, settings: Settings) -> str:
    """The text without any secret the monitor holds, on one line."""
    m = settings.monitor
    secrets: list[Secret | None] = [
        m.smtp_password,
        m.webhook_url,
        m.healthcheck_ping_url,
        m.api_token,
        m.dashboard_password,
        settings.metadata_url,
    ]
    for secret in secrets:
        if secret:
            text = text.replace(secret.reveal(), "********")
    return one_line(text, 500)


def _once(topic: str, message: str) -> None:
    if topic not in _warned:
        _warned.add(topic)
        log.warning(message)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _span(delta: timedelta) -> str:
    return spoken_duration(delta.total_seconds())
