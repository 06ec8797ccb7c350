"""`permafrost lock status`: every object's lock, per tier, and what a delete would do today.

One listing per tier and one HEAD per object (eight at a time), so it is a report to run by
hand, not on a schedule. Legacy keep/ pins and the repository config are shown as their own
rows; objects no lock holds (pin.json, probes) are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from permafrost import layout
from permafrost.retention import holds
from permafrost.storage import Storage
from permafrost.storage.base import LockState

TIERS = ("standard", "compliance", layout.BASE_TIER, "wal", layout.KEEP_TIER)


@dataclass
class TierLocks:
    """One tier's objects by their locks."""

    tier: str
    objects: int = 0
    unlocked: int = 0  # no retention at all
    held: int = 0  # under a legal hold (pinned)
    blocked: int = 0  # a delete today would be refused (locked or held)
    modes: set[str] = field(default_factory=set)
    oldest: datetime | None = None  # the earliest retain-until
    newest: datetime | None = None  # the latest retain-until

    def add(self, state: LockState, now: datetime) -> None:
        self.objects += 1
        self.held += state.legal_hold
        self.blocked += state.blocks(now)
        if state.retain_until is None:
            self.unlocked += 1
            return
        self.modes.add(state.mode or "?")
        until = state.retain_until
        self.oldest = until if self.oldest is None else min(self.oldest, until)
        self.newest = until if self.newest is None else max(self.newest, until)

    def delete_today(self) -> str:
        """What a delete of this tier's objects would do now, in words."""
        if not self.objects:
            return "nothing to delete"
        if self.blocked == self.objects:
            return f"refused for all {self.objects}"
        if not self.blocked:
            return f"allowed for all {self.objects}"
        return f"refused for {self.blocked}, allowed for {self.objects - self.blocked}"

    def to_json(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "objects": self.objects,
            "without_lock": self.unlocked,
            "legal_hold": self.held,
            "delete_refused_today": self.blocked,
            "modes": sorted(self.modes),
            "oldest_retain_until": self.oldest.isoformat() if self.oldest else None,
            "newest_retain_until": self.newest.isoformat() if self.newest else None,
            "delete_today": self.delete_today(),
        }


def status(storage: Storage, prefix: str, now: datetime) -> list[TierLocks]:
    """Every object's lock, per tier (and the repository config)."""
    lockable = holds.require_lock(storage, "`permafrost lock status`")
    out = []
    with ThreadPoolExecutor(8, thread_name_prefix="lock-status") as pool:
        for tier, keys in _keys(storage, prefix):
            tally = TierLocks(tier)
            for state in pool.map(lockable.lock_state, keys):
                tally.add(state, now)
            out.append(tally)
    return out


def _keys(storage: Storage, prefix: str) -> Iterator[tuple[str, list[str]]]:
    for tier in TIERS:
        folder = layout.join(prefix, tier) + "/"
        keys = [i.key for i in storage.list(folder) if not i.key.endswith(layout.PIN_OBJECT)]
        yield tier, keys
    config = layout.repository_config_key(prefix)
    yield layout.LOCK_REPOSITORY, [i.key for i in storage.list(config) if i.key == config]
