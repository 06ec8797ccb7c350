"""What the messages say: the subject, the plain and HTML email, the webhook's text.

The same alert row and event make the same words on every channel; nothing here sends.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from enum import StrEnum
from typing import Any

from permafrost import __version__
from permafrost.config.settings import Settings
from permafrost.text import human_bytes, one_line, spoken_duration


class Event(StrEnum):
    """What an alert is owed: news of its opening, a reminder, news of its resolution."""

    OPENED = "opened"
    REMINDER = "reminder"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Message:
    """One alert row and the event it is owed."""

    alert: dict[str, Any]
    event: Event


def subject(alert: dict[str, Any], event: Event) -> str:
    """[permafrost] CRITICAL: …, [permafrost] REMINDER: CRITICAL: …, [permafrost] RESOLVED: …"""
    summary = one_line(alert["summary"], 160)
    severity = str(alert["severity"]).upper()
    if event == Event.RESOLVED:
        return f"[permafrost] RESOLVED: {summary}"
    if event == Event.REMINDER:
        return f"[permafrost] REMINDER: {severity}: {summary}"
    return f"[permafrost] {severity}: {summary}"


def dashboard_url(settings: Settings) -> str:
    return settings.monitor.public_url.rstrip("/") + "/alerts"


def runbook_of(alert: dict[str, Any]) -> list[str]:
    """The commands to run first: the rule's, or for the scheduler's job alerts, status."""
    text = alert.get("runbook") or ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines or ["permafrost status"]


def _facts(alert: dict[str, Any], event: Event) -> list[tuple[str, str]]:
    facts = [
        ("alert", alert["key"]),
        ("severity", alert["severity"]),
        ("opened", _when(alert["first_seen"])),
        ("last seen", _when(alert["last_seen"])),
    ]
    if event == Event.RESOLVED and alert["resolved_at"] is not None:
        open_for = alert["resolved_at"] - alert["first_seen"]
        facts.append(("resolved", f"{_when(alert['resolved_at'])} (open {_span(open_for)})"))
    if event == Event.REMINDER:
        facts.append(("reminder", str(int(alert["reminded_count"]) + 1)))
    if alert.get("silenced_until") is not None:
        silence = f"{alert.get('silence_reason') or ''} ({alert.get('silenced_by') or '-'})"
        facts.append(("silenced until", f"{_when(alert['silenced_until'])}: {silence}"))
    if alert.get("acknowledged_at") is not None:
        ack = f"{alert.get('ack_reason') or ''} ({alert.get('acknowledged_by') or '-'})"
        facts.append(("acknowledged", f"{_when(alert['acknowledged_at'])}: {ack}"))
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


def _opening(alert: dict[str, Any], event: Event) -> str:
    if event == Event.RESOLVED:
        return "This alert is resolved: what it reported is no longer the case."
    ended = alert.get("silenced_until")
    if ended is not None and ended <= datetime.now(UTC) and event != Event.RESOLVED:
        return f"This alert is still open: its silence ended at {_when(ended)}."
    if event == Event.REMINDER:
        return "This alert is still open."
    return "A new alert is open."


def email_message(alert: dict[str, Any], event: Event, settings: Settings) -> EmailMessage:
    """The email for an event: plain text and HTML, threaded under the opening message."""
    facts = _facts(alert, event)
    message = EmailMessage()
    _set_headers(message, alert, event, settings)
    message.set_content(_text_body(alert, event, settings, facts) + "\n")
    message.add_alternative(_html_body(alert, event, settings, facts), subtype="html")
    return message


def _set_headers(
    message: EmailMessage, alert: dict[str, Any], event: Event, settings: Settings
) -> None:
    m = settings.monitor
    message["Subject"] = subject(alert, event)
    message["From"] = m.smtp_from
    message["To"] = ", ".join(m.alert_emails)
    message["Date"] = format_datetime(datetime.now(UTC))
    domain = m.smtp_from.rsplit("@", 1)[-1] if "@" in m.smtp_from else "permafrost.local"
    thread = f"<permafrost-alert-{alert['id']}-{alert['first_seen']:%Y%m%d%H%M%S}@{domain}>"
    if event == Event.OPENED:
        message["Message-ID"] = thread
    else:
        message["Message-ID"] = make_msgid("permafrost", domain=domain)
        message["In-Reply-To"] = thread
        message["References"] = thread
    message["X-Permafrost-Alert"] = alert["key"]
    message["X-Permafrost-Event"] = str(event)


def _text_body(
    alert: dict[str, Any], event: Event, settings: Settings, facts: list[tuple[str, str]]
) -> str:
    m = settings.monitor
    width = max(len(name) for name, _ in facts)
    return "\n".join(
        [
            one_line(alert["summary"], 2000),
            "",
            _opening(alert, event),
            "",
            *(f"  {name.ljust(width)}  {value}" for name, value in facts),
            "",
            "What to do first:" if event != Event.RESOLVED else "To look at it:",
            *(f"  {command}" for command in runbook_of(alert)),
            "",
            f"Dashboard: {dashboard_url(settings)}",
            "",
            "-- ",
            f"Permafrost {__version__}: sent to {', '.join(m.alert_emails)}. Reminders every "
            + (f"{m.alert_repeat_hours} h" if m.alert_repeat_hours else "never")
            + " while an alert stays open (ALERT_REPEAT_HOURS).",
        ]
    )


def _html_body(
    alert: dict[str, Any], event: Event, settings: Settings, facts: list[tuple[str, str]]
) -> str:
    e = html.escape
    dashboard = dashboard_url(settings)
    color = {"critical": "#b00020", "warning": "#a15c00"}.get(str(alert["severity"]), "#555")
    if event == Event.RESOLVED:
        color = "#1b7f3b"
    rows = "".join(
        f'<tr><th style="text-align:left;padding:2px 12px 2px 0;vertical-align:top">{e(name)}'
        f'</th><td style="padding:2px 0">{e(value)}</td></tr>'
        for name, value in facts
    )
    return (
        '<!DOCTYPE html><html><body style="font-family:sans-serif;font-size:14px">'
        f'<p style="font-size:16px;color:{color}"><strong>{e(subject(alert, event))}</strong></p>'
        f"<p>{e(_opening(alert, event))}</p>"
        f"<table>{rows}</table>"
        f"<p><strong>{'What to do first' if event != 'resolved' else 'To look at it'}:</strong></p>"
        f'<pre style="background:#f4f4f4;padding:8px">{e(chr(10).join(runbook_of(alert)))}</pre>'
        f'<p><a href="{e(dashboard, quote=True)}">Open the dashboard</a> ({e(dashboard)})</p>'
        "</body></html>"
    )


def webhook_text(alert: dict[str, Any], event: Event, settings: Settings) -> str:
    """Slack's mrkdwn: only &, < and > are escaped; the link is <url|text>."""

    def esc(value: str) -> str:
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    lines = [f"*{esc(subject(alert, event))}*"]
    if event != Event.RESOLVED:
        lines.append("What to do first: " + ", ".join(f"`{esc(c)}`" for c in runbook_of(alert)))
    lines.append(f"<{dashboard_url(settings)}|Dashboard> · alert `{esc(alert['key'])}`")
    return "\n".join(lines)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _span(delta: timedelta) -> str:
    return spoken_duration(delta.total_seconds())
