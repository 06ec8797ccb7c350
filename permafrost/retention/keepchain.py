"""Retention's chain rules for base backups: count chains, keep them whole, leave broken ones.

- **min-keep counts chains**: "keep N base backups" means the newest N chains (a full and its
  incrementals), each kept whole; with fulls only, a chain is one full, as before chains. A
  broken chain takes no place, nor is the PITR window's start recovered from one.
- **chain**: a member is kept if and only if it or something depending on it is kept; the
  reason names the newest kept dependant. A linear chain is thus kept whole while its newest
  member is kept, and goes whole once nothing keeps it.
- **broken chain**: members whose parent is gone from the bucket cannot be restored, but are not
  silently deleted: they are kept with a reason naming `permafrost delete ROOT --apply`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from permafrost.retention import chains


class Item(Protocol):
    """What the chain rules read of a planned backup (permafrost.retention.plan.Item)."""

    @property
    def id(self) -> str: ...
    @property
    def parent_id(self) -> str | None: ...
    @property
    def pinned(self) -> bool: ...


T = TypeVar("T", bound=Item)
BROKEN = "broken chain"
CHAIN = "chain:"


def restorable(group: Sequence[T]) -> list[T]:
    """The members of whole chains: a broken chain's members cannot be restored."""
    parents = _parents(group)
    return [item for item in group if chains.missing_parent(item.id, parents) is None]


def newest_chains(group: Sequence[Item], count: int, reasons: dict[str, list[str]]) -> None:
    """The newest member of each of the newest `count` whole chains (group: newest first)."""
    parents = _parents(group)
    seen: list[str] = []
    for item in restorable(group):
        start = chains.root(item.id, parents)
        if start in seen:
            continue
        seen.append(start)
        if len(seen) > count:
            return
        reasons[item.id].append(f"min-keep: in one of the newest {count} chains")


def keep_whole(group: Sequence[Item], reasons: dict[str, list[str]]) -> None:
    """Ancestors of kept backups are kept; broken chains are left alone (group: newest first)."""
    parents = _parents(group)
    for item in group:
        gone = chains.missing_parent(item.id, parents)
        if gone is not None:
            start = chains.root(item.id, parents)
            reasons[item.id].append(
                f"{BROKEN}: its ancestor {gone} is gone from the bucket, so it cannot be "
                f"restored; left for you to delete: `permafrost delete {start} --apply` "
                "removes it with everything that depends on it"
            )
    kept_for: dict[str, str] = {}  # ancestor id -> the newest kept backup depending on it
    for item in group:  # newest first: a child is settled before its parent
        if not (reasons[item.id] or item.pinned):
            continue
        for ancestor in chains.ancestors(item.id, parents):
            if ancestor in kept_for:
                break  # its ancestors were settled by a newer dependant already
            kept_for[ancestor] = item.id
    for ancestor, dependant in kept_for.items():
        reasons[ancestor].append(f"{CHAIN} {dependant} depends on it")


def is_broken(reasons: list[str]) -> bool:
    return any(r.startswith(BROKEN) for r in reasons)


def _parents(group: Sequence[Item]) -> dict[str, str | None]:
    return {item.id: item.parent_id for item in group}
