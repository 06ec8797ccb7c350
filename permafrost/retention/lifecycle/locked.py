"""Lifecycle under object lock (OBJECT_LOCK): the rules it calls for, and the proof they agree.

Under a lock, retention deletes (once each object's lock has ended; `retention/locks.py`), and
no expiry rule is written: an Expiration rule on a versioned bucket hides the current version
behind a delete marker, which would hide a pinned (legally held) backup as surely as delete it.
Moves to cold storage are still written.

The proof, beside `check`'s: the bucket has object lock, and its default retention (if any)
agrees with OBJECT_LOCK (same mode, no longer than the shortest tier's lock); each tier's lock
is at least what retention keeps there, so no retention rule deletes before the lock expires
and nothing retention keeps goes unlocked; no rule expires a locked version before its lock
ends; and the newest objects of each tier carry a lock as long as their tier's (a short lock,
written under other settings or shortened in governance mode, fails the check, naming its tier).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from permafrost import layout
from permafrost.config.settings import Settings
from permafrost.retention.lifecycle.keeps import Requirement
from permafrost.retention.lifecycle.read import rule_id, rule_prefix
from permafrost.storage.base import LockingStorage
from permafrost.storage.lock import retention_days

SAMPLE = 20  # the newest objects of each tier whose locks are read
SLACK = timedelta(hours=1)  # a write's lock is dated when it starts; its object when it ends
TIER_VARIABLES = {
    "standard": "STANDARD_TIER_DAYS",
    "compliance": "COMPLIANCE_TIER_DAYS",
    layout.BASE_TIER: "WAL_RETENTION_DAYS",
    "wal": "WAL_RETENTION_DAYS",
}


def check(
    settings: Settings,
    storage: object,
    rules: list[dict[str, Any]],
    requirements: Iterable[Requirement],
    now: datetime,
) -> tuple[list[str], list[str]]:
    """(problems, notes) of the lock against retention, lifecycle and the bucket."""
    if settings.storage.object_lock == "off":
        return [], []
    if not isinstance(storage, LockingStorage) or not storage.locking:
        return [f"OBJECT_LOCK={settings.storage.object_lock}, but the bucket cannot lock"], []
    days = retention_days(settings.retention)
    problems = _bucket_default(settings, storage, days)
    if problems and "not enabled" in problems[0]:
        return problems, []
    problems += _retention_against_lock(requirements, days)
    problems += [p for rule in rules for p in _rule_against_lock(rule, settings, days)]
    short, notes = _objects_against_lock(settings, storage, days, now)
    notes.append(
        f"OBJECT_LOCK={settings.storage.object_lock}: each tier is locked as long as retention "
        "keeps it ("
        + ", ".join(f"{t} {d} days" for t, d in days.items())
        + "); retention defers any deletion until the lock ends"
    )
    return problems + short, notes


def _bucket_default(settings: Settings, storage: LockingStorage, days: dict[str, int]) -> list[str]:
    bucket = storage.bucket_lock()
    if not bucket.enabled:
        return [f"object lock is not enabled on the bucket ({settings.storage.url})"]
    problems = []
    wanted = settings.storage.object_lock.upper()
    if bucket.default_mode is not None and bucket.default_mode != wanted:
        problems.append(
            f"the bucket's default retention is {bucket.default_mode}, but OBJECT_LOCK={wanted}"
            ": set the same mode (or none) with put-object-lock-configuration"
        )
    shortest = min(days, key=lambda tier: days[tier])
    if bucket.default_days is not None and bucket.default_days > days[shortest]:
        problems.append(
            f"the bucket's default retention ({bucket.default_days} days) is longer than the "
            f"{shortest} tier's lock ({days[shortest]} days): it would lock what Permafrost "
            "writes without a date (pin.json, probes) past retention; shorten it or remove it"
        )
    return problems


def _retention_against_lock(requirements: Iterable[Requirement], days: dict[str, int]) -> list[str]:
    return [
        f"{req.name}: retention keeps it at least {req.days} days ({req.why}), but its lock "
        f"ends after {days[req.name]} days ({TIER_VARIABLES[req.name]}): raise it"
        for req in requirements
        if req.name in TIER_VARIABLES and req.days is not None and req.days > days[req.name]
    ]


def _rule_against_lock(rule: dict[str, Any], settings: Settings, days: dict[str, int]) -> list[str]:
    if rule.get("Status") != "Enabled":
        return []
    expiry = (rule.get("Expiration") or {}).get("Days")
    if expiry is None:
        return []
    prefix = rule_prefix(rule)
    problems = []
    for tier in TIER_VARIABLES:
        folder = _folder(settings.storage.prefix, tier)
        if (folder.startswith(prefix) or prefix.startswith(folder)) and expiry < days[tier]:
            problems.append(
                f"{tier}: rule {rule_id(rule)} expires its objects after {expiry} days, before "
                f"their lock ends ({days[tier]} days): it would hide locked backups behind "
                "delete markers; run `permafrost lifecycle apply`"
            )
    return problems


def _objects_against_lock(
    settings: Settings, storage: LockingStorage, days: dict[str, int], now: datetime
) -> tuple[list[str], list[str]]:
    plain: Any = storage
    problems: list[str] = []
    notes: list[str] = []
    for tier, need in days.items():
        if tier == layout.LOCK_REPOSITORY:
            continue
        newest = sorted(
            plain.list(_folder(settings.storage.prefix, tier)), key=lambda i: i.modified
        )
        newest = [i for i in newest if layout.lock_tier(settings.storage.prefix, i.key)]
        unlocked = 0
        for info in newest[-SAMPLE:]:
            state = storage.lock_state(info.key)
            if state.retain_until is None:
                unlocked += 1
                continue
            held = state.retain_until - info.modified
            if held + SLACK < timedelta(days=need):
                problems.append(
                    f"{tier}: {info.key} is locked only {held.days} days after it was written "
                    f"(until {state.retain_until:%Y-%m-%d}), short of the {need} days "
                    f"{TIER_VARIABLES[tier]} keeps it: retention would still keep it unprotected"
                )
                break
        if unlocked:
            notes.append(
                f"{tier}: {unlocked} of its newest {min(len(newest), SAMPLE)} objects carry no "
                "lock (written before OBJECT_LOCK was set?); `permafrost lock status` counts all"
            )
    return problems, notes


def _folder(prefix: str, tier: str) -> str:
    if tier == "wal":
        return layout.join(prefix, "wal") + "/"
    return layout.tier_folder(prefix, tier)
