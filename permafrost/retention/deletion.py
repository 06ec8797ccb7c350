"""Deleting a backup by hand (`permafrost delete`, `DELETE /backup/ID`), with its dependants.

An incremental base backup cannot be restored without its parent, so deleting a base backup
deletes everything that depends on it too: the dependants first, newest first, so that a
failure half-way leaves a shorter chain, never a broken one. It is refused when a pin holds any
member of the chain (`permafrost unpin` first). Each backup deleted gets its own audit row,
written before any of its objects goes; its manifest goes first (from then on it does not exist).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from permafrost import layout
from permafrost.errors import UsageError
from permafrost.repo.config import Repository
from permafrost.retention import chains, locks
from permafrost.storage import Storage

if TYPE_CHECKING:
    from permafrost.catalog.store import Catalog

Say = Callable[[str], None]


@dataclass(frozen=True)
class Doomed:
    """One backup a deletion removes: the one asked for, or one depending on it."""

    id: str
    database: str
    tier: str
    dependant_of: str | None = None  # the backup asked for, when this one depends on it

    def folder(self, prefix: str) -> str:
        return layout.backup_folder(prefix, self.tier, self.database, self.id)


def plan(
    repository: Callable[[], Repository], backup_id: str, database: str, tier: str, kind: str
) -> list[Doomed]:
    """What deleting `backup_id` removes: its dependants newest first, then itself. The
    repository is opened (its key needed) only for a base backup, to read its chain.

    Refused (UsageError) when a pin holds any member of its chain."""
    asked = Doomed(backup_id, database, tier)
    if kind != "base":
        return [asked]
    found = chains.members(repository(), database)
    parents = chains.parents_of(found)
    if backup_id not in parents:
        return [asked]  # its manifest does not read: no chain is known through it
    pinned = [m for m in chains.chain(backup_id, parents) if found[m].tier == layout.KEEP_TIER]
    if pinned:
        raise UsageError(
            f"backup {backup_id} is in a chain with pinned backups ({', '.join(pinned)}): "
            f"`permafrost unpin {pinned[0]}` first (it unpins the chain); nothing was deleted"
        )
    below = chains.descendants(backup_id, parents)
    dependants = [Doomed(m, database, found[m].tier, backup_id) for m in below]
    return [*dependants, asked]


def describe(doomed: list[Doomed]) -> list[str]:
    """One line per backup, for a dry run's listing."""
    asked = doomed[-1]
    lines = [f"backup {asked.id} of {asked.database} ({asked.tier}/)"]
    if len(doomed) > 1:
        lines.append(
            f"and {backups(len(doomed) - 1)} that depend on it (incrementals that cannot be "
            "restored without it), newest first:"
        )
        lines += [f"  {d.id} ({d.tier}/)" for d in doomed[:-1]]
    return lines


def carry_out(
    storage: Storage,
    prefix: str,
    catalog: Catalog,
    who: str,
    doomed: list[Doomed],
    extra: dict[str, object] | None = None,
    say: Say = lambda _: None,
) -> list[dict[str, object]]:
    """Delete each backup in order, audit-logged; what was deleted, one entry per backup.
    Under OBJECT_LOCK, one object still locked or held refuses it all (ObjectLocked) first."""
    done = []
    listed = {d.id: _keys(storage, d.folder(prefix)) for d in doomed}
    locks.refuse_locked(storage, (key for keys in listed.values() for key in keys))
    for d in doomed:
        keys = listed[d.id]
        details: dict[str, object] = {"database": d.database, "tier": d.tier, "objects": keys}
        if d.dependant_of is not None:
            details["dependant_of"] = d.dependant_of
        catalog.audit(who, "delete", d.id, {**(extra or {}), **details})
        for key in keys:  # the manifest first: from that moment the backup no longer exists
            storage.delete(key)
        catalog.mark_deleted(d.id)
        say(f"deleted backup {d.id} of {d.database} ({len(keys)} objects)")
        done.append({"id": d.id, **details})
    return done


def _keys(storage: Storage, folder: str) -> list[str]:
    """A backup's objects, its manifest first."""
    return sorted(
        (info.key for info in storage.list(folder)),
        key=lambda k: not k.endswith(layout.MANIFEST_OBJECT),
    )


def backups(count: int) -> str:
    """'the backup' or 'the N backups', for the messages about dependants and ancestors."""
    return "the backup" if count == 1 else f"the {count} backups"
