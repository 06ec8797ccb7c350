"""The evaluator: every ALERT_CHECK_INTERVAL seconds, the rules, their alerts, the messages.

One monitor process at a time evaluates (a PostgreSQL advisory lock picks it, so several
gunicorn workers or replicas never duplicate the work): it raises or refreshes an alert per
finding, resolves the alerts of its rule families that are no longer found, and hands the
result to the notification outbox.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from monitor.alerts.findings import Finding, Findings, owns
from monitor.alerts.rules import evaluate
from monitor.alerts.run import aware
from monitor.notify.outbox import Delivery, Outbox
from permafrost.catalog.reads import close_quietly
from permafrost.catalog.store import Catalog, connect
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.errors import CatalogUnavailable

log = logging.getLogger("permafrost.monitor.alerts")

ALERT_LOCK = 0x616C7274  # 'alrt': one evaluator at a time, across processes and hosts
LOCK_NAME = "evaluator"


@dataclass
class Applied:
    opened: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)


def apply_findings(
    catalog: Catalog, findings: Sequence[Finding], keys_owned: Iterable[str]
) -> Applied:
    """Raise (or refresh) an alert per finding; resolve the active alerts of the families in
    `keys_owned` (normally `findings.evaluated`) that were not found this time."""
    applied = Applied()
    seen: set[str] = set()
    for finding in findings:
        if finding.key not in seen:
            seen.add(finding.key)
            _raise(catalog, finding, applied)
    owned = set(keys_owned)
    for alert in catalog.active_alert_keys():
        if alert not in seen and owns(alert, owned) and catalog.resolve_alert(alert):
            applied.resolved.append(alert)
    for key in applied.opened:
        log.warning("alert opened: %s", key, extra={"event": "alert_opened", "alert": key})
    for key in applied.resolved:
        log.warning("alert resolved: %s", key, extra={"event": "alert_resolved", "alert": key})
    return applied


def _raise(catalog: Catalog, finding: Finding, applied: Applied) -> None:
    details = dict(finding.details)
    if catalog.raise_alert(finding.key, finding.severity, finding.summary, details):
        applied.opened.append(finding.key)
    else:
        applied.refreshed.append(finding.key)
    catalog.set_runbook(finding.key, finding.runbook)


@dataclass
class Outcome:
    """One run of the evaluator that held the lock."""

    findings: Findings
    applied: Applied
    delivery: Delivery | None


class Evaluator:
    """Runs the rules every ALERT_CHECK_INTERVAL seconds on a daemon thread; one process at a
    time (a session advisory lock on a connection of its own), so any number of monitor
    workers or replicas may each run one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.watching_since = datetime.now(UTC)
        self.outbox = Outbox(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_catalog: Catalog | None = None
        self._mutex = threading.Lock()

    @property
    def interval(self) -> int:
        return self.settings.monitor.alert_interval

    def start(self) -> None:
        """Start the thread (once); with ALERT_CHECK_INTERVAL=0 or no metadata store, do not."""
        if self._thread is not None and self._thread.is_alive():
            return
        if self.interval <= 0:
            log.warning("ALERT_CHECK_INTERVAL is 0: the alert evaluator is off")
            return
        if self.settings.metadata_url is None:
            log.warning("METADATA_DATABASE_URL is not set: the alert evaluator is off")
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="permafrost-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._mutex:
            self._close_lock_catalog()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once(if_due=True)
            except Exception:  # the thread outlives every failure
                log.exception("the alert evaluator failed; it runs again in %s s", self.interval)
            self._stop.wait(self.interval)

    def run_once(self, now: datetime | None = None, *, if_due: bool = False) -> Outcome | None:
        """Evaluate, apply and notify, if this process gets the lock; None when another holds
        it or the metadata store is down (logged). With `if_due` (the thread), also None when
        another process ran within half an interval: several workers make one run per interval,
        not one each. Unexpected errors propagate (the thread logs them)."""
        with self._mutex:
            moment = aware(now or datetime.now(UTC))
            lock = self._lock()
            if lock is None:
                return None
            ctx = Context(self.settings)
            try:
                return self._run(ctx, moment, if_due)
            except CatalogUnavailable as exc:
                log.warning("alerts not evaluated: %s", exc)
                return None
            finally:
                ctx.close()
                self._unlock(lock)

    def _run(self, ctx: Context, moment: datetime, if_due: bool) -> Outcome | None:
        catalog = ctx.catalog()
        if if_due and not self._due(catalog, moment):
            return None
        findings = evaluate(ctx, moment, watching_since=self.watching_since)
        applied = apply_findings(catalog, findings, findings.evaluated)
        delivery = self.outbox.deliver(catalog, moment)
        catalog.evaluator_ran(moment)
        return Outcome(findings, applied, delivery)

    def _due(self, catalog: Catalog, now: datetime) -> bool:
        last = catalog.evaluator_last_run()
        return last is None or not timedelta(0) <= now - last < timedelta(seconds=self.interval / 2)

    def _lock(self) -> Catalog | None:
        try:
            if self._lock_catalog is None:
                self._lock_catalog = connect(self.settings.metadata_url)
            if self._lock_catalog.try_lock(ALERT_LOCK, LOCK_NAME):
                return self._lock_catalog
            log.debug("another monitor is evaluating the alerts")
            return None
        except CatalogUnavailable as exc:
            log.warning("alerts not evaluated: %s", exc)
            self._close_lock_catalog()
            return None

    def _unlock(self, catalog: Catalog) -> None:
        try:
            catalog.unlock(ALERT_LOCK, LOCK_NAME)
        except CatalogUnavailable:
            self._close_lock_catalog()  # the session, and so the lock, is gone with it

    def _close_lock_catalog(self) -> None:
        if self._lock_catalog is not None:
            close_quietly(self._lock_catalog)
            self._lock_catalog = None
