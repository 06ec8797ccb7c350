"""`permafrost lock migrate`: a repository's legacy keep/ pins moved to pins by legal hold.

Before OBJECT_LOCK, a pin (or a retention hold) was a copy into keep/{database}/{id}/ and the
deletion of the original. Under a lock that cannot be done (the original may not be deleted), and
need not be: a legal hold keeps an object where it is (`holds`). Each backup in keep/ is copied
back to the tier its pin.json names (the copy is written locked, like any write), put under a
legal hold when an operator pinned it (a retention hold needs none: under a lock retention keeps
it in place), and only then is the keep/ copy deleted. Run again, it finds nothing left to do;
interrupted, it resumes: a tier copy already there is not copied again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from permafrost import layout
from permafrost.errors import NotFound, StorageError
from permafrost.repo.config import Repository
from permafrost.retention import holds, pins

Say = Callable[[str], None]


@dataclass(frozen=True)
class Migrated:
    backup_id: str
    database: str
    tier: str  # the tier it is in now
    held: bool  # under a legal hold (an operator's pin), or kept by retention in place
    error: str | None = None  # the keep/ copy could not be deleted: left there, said why


def legacy_pins(repo: Repository) -> Iterator[pins.Location]:
    """Every backup in keep/ (a folder with a manifest)."""
    for info in repo.storage.list(layout.tier_folder(repo.prefix, layout.KEEP_TIER)):
        parsed = layout.parse_backup_key(repo.prefix, info.key)
        if parsed is not None and parsed.name == layout.MANIFEST_OBJECT:
            yield pins.Location(parsed.tier, parsed.database, parsed.backup_id)


def migrate(repo: Repository, say: Say = lambda _: None) -> list[Migrated]:
    """Move every keep/ backup to its tier under a hold; oldest first, so a chain's full is
    held before the incrementals that depend on it."""
    holds.require_lock(repo.storage, "`permafrost lock migrate`")
    found = sorted(legacy_pins(repo), key=lambda where: where.backup_id)
    return [migrate_one(repo, where, say) for where in found]


def migrate_one(repo: Repository, source: pins.Location, say: Say) -> Migrated:
    storage, prefix = repo.storage, repo.prefix
    pin = pins.read_pin(storage, prefix, source)
    tier = pin.from_tier if pin is not None else "standard"
    if tier not in layout.BACKUP_TIERS or tier == layout.KEEP_TIER:
        tier = "standard"
    target = pins.Location(tier, source.database, source.backup_id)
    if not _has_manifest(repo, target):
        pins.copy_over(storage, prefix, source, tier, None, say)
    operator = pin is None or not pin.hold
    if operator and not pins.pinned_in_place(storage, prefix, target):
        kept = pins.Pin(
            pin.pinned_at if pin else "",
            pin.by if pin else "unknown",
            pin.reason if pin else "",
            tier,
        )
        wal = holds.wal_keys(repo, target.database, target.backup_id) if tier == "base" else []
        holds.hold(storage, target.folder(prefix), kept, wal, say)
    try:
        pins.remove(storage, prefix, source)
    except StorageError as exc:
        return Migrated(source.backup_id, source.database, tier, operator, str(exc))
    say(f"moved {source.backup_id} of {source.database} from keep/ to {tier}/")
    return Migrated(source.backup_id, source.database, tier, operator)


def _has_manifest(repo: Repository, where: pins.Location) -> bool:
    try:
        repo.storage.head(where.folder(repo.prefix) + layout.MANIFEST_OBJECT)
    except NotFound:
        return False
    return True
