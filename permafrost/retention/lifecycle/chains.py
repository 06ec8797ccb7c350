"""Lifecycle and chains: the expiry of base/ must outlive every chain retention keeps.

An incremental base backup restores only with its parent, back to the full that starts its
chain. Lifecycle expires by age, and a parent is always older than its children, so the full
is the first to go: what matters is the full's age when retention lets go of the chain's newest
member. Retention keeps a base backup up to PITR_WINDOW_DAYS (the window's start is recovered
from the newest one before it), and the full is older than that member by the chain's span:
up to the interval between fulls (BASE_BACKUP_SCHEDULE), longer when a full failed and the
incrementals went on. So base/ must keep objects PITR_WINDOW_DAYS plus the longest span, taking
the longer of the schedule's interval and the longest chain now in base/ (a chain whose full is
pinned in keep/ never expires there and is not counted).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from permafrost import layout
from permafrost.config.schedule import base_backup_interval
from permafrost.config.settings import Settings
from permafrost.errors import PermafrostError
from permafrost.repo.manifest import parse
from permafrost.retention.lifecycle.keeps import Requirement, Verdict
from permafrost.retention.lifecycle.rules import folders
from permafrost.storage.base import ObjectInfo

CHAIN = "chain"  # the Requirement's name: base/, for the chains in it


@runtime_checkable
class Listable(Protocol):
    """A bucket whose objects can be listed and read (every storage; a test's fake may not)."""

    def list(self, prefix: str) -> Iterable[ObjectInfo]: ...
    def get(self, key: str) -> bytes: ...


@dataclass(frozen=True)
class Span:
    """One chain in base/: its full, how many incrementals, the time from its full to its newest."""

    full_id: str
    incrementals: int
    span: timedelta

    @property
    def days(self) -> float:
        return self.span.total_seconds() / 86400


def spans(storage: object, prefix: str) -> list[Span]:
    """The chains whose full is in base/, longest first (their manifests read, not verified)."""
    if not isinstance(storage, Listable):
        return []
    fulls: set[str] = set()
    members: dict[str, list[str]] = {}
    for info in storage.list(layout.tier_folder(prefix, layout.BASE_TIER)):
        parsed = layout.parse_backup_key(prefix, info.key)
        if parsed is None or parsed.name != layout.MANIFEST_OBJECT:
            continue
        try:
            manifest = parse(storage.get(info.key), None, info.key)
        except PermafrostError:
            continue  # a damaged manifest is `verify`'s to report
        if manifest.incremental and manifest.chain_full_id:
            members.setdefault(manifest.chain_full_id, []).append(manifest.id)
        else:
            fulls.add(manifest.id)
    found = [
        Span(full, len(ids), layout.backup_time(max(ids)) - layout.backup_time(full))
        for full, ids in members.items()
        if full in fulls
    ]
    return sorted(found, key=lambda s: s.span, reverse=True)


def chain_requirement(settings: Settings, now: datetime, found: list[Span], out: Verdict) -> None:
    """With chains in base/, what base/ must keep so that none is cut; a problem if the
    settings' own expiry of base/ (WAL_RETENTION_DAYS) is shorter."""
    if not found:
        return
    r = settings.retention
    interval = base_backup_interval(settings, now) or timedelta(0)
    longest = found[0]
    span = max(interval, longest.span)
    need = math.ceil((span + timedelta(days=r.pitr_window_days)).total_seconds() / 86400)
    spanned = (
        f"the longest chain in base/ ({longest.full_id} and {longest.incrementals} "
        f"incrementals over {longest.days:.1f} days)"
        if longest.span >= interval
        else f"the interval between fulls ({interval.total_seconds() / 86400:.0f} days, "
        "BASE_BACKUP_SCHEDULE)"
    )
    why = (
        f"a chain's full must outlive its incrementals: retention keeps a chain's newest member "
        f"up to PITR_WINDOW_DAYS={r.pitr_window_days} days, and its full is older than that "
        f"member by up to {spanned}, so base/ must keep objects {need} days"
    )
    folder = folders(settings.storage.prefix)[layout.BASE_TIER]
    out.requirements.append(Requirement(CHAIN, folder, need, why))
    if r.wal_days < need:
        out.problems.append(
            f"WAL_RETENTION_DAYS={r.wal_days} (the expiry of base/) would cut a chain: {why}; "
            f"set WAL_RETENTION_DAYS to {need} or more"
        )


def cut_problem(name: str, scope: str, days: int, req: Requirement) -> str:
    return (
        f"rule {name} expires {scope} after {days} days: it would cut a chain in the base tier "
        f"({req.folder}), expiring a full before the incrementals that depend on it; {req.why}"
    )
