"""Pinning: a backup moved into keep/, where neither retention nor lifecycle expiry reaches it.

A base backup is pinned with its chain: an incremental restores only with its parent, and that
with its own, back to the full, so `pin_chain` pins every ancestor too, and `unpin_chain`
unpins every pinned member of the chain. Lookups are by id in every tier, so a chain split
between keep/ and base/ (its pinned part and the incrementals taken after) still restores.

A move is a server-side copy of every object of the backup into keep/{database}/{id}/, the
manifest last (the copy exists from then on), a pin.json beside it saying who, when, why and
from which tier, then the deletion of the originals, the manifest first. At every moment at
least one complete copy exists. Unpinning is the same move back to the tier it came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from permafrost import layout
from permafrost.errors import BackupNotFound, NotFound, UsageError
from permafrost.repo.config import Repository
from permafrost.retention import chains, holds
from permafrost.retention.plan import Pin
from permafrost.storage import Storage


@dataclass(frozen=True)
class Location:
    tier: str
    database: str
    backup_id: str

    def folder(self, prefix: str) -> str:
        return layout.backup_folder(prefix, self.tier, self.database, self.backup_id)


def find(storage: Storage, prefix: str, backup_id: str) -> Location:
    """Where a backup's manifest is, in any tier (the bucket decides, not the catalog)."""
    layout.check_backup_id(backup_id)
    for tier in layout.BACKUP_TIERS:
        for info in storage.list(layout.tier_folder(prefix, tier)):
            parsed = layout.parse_backup_key(prefix, info.key)
            if (
                parsed is not None
                and parsed.backup_id == backup_id
                and parsed.name == layout.MANIFEST_OBJECT
            ):
                return Location(parsed.tier, parsed.database, backup_id)
    raise BackupNotFound(f"no backup {backup_id} in the bucket: run `permafrost list` to see them")


def read_pin(storage: Storage, prefix: str, where: Location) -> Pin | None:
    try:
        raw = storage.get(where.folder(prefix) + layout.PIN_OBJECT)
    except NotFound:
        return None
    try:
        return Pin.parse(raw)
    except ValueError:
        return None


def move(
    storage: Storage,
    prefix: str,
    source: Location,
    tier: str,
    pin: Pin | None,
    say: Callable[[str], None] = lambda _: None,
) -> Location:
    """Copy a backup's objects into `tier`, then delete the originals; returns where it is now."""
    target = copy_over(storage, prefix, source, tier, pin, say)
    remove(storage, prefix, source)
    return target


def copy_over(
    storage: Storage,
    prefix: str,
    source: Location,
    tier: str,
    pin: Pin | None,
    say: Callable[[str], None] = lambda _: None,
) -> Location:
    """Copy a backup's objects into `tier`, its manifest last (the copy exists from then on)."""
    target = Location(tier, source.database, source.backup_id)
    source_folder, target_folder = source.folder(prefix), target.folder(prefix)
    names = [info.key[len(source_folder) :] for info in storage.list(source_folder)]
    if layout.MANIFEST_OBJECT not in names:
        raise BackupNotFound(f"backup {source.backup_id} has no manifest in {source_folder}")
    payload = [n for n in names if n not in (layout.MANIFEST_OBJECT, layout.PIN_OBJECT)]
    for name in payload:
        say(f"copying {source_folder}{name} to {target_folder}{name}")
        storage.copy(source_folder + name, target_folder + name)
    if pin is not None:
        storage.put(target_folder + layout.PIN_OBJECT, pin.to_json())
    storage.copy(source_folder + layout.MANIFEST_OBJECT, target_folder + layout.MANIFEST_OBJECT)
    return target


def remove(storage: Storage, prefix: str, where: Location) -> None:
    """Delete a backup's objects, its manifest first (from then on this copy does not exist)."""
    folder = where.folder(prefix)
    names = [info.key[len(folder) :] for info in storage.list(folder)]
    names.sort(key=lambda n: n != layout.MANIFEST_OBJECT)
    for name in names:
        storage.delete(folder + name)


def pin_backup(
    storage: Storage,
    prefix: str,
    backup_id: str,
    by: str,
    reason: str,
    say: Callable[[str], None] = lambda _: None,
    wal: Callable[[Location], list[str]] = lambda _: [],
) -> tuple[Location, bool]:
    """Pin a backup; (its location, whether anything changed). Under OBJECT_LOCK a legal hold
    on its objects and on `wal(location)` (a base backup's WAL), where it is."""
    where = find(storage, prefix, backup_id)
    pin = Pin(datetime.now(UTC).isoformat(timespec="seconds"), by, reason, where.tier)
    if holds.locking(storage) is not None and where.tier != layout.KEEP_TIER:
        current = holds.read_pin(storage, where.folder(prefix))
        if current is not None and not current.hold:
            return where, False
        holds.hold(storage, where.folder(prefix), pin, wal(where), say)
        return where, True
    if where.tier == layout.KEEP_TIER:
        current = read_pin(storage, prefix, where)
        if current is not None and not current.hold:
            return where, False
        # A retention hold becomes an operator's pin; it remembers its tier.
        from_tier = current.from_tier if current else "standard"
        pin = Pin(pin.pinned_at, by, reason, from_tier)
        storage.put(where.folder(prefix) + layout.PIN_OBJECT, pin.to_json())
        return where, True
    return move(storage, prefix, where, layout.KEEP_TIER, pin, say), True


def unpin_backup(
    storage: Storage,
    prefix: str,
    backup_id: str,
    say: Callable[[str], None] = lambda _: None,
    wal: Callable[[Location], list[str]] = lambda _: [],
) -> Location:
    where = find(storage, prefix, backup_id)
    if where.tier != layout.KEEP_TIER and pinned_in_place(storage, prefix, where):
        holds.release(storage, where.folder(prefix), wal(where), say)
        return where
    if where.tier != layout.KEEP_TIER:
        raise UsageError(f"backup {backup_id} is not pinned (it is in the {where.tier} tier)")
    pin = read_pin(storage, prefix, where)
    tier = pin.from_tier if pin is not None else "standard"
    if tier not in layout.BACKUP_TIERS or tier == layout.KEEP_TIER:
        tier = "standard"
    return move(storage, prefix, where, tier, None, say)


def pinned_in_place(storage: Storage, prefix: str, where: Location) -> bool:
    """A pin by legal hold: an operator's pin.json beside the backup in its own tier."""
    if where.tier == layout.KEEP_TIER:
        return False
    pin = holds.read_pin(storage, where.folder(prefix))
    return pin is not None and not pin.hold


def pinned(storage: Storage, prefix: str, where: Location) -> bool:
    """Pinned either way: in keep/ (legacy), or by a legal hold where it is."""
    return where.tier == layout.KEEP_TIER or pinned_in_place(storage, prefix, where)


@dataclass(frozen=True)
class Pinned:
    """One backup a pin or unpin moved (or found already where it should be)."""

    location: Location
    changed: bool
    chain_of: str | None = None  # the backup asked for, when this one was moved for its chain


Say = Callable[[str], None]
Moved = Callable[[Pinned], None]  # told of each backup as soon as it has moved (audit, catalog)


def pin_chain(
    repo: Repository,
    backup_id: str,
    by: str,
    reason: str,
    say: Say = lambda _: None,
    moved: Moved = lambda _: None,
) -> list[Pinned]:
    """Pin a backup and, for a base backup, every ancestor it restores from: oldest first."""
    where = find(repo.storage, repo.prefix, backup_id)
    done = []
    for ancestor in _ancestors_to_pin(repo, where):
        because = f"{reason}; " if reason else ""
        because += f"an ancestor of pinned {backup_id}"
        there, changed = pin_backup(
            repo.storage, repo.prefix, ancestor, by, because, say, _wal_of(repo)
        )
        done.append(Pinned(there, changed, chain_of=backup_id))
        moved(done[-1])
    there, changed = pin_backup(
        repo.storage, repo.prefix, backup_id, by, reason, say, _wal_of(repo)
    )
    done.append(Pinned(there, changed))
    moved(done[-1])
    return done


def _ancestors_to_pin(repo: Repository, where: Location) -> list[str]:
    if not _is_base(repo, where):
        return []
    parents = chains.parents_of(chains.members(repo, where.database))
    gone = chains.missing_parent(where.backup_id, parents)
    if gone is not None:
        raise UsageError(
            f"backup {where.backup_id} cannot be restored: its ancestor {gone} is gone from "
            "the bucket, so pinning it would keep nothing usable; nothing was pinned"
        )
    return list(reversed(chains.ancestors(where.backup_id, parents)))


def unpin_chain(
    repo: Repository, backup_id: str, say: Say = lambda _: None, moved: Moved = lambda _: None
) -> list[Pinned]:
    """Unpin a backup and, for a base backup, every pinned member of its chain: newest first,
    so that an interruption leaves the ancestors of what is still pinned pinned."""
    where = find(repo.storage, repo.prefix, backup_id)
    members = [backup_id]
    if _is_base(repo, where):
        found = chains.members(repo, where.database)
        chain = chains.chain(backup_id, chains.parents_of(found))
        members = sorted(
            (m for m in chain if pinned(repo.storage, repo.prefix, _at(found[m]))), reverse=True
        )
        if not members:
            raise UsageError(f"backup {backup_id} is not pinned, nor is any of its chain")
    done = []
    for member in members:
        there = unpin_backup(repo.storage, repo.prefix, member, say, _wal_of(repo))
        done.append(Pinned(there, True, chain_of=None if member == backup_id else backup_id))
        moved(done[-1])
    return done


def _is_base(repo: Repository, where: Location) -> bool:
    if where.tier == layout.BASE_TIER:
        return True
    pin = read_pin(repo.storage, repo.prefix, where) if where.tier == layout.KEEP_TIER else None
    return pin is not None and pin.from_tier == layout.BASE_TIER


def _at(member: chains.Member) -> Location:
    return Location(member.tier, member.cluster, member.id)


def _wal_of(repo: Repository) -> Callable[[Location], list[str]]:
    """Under OBJECT_LOCK, the WAL a base backup's hold covers: its start to its end."""

    def wal(where: Location) -> list[str]:
        if holds.locking(repo.storage) is None or where.tier != layout.BASE_TIER:
            return []
        return holds.wal_keys(repo, where.database, where.backup_id)

    return wal
