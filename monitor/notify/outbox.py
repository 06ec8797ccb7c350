"""The outbox: what each alert is owed, who has been told, and when to try again.

`Outbox.deliver` runs after each evaluation, under the evaluator's lock. For each alert row:

    opened     active, never notified                              one email, one webhook post
    reminder   active, notified more than ALERT_REPEAT_HOURS ago   a reminder (0: never)
    resolved   resolved, its resolution not yet notified           one RESOLVED email and post

Acknowledged and silenced alerts (docs: README "Alerts and email"):

    acknowledged   no more reminders; the opening (if not yet sent) and the resolution still go
    silenced       nothing while silenced_until is ahead; when the silence ends and the alert
                   is still active, it is announced again at once (its opening if it was never
                   sent, else a reminder, unless acknowledged)
    resolved       news only for an alert that was announced (its opening reached a channel),
                   and not when it resolved while silenced

What was delivered is recorded on the alert (notified_at, reminded_count, resolved_notified_at;
notify_sent for the channels that already have a pending event), so nothing goes out twice. A
delivery in progress holds a lease (next_notify_at), so no other notifier tries it meanwhile. A
failed delivery is recorded (notify_error, notify_attempts) and retried on a later run, no sooner
than next_notify_at (1 minute, doubling to 1 hour). Every message is also logged in
alert_notifications (delivered, failed with its error, or pending while no channel is
configured), which the dashboard's alerts page lists. Nothing here raises for a delivery problem,
and no secret (SMTP password, webhook URL) reaches a log line, an alert row or an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.notify.messages import Event, Message, subject
from monitor.notify.transports import Email, Transport, TransportError, Webhook
from permafrost.catalog.store import Catalog
from permafrost.config.settings import Secret, Settings
from permafrost.text import one_line

log = logging.getLogger("permafrost.monitor.notify")
events = logging.getLogger("monitor.notify")  # the monitor's own lines, always written

LEASE = timedelta(minutes=5)  # a delivery in progress: no one else tries it meanwhile
FIRST_RETRY = 60
LAST_RETRY = 3600
RESOLVED_NEWS = timedelta(days=1)  # a resolution older than this is history, not news
NO_CHANNEL = "no channel is configured: set ALERT_EMAIL and SMTP_HOST (or ALERT_WEBHOOK_URL)"

Alert = dict[str, Any]


@dataclass
class Delivery:
    """What one run of the outbox did: (alert key, event, channel) per message."""

    sent: list[tuple[str, str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str, str]] = field(default_factory=list)  # … and the error


def event_of(alert: Alert, settings: Settings, now: datetime) -> Event | None:
    """What this alert is owed now: opened, reminder, resolved, or nothing (a silenced alert is
    owed nothing while silenced; a resolution is owed even when it is not news, see
    `resolution_is_news`, so that it is recorded as done)."""
    if alert["status"] == "resolved":
        return Event.RESOLVED if alert["resolved_notified_at"] is None else None
    if silenced(alert, now):
        return None
    if alert["notified_at"] is None:
        return Event.OPENED
    if alert.get("acknowledged_at") is not None:
        return None
    ended = alert.get("silenced_until")
    if ended is not None and alert["notified_at"] < ended:
        return Event.REMINDER  # still firing when its silence ended: said again, once
    hours = settings.monitor.alert_repeat_hours
    if hours > 0 and alert["notified_at"] <= now - timedelta(hours=hours):
        return Event.REMINDER
    return None


def silenced(alert: Alert, now: datetime) -> bool:
    until = alert.get("silenced_until")
    return until is not None and until > now


def announced(alert: Alert) -> bool:
    """Whether the alert's opening reached a channel (all of them, or some of them)."""
    return alert["notified_at"] is not None or any(
        sent.startswith(f"{Event.OPENED}:") for sent in alert["notify_sent"]
    )


def resolution_is_news(alert: Alert, now: datetime) -> bool:
    """A RESOLVED message goes for an announced alert that did not resolve while silenced."""
    if not announced(alert) or alert["resolved_at"] < now - RESOLVED_NEWS:
        return False
    until = alert.get("silenced_until")
    return until is None or alert["resolved_at"] >= until


class Outbox:
    """Delivers what the alerts are owed on the configured channels, one run at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._said_email_off = False  # said once, not at every run

    def transports(self) -> list[Transport]:
        """The configured channels, fresh for one run."""
        m = self.settings.monitor
        out: list[Transport] = []
        if m.alert_emails and m.smtp_host:
            out.append(Email(self.settings))
        elif not self._said_email_off:
            self._said_email_off = True
            log.warning("alert email is off: set ALERT_EMAIL and SMTP_HOST to have alerts emailed")
        if m.webhook_url:
            out.append(Webhook(self.settings))
        return out

    def deliver(self, catalog: Catalog, now: datetime | None = None) -> Delivery:
        """Send what is owed for every alert, recording it; never raises for a delivery failure."""
        moment = now or datetime.now(UTC)
        delivery = Delivery()
        transports = self.transports()
        try:
            for alert in catalog.alerts_to_notify():
                self._deliver(catalog, alert, transports, moment, delivery)
        finally:
            for transport in transports:
                transport.close()
        return delivery

    def _deliver(
        self,
        catalog: Catalog,
        alert: Alert,
        transports: list[Transport],
        now: datetime,
        delivery: Delivery,
    ) -> None:
        event = event_of(alert, self.settings, now)
        if event is None:
            return
        if event == Event.RESOLVED:
            catalog.drop_pending_notifications(alert["id"], "not sent: the alert resolved first")
            if not resolution_is_news(alert, now):
                catalog.notification_delivered(alert["id"], event, now)  # nobody needs it
                return
        if not transports:
            self._log(catalog, Message(alert, event), "email", "pending", NO_CHANNEL)
            return  # kept for when a channel is configured
        if alert["next_notify_at"] is not None and alert["next_notify_at"] > now:
            return  # backing off
        done = {c.split(":", 1)[1] for c in alert["notify_sent"] if c.startswith(f"{event}:")}
        todo = [transport for transport in transports if transport.name not in done]
        if not todo:
            catalog.notification_delivered(alert["id"], event, now)
        elif catalog.lease_notification(alert["id"], alert["next_notify_at"], now + LEASE):
            errors = self._send(catalog, Message(alert, event), todo, done, delivery)
            if errors:
                self._failed(catalog, alert, event, done, "; ".join(errors), now)
            else:
                catalog.notification_delivered(alert["id"], event, now)

    def _send(
        self,
        catalog: Catalog,
        message: Message,
        todo: list[Transport],
        done: set[str],
        delivery: Delivery,
    ) -> list[str]:
        """Send on each channel; add the ones that took it to `done`; the errors, one each."""
        errors = []
        key, event = message.alert["key"], str(message.event)
        for transport in todo:
            error = self._notify(transport, message)
            if error is None:
                done.add(transport.name)
                delivery.sent.append((key, event, transport.name))
                notified(key, event, transport.name)
                self._log(catalog, message, transport.name, "delivered")
            else:
                errors.append(f"{transport.name}: {error}")
                delivery.failed.append((key, event, transport.name, error))
                self._log(catalog, message, transport.name, "failed", error)
        return errors

    def _log(
        self, catalog: Catalog, message: Message, channel: str, status: str, error: str = ""
    ) -> None:
        """One line of the notification log, as the dashboard's alerts page lists it."""
        alert = message.alert
        number = int(alert["reminded_count"]) + 1 if message.event == Event.REMINDER else 0
        recipients = ", ".join(self.settings.monitor.alert_emails) if channel == "email" else ""
        entry = {
            "event": str(message.event),
            "number": number,
            "channel": channel,
            "recipients": recipients or channel,
            "subject": subject(alert, message.event),
            "status": status,
            "error": error,
        }
        catalog.log_notification(alert, entry)

    def _notify(self, transport: Transport, message: Message) -> str | None:
        """Deliver on one channel; the error (secret-free, one line) or None."""
        try:
            transport.notify(message)
        except TransportError as exc:
            return scrub(str(exc), self.settings)
        except Exception as exc:  # a delivery failure is recorded, never raised
            return scrub(f"{type(exc).__name__}: {exc}", self.settings)
        return None

    def _failed(
        self,
        catalog: Catalog,
        alert: Alert,
        event: Event,
        done: set[str],
        error: str,
        now: datetime,
    ) -> None:
        attempts = int(alert["notify_attempts"]) + 1
        delay = min(FIRST_RETRY * 2 ** (attempts - 1), LAST_RETRY)
        sent = sorted(
            {c for c in alert["notify_sent"] if c.startswith(f"{event}:")}
            | {f"{event}:{channel}" for channel in done}
        )
        retry_at = now + timedelta(seconds=delay)
        catalog.notification_failed(alert["id"], sent, error, attempts, retry_at)
        log.warning(
            "alert %s: %s notification failed (attempt %d, next in %d s): %s",
            alert["key"],
            event,
            attempts,
            delay,
            error,
        )


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


def notified(key: str, event: str, channel: str) -> None:
    """The log line of a notification that reached its channel (`alert_email_sent` for email)."""
    events.info(
        "alert %s: %s notification sent by %s",
        key,
        event,
        channel,
        extra={"event": f"alert_{channel}_sent", "alert": key, "notification": event},
    )
