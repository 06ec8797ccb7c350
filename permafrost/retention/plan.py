"""Retention: which backups stay, which go, and the rule that decided each.

The plan is a pure function of the backups in the bucket (their ids carry their start times),
the settings and the moment; `permafrost retention` prints it, `--apply` and the scheduler's
daily job carry it out. The rules, per database (per cluster for base backups):

- **daily / weekly** (standard tier): the newest backup of each of the last RETENTION_DAILY
  calendar days and of each of the last RETENTION_WEEKLY ISO weeks, in the scheduler's time zone;
- **compliance** (compliance tier): younger than COMPLIANCE_TIER_DAYS, or one of the newest
  RETENTION_MONTHLY; either rule keeps it;
- **pitr window** (base backups): every base backup that started inside PITR_WINDOW_DAYS, and the
  newest one before it, from which the start of the window is recovered;
- **min-keep**: the newest RETENTION_MIN_KEEP backups of each database, and its newest verified
  one, whatever their age, so a run of failed backups never leaves a database with nothing; for
  base backups it counts chains (a full and its incrementals): the newest RETENTION_MIN_KEEP
  chains of each cluster are kept whole;
- **chain** (base backups): a full or incremental is kept while any kept backup depends on it,
  so chains are kept whole and go only once nothing depends on them; a chain whose parent is
  already gone (broken) is left alone, with a reason naming the command that deletes it;
- **pinned**: a backup in keep/ pinned by an operator is never deleted.
- **safety**: a safety backup (taken by a restore before it replaced a database) is kept for
  SAFETY_RETENTION_DAYS and then deleted; no other rule counts it, nor does it take a min-keep
  place from the database's own backups.

Calendar rules are bounded in time (the lifecycle check proves the bucket's expiry rules are
longer); min-keep, newest-verified and the monthly count are not, so a backup kept only by them
is moved into keep/ ("held") before its tier's lifecycle expiry could reach it, and deleted from
there once no rule keeps it.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from permafrost import layout
from permafrost.config.settings import RetentionSettings
from permafrost.retention import keepchain
from permafrost.storage.base import ObjectInfo

log = logging.getLogger("permafrost")

ORPHAN_AGE = timedelta(days=1)
HOLD_MARGIN = timedelta(days=2)  # held this long before the tier's expiry could reach it
UNBOUNDED = ("min-keep", "newest verified", "monthly")  # rules with no age limit


@dataclass(frozen=True)
class Pin:
    pinned_at: str
    by: str
    reason: str
    from_tier: str
    hold: bool = False  # True: put there by retention, not by an operator

    def to_json(self) -> bytes:
        body = {
            "pinned_at": self.pinned_at,
            "by": self.by,
            "reason": self.reason,
            "from_tier": self.from_tier,
            "hold": self.hold,
        }
        return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def parse(cls, raw: bytes) -> Pin:
        body = json.loads(raw)
        return cls(
            pinned_at=str(body.get("pinned_at", "")),
            by=str(body.get("by", "")),
            reason=str(body.get("reason", "")),
            from_tier=str(body.get("from_tier", "standard")),
            hold=bool(body.get("hold", False)),
        )


@dataclass
class Item:
    """One backup in the bucket: a folder with a manifest."""

    id: str
    database: str
    tier: str  # the folder it is in
    kind: str  # logical or base
    started_at: datetime
    finished_at: datetime | None = None  # base backups: when it became consistent
    verified: bool = False
    pin: Pin | None = None
    objects: list[ObjectInfo] = field(default_factory=list)
    safety: bool = False  # a restore's safety backup: SAFETY_RETENTION_DAYS, no other rule
    parent_id: str | None = None  # base backups: the incremental's direct parent (None: a full)

    @property
    def origin(self) -> str:
        """The tier whose rules apply: a held backup keeps its own tier's rules."""
        if self.tier == layout.KEEP_TIER and self.pin is not None:
            return self.pin.from_tier
        return self.tier

    @property
    def pinned(self) -> bool:
        """An operator's pin: in keep/ (by copy), or a legal hold in place (OBJECT_LOCK)."""
        if self.pin is not None:
            return not self.pin.hold
        return self.tier == layout.KEEP_TIER

    @property
    def held(self) -> bool:
        return self.tier == layout.KEEP_TIER and self.pin is not None and self.pin.hold

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)


class Action(StrEnum):
    """What retention does with one backup."""

    KEEP = "keep"
    DELETE = "delete"
    HOLD = "hold"  # move to keep/, where no lifecycle rule expires it
    RELEASE = "release"  # delete a held backup from keep/


@dataclass
class Decision:
    item: Item
    action: Action
    reasons: list[str]

    @property
    def keep(self) -> bool:
        return self.action in (Action.KEEP, Action.HOLD)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.item.id,
            "database": self.item.database,
            "tier": self.item.tier,
            "kind": self.item.kind,
            "started_at": self.item.started_at.isoformat(),
            "action": self.action.value,
            "keep": self.keep,
            "reasons": self.reasons,
            "bytes": self.item.size,
            **({"parent_id": self.item.parent_id} if self.item.kind == "base" else {}),
        }


def plan(
    items: Iterable[Item],
    default: RetentionSettings,
    now: datetime,
    timezone: str = "UTC",
    policy_for: Callable[[str], RetentionSettings] | None = None,
) -> list[Decision]:
    """A decision for every backup, newest first within each database; `policy_for` gives a
    database's own rules (a fleet source's `retention:`), else `default` holds for all."""
    policy = default
    zone = ZoneInfo(timezone)
    groups: dict[tuple[str, str], list[Item]] = defaultdict(list)
    safety: list[Item] = []
    for item in items:
        (safety if item.safety else groups[(item.kind, item.database)]).append(item)
    decisions: list[Decision] = []
    for (kind, name), group in sorted(groups.items()):
        policy = policy_for(name) if policy_for is not None else default
        group.sort(key=lambda i: (i.started_at, i.id), reverse=True)
        reasons: dict[str, list[str]] = {item.id: [] for item in group}
        if kind == "base":
            _pitr_window(keepchain.restorable(group), policy, now, reasons)
            keepchain.newest_chains(group, policy.min_keep, reasons)
        else:
            standard = [i for i in group if i.origin == "standard"]
            _calendar(standard, policy, now, zone, reasons)
            compliance = [i for i in group if i.origin == "compliance"]
            _compliance(compliance, policy, now, reasons)
            for item in group[: policy.min_keep]:
                reasons[item.id].append(f"min-keep: one of the newest {policy.min_keep}")
        verified = next((i for i in group if i.verified), None)
        if verified is not None:
            reasons[verified.id].append("newest verified")
        for item in group:
            if item.pinned:
                why = item.pin.reason if item.pin and item.pin.reason else "no reason given"
                by = item.pin.by if item.pin else "unknown"
                reasons[item.id].insert(0, f"pinned by {by}: {why}")
        if kind == "base":
            keepchain.keep_whole(group, reasons)
        decisions += [_decide(item, reasons[item.id], policy, now) for item in group]
    safety.sort(key=lambda i: (i.database, -i.started_at.timestamp(), i.id))
    decisions += [_safety_decision(item, default, now) for item in safety]
    return decisions


def _safety_decision(item: Item, policy: RetentionSettings, now: datetime) -> Decision:
    """A safety backup: kept for SAFETY_RETENTION_DAYS (or while pinned), then deleted."""
    age = (now - item.started_at).days
    if item.pinned:
        by = item.pin.by if item.pin else "unknown"
        why = item.pin.reason if item.pin and item.pin.reason else "no reason given"
        return Decision(item, Action.KEEP, [f"pinned by {by}: {why}"])
    if now - item.started_at < timedelta(days=policy.safety_days):
        why = f"safety backup: {age} days old, under SAFETY_RETENTION_DAYS={policy.safety_days}"
        return Decision(item, Action.KEEP, [why])
    why = f"expired: safety backup {age} days old, over SAFETY_RETENTION_DAYS={policy.safety_days}"
    return Decision(item, Action.RELEASE if item.held else Action.DELETE, [why])


def _decide(item: Item, reasons: list[str], policy: RetentionSettings, now: datetime) -> Decision:
    if item.pinned:
        return Decision(item, Action.KEEP, reasons)
    if not reasons:
        age = (now - item.started_at).days
        why = f"expired: {age} days old, kept by no rule"
        return Decision(item, Action.RELEASE if item.held else Action.DELETE, [why])
    # A rule with no age limit keeps it, and its tier's lifecycle expiry is near: hold it in
    # keep/, where nothing expires. Base backups are not held: the WAL they need expires with
    # wal/ (WAL_RETENTION_DAYS) whatever happens to them.
    unbounded = any(r.startswith(UNBOUNDED) for r in reasons)
    expiry = _tier_expiry(item.origin, policy)
    if (
        not item.held
        and unbounded
        and item.kind == "logical"
        and expiry is not None
        and now - item.started_at >= expiry - HOLD_MARGIN
    ):
        note = f"held in keep/: the {item.origin} tier's lifecycle expiry ({expiry.days} days)"
        return Decision(item, Action.HOLD, [*reasons, note])
    return Decision(item, Action.KEEP, reasons)


def _tier_expiry(tier: str, policy: RetentionSettings) -> timedelta | None:
    days = {
        "standard": policy.standard_days,
        "compliance": policy.compliance_days,
        layout.BASE_TIER: policy.wal_days,
    }.get(tier)
    return timedelta(days=days) if days else None


def _calendar(
    group: list[Item],
    policy: RetentionSettings,
    now: datetime,
    zone: ZoneInfo,
    reasons: dict[str, list[str]],
) -> None:
    """Grandfather-father-son by calendar: the newest backup of each recent day and ISO week."""
    newest_of_day: dict[date, str] = {}
    newest_of_week: dict[tuple[int, int], str] = {}
    for item in group:  # newest first: the first seen of each day or week is its newest
        local = item.started_at.astimezone(zone).date()
        newest_of_day.setdefault(local, item.id)
        iso = local.isocalendar()
        newest_of_week.setdefault((iso.year, iso.week), item.id)
    today = now.astimezone(zone).date()
    for offset in range(policy.daily):
        day = today - timedelta(days=offset)
        if day in newest_of_day:
            reasons[newest_of_day[day]].append(f"daily {day.isoformat()}")
    for offset in range(policy.weekly):
        iso = (today - timedelta(weeks=offset)).isocalendar()
        if (iso.year, iso.week) in newest_of_week:
            reasons[newest_of_week[(iso.year, iso.week)]].append(
                f"weekly {iso.year}-W{iso.week:02d}"
            )


def _compliance(
    group: list[Item], policy: RetentionSettings, now: datetime, reasons: dict[str, list[str]]
) -> None:
    horizon = now - timedelta(days=policy.compliance_days)
    for index, item in enumerate(group):
        if item.started_at > horizon:
            age = (now - item.started_at).days
            reasons[item.id].append(
                f"compliance: {age} days old, under COMPLIANCE_TIER_DAYS={policy.compliance_days}"
            )
        if index < policy.monthly:
            reasons[item.id].append(f"monthly: one of the newest {policy.monthly} compliance")


def _pitr_window(
    group: list[Item], policy: RetentionSettings, now: datetime, reasons: dict[str, list[str]]
) -> None:
    """Base backups inside the window, and the newest one consistent before its start."""
    start = now - timedelta(days=policy.pitr_window_days)
    for item in group:
        if item.started_at > start:
            reasons[item.id].append(f"pitr window: inside the last {policy.pitr_window_days} days")
    before = [i for i in group if (i.finished_at or i.started_at) <= start]
    if before:
        newest = max(before, key=lambda i: (i.finished_at or i.started_at, i.id))
        reasons[newest.id].append(
            f"pitr window: the window's start ({start:%Y-%m-%d %H:%M} UTC) is recovered from it"
        )
