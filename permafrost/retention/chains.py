"""Chains: a full base backup and the incrementals that depend on it (PostgreSQL 17+).

An incremental base backup restores only combined with its parent, and that parent with its
own, back to the full that starts the chain (`physical.parent_id` and `physical.chain_full_id`
in the manifest; a manifest without them is a full). So retention, delete, pins and lifecycle
treat the members of a chain together: an ancestor stays while anything depends on it, a
deletion takes the dependants with it, a pin holds every ancestor.

The functions here are pure, over `parents`: each base backup's id mapped to its direct
parent's id (None for a full), for the base backups of one cluster in the bucket. A parent id
that is not a key is a parent gone from the bucket: the chain below it is broken.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from permafrost.repo.config import Repository
from permafrost.wal import archive as walarchive

Parents = Mapping[str, "str | None"]


@dataclass(frozen=True)
class Member:
    """One base backup of a cluster, where it is, and what it depends on."""

    id: str
    cluster: str
    tier: str
    parent_id: str | None


def members(repo: Repository, cluster: str) -> dict[str, Member]:
    """The base backups of a cluster in the bucket (base/ and keep/) by id, from manifests."""
    found = {}
    for base in walarchive.base_backups(repo, cluster):
        found[base.id] = Member(base.id, cluster, base.manifest.tier, base.parent_id)
    return found


def parents_of(found: Mapping[str, Member]) -> dict[str, str | None]:
    return {m.id: m.parent_id for m in found.values()}


def ancestors(backup_id: str, parents: Parents) -> list[str]:
    """Its parent, that one's parent, ... up to the full (or a gone one): nearest first."""
    out: list[str] = []
    current = parents.get(backup_id)
    while current is not None and current in parents and current not in out:
        out.append(current)
        current = parents[current]
    return out


def children(parents: Parents) -> dict[str, list[str]]:
    """Each backup's direct dependants, oldest first (ids sort by their start time)."""
    out: dict[str, list[str]] = {}
    for child, parent in sorted(parents.items()):
        if parent is not None:
            out.setdefault(parent, []).append(child)
    return out


def descendants(backup_id: str, parents: Parents) -> list[str]:
    """Everything that depends on it, directly or not: newest first, the order to delete in."""
    below = children(parents)
    out: list[str] = []
    todo = list(below.get(backup_id, []))
    while todo:
        current = todo.pop()
        if current not in out:
            out.append(current)
            todo.extend(below.get(current, []))
    return sorted(out, reverse=True)


def root(backup_id: str, parents: Parents) -> str:
    """The oldest member of its chain still in the bucket: the full, or where a break is."""
    line = ancestors(backup_id, parents)
    return line[-1] if line else backup_id


def chain(backup_id: str, parents: Parents) -> list[str]:
    """Every member of its chain in the bucket (its root and its dependants), oldest first."""
    start = root(backup_id, parents)
    return sorted([start, *descendants(start, parents)])


def missing_parent(backup_id: str, parents: Parents) -> str | None:
    """The id of the ancestor gone from the bucket that breaks its chain, or None if whole."""
    start = root(backup_id, parents)
    parent = parents.get(start)
    return parent if parent is not None and parent not in parents else None
