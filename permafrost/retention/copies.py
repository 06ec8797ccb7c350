"""Each copy destination's own retention, and the settings its lifecycle rules are made from.

A copy is a repository of its own: retention plans from its own inventory (its listing, its
manifests) by the primary's rules, and then its own days bound them: a standard backup older
than COPY_<N>_RETENTION_DAYS, or a compliance one older than COPY_<N>_COMPLIANCE_RETENTION_DAYS,
goes from the copy even where a count (daily, weekly, monthly) would keep it; only min-keep and
a pin still keep it, so a copy is never left empty. COPY_<N>_WAL_RETENTION_DAYS and those days
also make its lifecycle rules (`settings_for`). It deletes there only. Its catalog session is
scoped to the copy's repository, so the plan's catalog reads and writes (verified ids, usage,
`mark_deleted`) touch the copy's rows and never the primary's; the deletions are audit-logged
as any, and the copies they remove are forgotten in `backup_copies`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from permafrost.config.copies import CopyDestination
from permafrost.config.settings import Settings
from permafrost.copies.target import open_target
from permafrost.errors import CatalogUnavailable, PermafrostError
from permafrost.repo.config import Repository
from permafrost.retention import apply as cleanup
from permafrost.retention.plan import Action, Decision
from permafrost.text import first_line

Say = Callable[[str], None]


@dataclass
class CopyRetention:
    """One destination's retention run: its outcome, or why it could not run."""

    destination: str
    outcome: cleanup.Outcome | None = None
    error: str | None = None


def settings_for(settings: Settings, destination: CopyDestination) -> Settings:
    """The settings as seen from a copy: its storage, its own retention days (the primary's
    where it sets none). Lifecycle rules are made from these too."""
    policy = settings.retention
    own = replace(
        policy,
        standard_days=destination.retention_days or policy.standard_days,
        compliance_days=destination.compliance_retention_days or policy.compliance_days,
        wal_days=destination.wal_retention_days or policy.wal_days,
    )
    if destination.retention_days:  # the counts reach no further back than the copy's days
        days = destination.retention_days
        own = replace(own, daily=min(own.daily, days), weekly=min(own.weekly, days // 7))
    if destination.compliance_retention_days:
        own = replace(own, monthly=min(own.monthly, destination.compliance_retention_days // 31))
    return replace(settings, storage=destination.storage, retention=own)


def bound(decisions: list[Decision], destination: CopyDestination, now: datetime) -> list[Decision]:
    """The plan with the copy's own days: what is older than them is deleted there, unless
    min-keep or a pin keeps it."""
    return [_bounded(d, destination, now) for d in decisions]


def _bounded(decision: Decision, destination: CopyDestination, now: datetime) -> Decision:
    item = decision.item
    days, variable = {
        "standard": (destination.retention_days, "RETENTION_DAYS"),
        "compliance": (destination.compliance_retention_days, "COMPLIANCE_RETENTION_DAYS"),
    }.get(item.origin, (None, ""))
    if days is None or not decision.keep or item.kind != "logical" or item.safety:
        return decision
    if item.pinned or any(r.startswith("min-keep") for r in decision.reasons):
        return decision
    age = now - item.started_at
    if age < timedelta(days=days):
        return decision
    why = (
        f"expired on copy {destination.name}: {age.days} days old, over "
        f"{destination.prefix}{variable}={days}"
    )
    return Decision(item, Action.RELEASE if item.held else Action.DELETE, [why])


def run_copies(
    settings: Settings,
    primary: Repository,
    now: datetime,
    *,
    apply: bool,
    database: str | None = None,
    say: Say = lambda _: None,
) -> list[CopyRetention]:
    """Plan (and with apply, carry out) each destination's own retention, there only."""
    return [
        _run_one(settings, primary, d, now, apply=apply, database=database, say=say)
        for d in settings.copies.destinations
    ]


def _run_one(
    settings: Settings,
    primary: Repository,
    destination: CopyDestination,
    now: datetime,
    *,
    apply: bool,
    database: str | None,
    say: Say,
) -> CopyRetention:
    result = CopyRetention(destination.name)
    try:
        target = open_target(settings, primary, destination)
    except PermafrostError as exc:
        result.error = first_line(exc)
        return result
    from permafrost.catalog.store import connect  # psycopg only when there is a copy

    try:
        catalog = connect(settings.metadata_url)
    except CatalogUnavailable:
        if apply:
            raise  # a deletion must be audit-logged
        catalog = None
    try:
        if catalog is not None:
            catalog.scope(target.repository.id)
        result.outcome = cleanup.run(
            settings_for(settings, destination),
            target.storage,
            target.repository,
            catalog,
            now,
            apply=apply,
            database=database,
            say=lambda text: say(f"copy {destination.name}: {text}"),
            amend=lambda decisions: bound(decisions, destination, now),
        )
        if apply and catalog is not None:
            for decision in result.outcome.decisions:
                failed = any(e.startswith(f"{decision.item.id}:") for e in result.outcome.errors)
                if decision.action in (Action.DELETE, Action.RELEASE) and not failed:
                    catalog.copy_removed(decision.item.id, target.repository.id)
    except PermafrostError as exc:
        result.error = first_line(exc)
    finally:
        if catalog is not None:
            catalog.close()
    return result
