"""Outages the metadata store cannot report: its own, and the source database server's.

The evaluator keeps its alerts in the metadata store, so it falls silent when that store is
down. This watch does without it: every ALERT_CHECK_INTERVAL, a thread of each monitor process
probes the metadata store and each configured source database on connections of its own, sends
the email (and the webhook post) through the transports directly, and remembers what it sent in
a JSON file under MONITOR_STATE_DIR (outage_state.py), so an alert goes out once, not at every
evaluation nor after a restart of the monitor, and its RESOLVED message goes out when the probe
succeeds again.

    metadata_unreachable   critical  the metadata store does not answer
    source_unreachable     critical  a configured source database cannot be connected to

No false alarm: an alert opens after GRACE consecutive failed probes spanning at least one
ALERT_CHECK_INTERVAL, so one failed probe (a restart of the server, a blip) pages no one; with
the default interval of 60 s that is one to two minutes. A reminder goes every
ALERT_REPEAT_HOURS while the outage lasts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.alerts.outage_state import State, StateFile
from monitor.notify.messages import Event, Message
from monitor.notify.outbox import Outbox, notified
from monitor.notify.transports import TransportError
from permafrost.catalog.reads import probe
from permafrost.config.settings import Settings, source_from_url
from permafrost.errors import PermafrostError
from permafrost.postgres import tools
from permafrost.text import iso, one_line

log = logging.getLogger("permafrost.monitor.alerts")

GRACE = 2  # consecutive failed probes before an alert opens
STILL_WORKS = (
    "the bucket: `permafrost list` and `permafrost restore` read it without the metadata store"
)


@dataclass(frozen=True)
class Check:
    key: str
    what: str  # "the metadata store (127.0.0.1:5432/permafrost)"
    summary: str
    runbook: tuple[str, ...]
    probe: Callable[[], None]  # raises PermafrostError when down

    def failure(self) -> str | None:
        """Why the probe failed, in one line, or None when it succeeded."""
        try:
            self.probe()
        except PermafrostError as exc:
            return one_line(exc, 300)
        return None


def checks(settings: Settings) -> list[Check]:
    found = []
    if settings.metadata_url is not None:
        found.append(_metadata_check(settings))
    if settings.source.host or settings.source.databases:
        found.append(_source_check(settings))
    return found


def _metadata_check(settings: Settings) -> Check:
    url = settings.metadata_url
    assert url is not None
    server = source_from_url(url.reveal(), "METADATA_DATABASE_URL")
    where = f"{tools.where(server)}/{tools.cluster_database(server)}"
    host = server.host or "localhost"
    return Check(
        key="metadata_unreachable",
        what=f"the metadata store ({where})",
        summary=f"the metadata store at {where} does not answer: alerts and the dashboard wait"
        " for it",
        runbook=(
            f"pg_isready -h {host} -p {server.port or 5432}",
            "permafrost list",
            "permafrost restore latest --target-db NEW_NAME",
        ),
        probe=lambda: probe(url),
    )


def _source_check(settings: Settings) -> Check:
    source = settings.source
    databases = source.databases or (tools.cluster_database(source),)
    where = tools.where(source)

    def connect_each() -> None:
        for database in databases:
            with closing(tools.connect(source, database, autocommit=True)):
                pass

    return Check(
        key="source_unreachable",
        what=f"the source database server ({where})",
        summary=f"the source database server at {where} cannot be reached: backups of"
        f" {', '.join(databases)} will fail",
        runbook=(f"pg_isready -h {source.host or 'localhost'} -p {source.port or 5432}",),
        probe=connect_each,
    )


def state_file(settings: Settings) -> StateFile:
    identity = " ".join(check.what for check in checks(settings))
    return StateFile(settings.monitor.state_dir, identity)


@dataclass(frozen=True)
class Outage:
    """An outage as the page shows it."""

    key: str
    what: str
    since: datetime
    error: str
    announced: bool
    alert: str  # what became of its alert, in words


def current(settings: Settings) -> list[Outage]:
    """The outages the watch has seen (one failed probe is enough here), from its file."""
    entries = state_file(settings).read()["outages"]
    return [
        Outage(key, e["what"], _moment(e["since"]), e["error"], bool(e["sent"]), _alert_said(e))
        for key, e in sorted(entries.items())
        if e.get("resolved_at") is None
    ]


def _alert_said(entry: dict[str, Any]) -> str:
    if entry["sent"]:
        return "sent (" + ", ".join(sorted({n.split(":")[1] for n in entry["sent"]})) + ")"
    if entry.get("send_error"):
        return f"not sent yet: {entry['send_error']} (tried again at every check)"
    if entry.get("notified_at"):
        return "no channel to send it on (set ALERT_EMAIL and SMTP_HOST)"
    return "not yet: it opens after two failed probes"


class OutageWatch:
    """Probes, alerts and remembers, on a daemon thread, every ALERT_CHECK_INTERVAL."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.outbox = Outbox(settings)
        self.state = state_file(settings)
        self._checks = checks(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def interval(self) -> int:
        return self.settings.monitor.alert_interval

    def start(self) -> None:
        """Start the thread (ConfigError when MONITOR_STATE_DIR cannot be written)."""
        if self.interval <= 0 or not self._checks or self._thread is not None:
            return
        self.state.check_writable()
        self._thread = threading.Thread(target=self._loop, name="permafrost-outage", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once(if_due=True)
            except Exception:  # the thread outlives every failure
                log.exception("the outage watch failed; it runs again in %s s", self.interval)
            self._stop.wait(self.interval)

    def run_once(self, now: datetime | None = None, *, if_due: bool = False) -> list[str] | None:
        """Probe each check and send what is owed; the messages sent ("opened:email:KEY"), or
        None when another process holds the state or (with `if_due`) ran within half an
        interval: several workers make one probe per interval between them."""
        moment = now or datetime.now(UTC)
        with self.state.locked() as state:
            if state is None or (if_due and not _due(state, moment, self.interval / 2)):
                return None
            sent = [name for check in self._checks for name in self._apply(state, check, moment)]
            state["last_run"] = iso(moment)
            self.state.write(state)
        return sent

    def _apply(self, state: State, check: Check, now: datetime) -> list[str]:
        error = check.failure()
        entries: dict[str, Any] = state["outages"]
        entry = entries.get(check.key)
        if error is None:
            if entry is None:
                return []
            if not entry["sent"]:  # never announced (a blip): nothing to resolve
                del entries[check.key]
                return []
            entry["resolved_at"] = entry.get("resolved_at") or iso(now)
            done, sent = self._deliver(check, entry, Event.RESOLVED, "resolved")
            if done:
                log.warning(
                    "outage resolved: %s",
                    check.key,
                    extra={"event": "alert_resolved", "alert": check.key},
                )
                del entries[check.key]
            return sent
        if entry is None:
            entry = entries[check.key] = {"since": iso(now), "failures": 0, "sent": []}
            log.warning("%s failed a probe: %s", check.what, error)
        entry.update(failures=entry["failures"] + 1, error=error, what=check.what)
        entry.update(last_seen=iso(now), resolved_at=None)
        return self._announce(check, entry, now) if self._past_grace(entry, now) else []

    def _past_grace(self, entry: dict[str, Any], now: datetime) -> bool:
        lasted = now - _moment(entry["since"])
        return entry["failures"] >= GRACE and lasted >= timedelta(seconds=self.interval)

    def _announce(self, check: Check, entry: dict[str, Any], now: datetime) -> list[str]:
        hours = self.settings.monitor.alert_repeat_hours
        notified = entry.get("notified_at")
        if notified is None:
            event, tag = Event.OPENED, "opened"
        elif hours > 0 and _moment(notified) <= now - timedelta(hours=hours):
            event, tag = Event.REMINDER, f"reminder{entry.get('reminded', 0) + 1}"
        else:
            return []
        done, sent = self._deliver(check, entry, event, tag)
        if done:
            if event == Event.OPENED:
                log.warning(
                    "outage alert opened: %s",
                    check.key,
                    extra={"event": "alert_opened", "alert": check.key},
                )
            else:
                entry["reminded"] = entry.get("reminded", 0) + 1
            entry["notified_at"] = iso(now)
        return sent

    def _deliver(
        self, check: Check, entry: dict[str, Any], event: Event, tag: str
    ) -> tuple[bool, list[str]]:
        """Send the event on each channel that has not had it; whether all have now."""
        message = Message(alert_row(check, entry), event)
        done, sent = True, []
        for transport in self.outbox.transports():
            name = f"{tag}:{transport.name}"
            if name in entry["sent"]:
                continue
            try:
                transport.notify(message)
            except TransportError as exc:
                done = False
                entry["send_error"] = f"{transport.name}: {one_line(exc, 200)}"
                log.warning("%s for %s not sent by %s: %s", event, check.key, transport.name, exc)
            else:
                entry["sent"].append(name)
                sent.append(f"{name}:{check.key}")
                notified(check.key, str(event), transport.name)
            finally:
                transport.close()
        if done:
            entry.pop("send_error", None)
        return done, sent


def alert_row(check: Check, entry: dict[str, Any]) -> dict[str, Any]:
    """The outage in the shape of an alert row, for the message helpers."""
    since = _moment(entry["since"])
    resolved = entry.get("resolved_at")
    return {
        "id": check.key,
        "key": check.key,
        "severity": "critical",
        "status": "resolved" if resolved else "active",
        "summary": check.summary,
        "details": {
            "error": entry["error"],
            "still_works": STILL_WORKS,
            "checked_by": "the monitor itself, without the metadata store (MONITOR_STATE_DIR)",
        },
        "runbook": "\n".join(check.runbook),
        "first_seen": since,
        "last_seen": _moment(entry["last_seen"]),
        "resolved_at": _moment(resolved) if resolved else None,
        "reminded_count": entry.get("reminded", 0),
    }


def _due(state: State, now: datetime, spacing: float) -> bool:
    last = state.get("last_run")
    return last is None or not timedelta(0) <= now - _moment(last) < timedelta(seconds=spacing)


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)
