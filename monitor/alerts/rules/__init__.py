"""The rules, in the order they run, and `evaluate`, which runs each of them once.

A rule takes the evaluation's `Run` and returns its findings. One that cannot be evaluated
now (the metadata store or the bucket is down) raises, and then resolves nothing: only the
families that were evaluated are in `Findings.evaluated`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from monitor.alerts.findings import Finding, Findings, Skip
from monitor.alerts.rules.backups import (
    backup_failed,
    backup_size,
    backup_stale,
    verification_blocked,
    verification_failed,
)
from monitor.alerts.rules.bucket import bucket_unreachable, key_check, lifecycle_drift
from monitor.alerts.rules.copies import copy_lag
from monitor.alerts.rules.drills import pitr_drill
from monitor.alerts.rules.scheduler import scheduler_dead
from monitor.alerts.rules.services import queue_stalled, service_dead, task_stuck
from monitor.alerts.rules.sources import database_gone
from monitor.alerts.rules.wal import wal_gap, wal_lag
from monitor.alerts.rules.walqueue import wal_queue
from monitor.alerts.run import Run, aware
from permafrost.config.fleet import Fleet, load_fleet
from permafrost.context import Context
from permafrost.errors import PermafrostError

log = logging.getLogger("permafrost.monitor.alerts")

Rule = Callable[[Run], list[Finding]]
RULES: tuple[tuple[str, Rule], ...] = (
    ("backup_failed", backup_failed),
    ("backup_stale", backup_stale),
    ("scheduler_dead", scheduler_dead),
    ("service_dead", service_dead),
    ("task_stuck", task_stuck),
    ("queue_stalled", queue_stalled),
    ("verification_failed", verification_failed),
    ("verify_config", verification_blocked),
    ("wal_lag", wal_lag),
    ("wal_queue", wal_queue),
    ("backup_size", backup_size),
    ("bucket_unreachable", bucket_unreachable),  # before the rules that need the bucket
    ("key_check", key_check),
    ("wal_gap", wal_gap),
    ("lifecycle_drift", lifecycle_drift),
    ("pitr_drill", pitr_drill),
    ("database_gone", database_gone),
    ("copy_lag", copy_lag),
)


def evaluate(ctx: Context, now: datetime, *, watching_since: datetime | None = None) -> Findings:
    """Every rule, once. `watching_since` is when this monitor started watching: with no
    heartbeat ever written, the dead-man's switch fires once it has watched for 5 minutes."""
    run = Run(ctx, aware(now), aware(watching_since or now))
    out = Findings()
    for family, rule in RULES:
        try:
            found = rule(run)
        except (Skip, PermafrostError) as exc:
            out.skipped[family] = " ".join(str(exc).split()) or type(exc).__name__
            log.info("alert rule %s not evaluated: %s", family, out.skipped[family])
            continue
        except Exception as exc:  # a bug in one rule must not silence the others
            out.skipped[family] = f"{type(exc).__name__}: {exc}"
            log.exception("alert rule %s failed", family)
            continue
        out.extend(named_sources(found, load_fleet(ctx.settings)))
        out.evaluated.add(family)
    return out


def named_sources(found: list[Finding], fleet: Fleet) -> list[Finding]:
    """In a SOURCES_FILE fleet, each finding about a database or cluster says its source
    (`details["source"]`, shown in the email and on the alerts page); the summary names it
    already, as SOURCE.DATABASE."""
    if fleet.from_file is None:
        return found
    clusters = {s.cluster: s.name for s in fleet.sources if s.cluster}
    for finding in found:
        name = finding.details.get("database") or finding.details.get("cluster")
        if isinstance(name, str) and "source" not in finding.details:
            source = clusters.get(name) or fleet.owner(name)
            if source is not None:
                finding.details["source"] = source
    return found
