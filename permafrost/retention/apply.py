"""Carrying out retention on the bucket: the inventory, the plan, the deletions, the accounting.

One listing of the bucket is the inventory: backups (folders with a manifest), orphans (folders
without one: a backup that died before its commit point), archived WAL per cluster, stale
multipart uploads, and the bytes and objects per tier and database. `run` plans from it
(`permafrost.retention.plan.plan`) and, with apply, carries the plan out under a lock, audit-logging
every deletion and moving the catalog along. Without apply it changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from permafrost import layout
from permafrost.audit import actor
from permafrost.config.fleet import retention_for
from permafrost.config.settings import Settings
from permafrost.errors import CatalogUnavailable, ObjectLocked, StorageError
from permafrost.retention import keepchain, locks, pins
from permafrost.retention.plan import ORPHAN_AGE, Action, Decision, Item, Pin, plan
from permafrost.storage import Storage
from permafrost.storage.base import ObjectInfo, PendingUpload
from permafrost.wal import archive as walarchive
from permafrost.wal import names as walnames

if TYPE_CHECKING:
    from permafrost.catalog.store import Catalog
    from permafrost.repo.config import Repository

log = logging.getLogger("permafrost")
UPLOAD_AGE = timedelta(days=2)  # as the lifecycle rule's AbortIncompleteMultipartUpload
RETENTION_LOCK = 0x72657465  # 'rete': one retention run, pin or unpin at a time
Say = Callable[[str], None]


@dataclass
class Orphan:
    folder: str
    objects: list[ObjectInfo]

    @property
    def newest(self) -> datetime:
        return max(o.modified for o in self.objects)


@dataclass
class WalPlan:
    cluster: str
    files: int
    delete: list[str]  # object keys
    kept_bases: list[str]
    bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        names = [k.rsplit("/", 1)[-1].removesuffix(".pfe") for k in self.delete]
        return {
            "cluster": self.cluster,
            "files": self.files,
            "delete": len(self.delete),
            "first": min(names) if names else None,
            "last": max(names) if names else None,
            "bytes": self.bytes,
            "kept_base_backups": self.kept_bases,
        }


@dataclass
class Inventory:
    items: list[Item] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    wal: dict[str, list[ObjectInfo]] = field(default_factory=dict)
    uploads: list[PendingUpload] = field(default_factory=list)
    usage: dict[tuple[str, str], list[int]] = field(default_factory=dict)


@dataclass
class Outcome:
    decisions: list[Decision]
    orphans: list[Orphan]
    wal: list[WalPlan]
    uploads: list[PendingUpload]
    usage: dict[tuple[str, str], list[int]]
    applied: bool = False
    errors: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)  # deletions the object lock defers

    def counts(self) -> dict[str, int]:
        tally: dict[str, int] = defaultdict(int)
        for d in self.decisions:
            tally[d.action.value] += 1
        return dict(tally)

    def to_json(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "backups": [d.to_json() for d in self.decisions],
            "orphans": [
                {
                    "folder": o.folder,
                    "objects": len(o.objects),
                    "bytes": sum(i.size for i in o.objects),
                    "newest": o.newest.isoformat(),
                }
                for o in self.orphans
            ],
            "wal": [w.to_json() for w in self.wal],
            "stale_uploads": [
                {"key": u.key, "initiated": u.initiated.isoformat()} for u in self.uploads
            ],
            "usage": [
                {"tier": tier, "database": db, "objects": n, "bytes": size}
                for (tier, db), (n, size) in sorted(self.usage.items())
            ],
            "counts": self.counts(),
            "errors": self.errors,
            "locked": self.locked,
        }


def inventory(
    storage: Storage, prefix: str, verified: set[str], safety: frozenset[str] = frozenset()
) -> Inventory:
    """Everything in the bucket that retention decides about, from one listing per tier."""
    inv = Inventory()
    folders: dict[tuple[str, str, str], list[ObjectInfo]] = defaultdict(list)
    for tier in layout.BACKUP_TIERS:
        for info in storage.list(layout.tier_folder(prefix, tier)):
            parsed = layout.parse_backup_key(prefix, info.key)
            if parsed is None:
                _count(inv, tier, "-", info)
                continue
            folders[(parsed.tier, parsed.database, parsed.backup_id)].append(info)
            _count(inv, parsed.tier, parsed.database, info)
    for (tier, database, backup_id), objects in sorted(folders.items()):
        names = {o.key.rsplit("/", 1)[-1] for o in objects}
        folder = layout.backup_folder(prefix, tier, database, backup_id)
        if layout.MANIFEST_OBJECT not in names:
            inv.orphans.append(Orphan(folder, objects))
            continue
        pin = None  # in keep/ (a pin by copy), or beside a backup held in place (OBJECT_LOCK)
        if layout.PIN_OBJECT in names:
            pin = pins.read_pin(storage, prefix, pins.Location(tier, database, backup_id))
        origin = pin.from_tier if pin is not None else tier
        inv.items.append(
            Item(
                id=backup_id,
                database=database,
                tier=tier,
                kind="base" if origin == layout.BASE_TIER else "logical",
                started_at=layout.backup_time(backup_id),
                verified=backup_id in verified,
                pin=pin,
                objects=objects,
                safety=backup_id in safety,
            )
        )
    wal_root = layout.join(prefix, "wal") + "/"
    for info in storage.list(wal_root):
        cluster = info.key[len(wal_root) :].split("/", 1)[0]
        inv.wal.setdefault(cluster, []).append(info)
        _count(inv, "wal", cluster, info)
    root = layout.join(prefix) + "/" if prefix.strip("/") else ""
    inv.uploads = list(storage.list_multipart(root))
    return inv


def _count(inv: Inventory, tier: str, database: str, info: ObjectInfo) -> None:
    entry = inv.usage.setdefault((tier, database), [0, 0])
    entry[0] += 1
    entry[1] += info.size


def run(
    settings: Settings,
    storage: Storage,
    repo: Repository,
    catalog: Catalog | None,
    now: datetime,
    *,
    apply: bool,
    database: str | None = None,
    say: Say = lambda _: None,
    amend: Callable[[list[Decision]], list[Decision]] | None = None,
) -> Outcome:
    """Plan retention and, with apply, carry it out (the catalog is required then). amend:
    rules of a copy's own applied to the plan before anything is carried out (copies.py)."""
    if apply and catalog is None:
        raise AssertionError("applying retention needs the catalog (deletions are audit-logged)")
    if catalog is not None and apply:
        wait_for_lock(catalog, say)
    try:
        outcome = _plan(settings, storage, repo, catalog, now, database)
        if amend is not None:
            outcome.decisions = amend(outcome.decisions)
        if apply:
            assert catalog is not None
            _apply(settings, storage, catalog, outcome, say)
            outcome.applied = True
        return outcome
    finally:
        if catalog is not None and apply:
            catalog.unlock(RETENTION_LOCK, "bucket")


def wait_for_lock(catalog: Catalog, say: Say) -> None:
    waited = False
    while not catalog.try_lock(RETENTION_LOCK, "bucket"):
        if not waited:
            say("another retention run, pin or unpin is working on the bucket; waiting for it")
            waited = True
        time.sleep(1)


def _plan(
    settings: Settings,
    storage: Storage,
    repo: Repository,
    catalog: Catalog | None,
    now: datetime,
    database: str | None,
) -> Outcome:
    prefix = settings.storage.prefix
    verified = catalog.verified_ids() if catalog is not None else set()
    # Safety backups are told apart by the catalog (their manifests' tag, catalogued): without
    # it they are planned as the database's own backups, which keeps more, never less.
    safety = catalog.safety_ids() if catalog is not None else frozenset()
    inv = inventory(storage, prefix, verified, safety)
    items = [i for i in inv.items if database is None or i.database == database]
    _base_finish_times(repo, items)
    decisions = plan(
        items, settings.retention, now, settings.schedules.timezone, retention_for(settings)
    )
    locks.hold_in_place(storage, decisions)
    orphans = [
        o
        for o in inv.orphans
        if now - o.newest >= ORPHAN_AGE and (database is None or f"/{database}/" in o.folder)
    ]
    uploads = [u for u in inv.uploads if now - u.initiated >= UPLOAD_AGE and database is None]
    wal_plans = []
    for cluster, objects in sorted(inv.wal.items()):
        if database is not None and cluster != database:
            continue
        # A broken chain is kept for its operator to delete, but cannot be restored: the WAL
        # since its start is not kept for it.
        kept = {
            d.item.id
            for d in decisions
            if d.item.kind == "base" and d.keep and not keepchain.is_broken(d.reasons)
        }
        if database is not None:  # a filtered plan does not see every base backup
            kept |= {i.id for i in inv.items if i.kind == "base" and i.database == cluster}
        pinned = {d.item.id for d in decisions if d.item.kind == "base" and d.item.pinned}
        wal_plans.append(_wal_plan(repo, cluster, objects, kept, pinned))
    return Outcome(decisions, orphans, wal_plans, uploads, inv.usage)


def _base_finish_times(repo: Repository, items: list[Item]) -> None:
    """When each base backup became consistent (its stop time), for the PITR window, and the
    parent it depends on (an incremental's), from its manifest."""
    for cluster in sorted({i.database for i in items if i.kind == "base"}):
        bases = {b.id: b for b in walarchive.base_backups(repo, cluster)}
        for item in items:
            base = bases.get(item.id)
            if item.kind == "base" and item.database == cluster and base is not None:
                item.finished_at = base.stop_time
                item.parent_id = base.parent_id


def _wal_plan(
    repo: Repository,
    cluster: str,
    objects: list[ObjectInfo],
    kept: set[str],
    pinned: set[str],
) -> WalPlan:
    bases = [b for b in walarchive.base_backups(repo, cluster) if b.id in kept]
    size = bases[0].segment_size if bases else walnames.DEFAULT_SEGMENT_SIZE
    by_name = {o.key.rsplit("/", 1)[-1].removesuffix(".pfe"): o for o in objects}
    # A pinned base backup (a chain's pinned part) keeps the WAL from its start to its end, to
    # reach consistency; the archive after it is kept for the other base backups, not for it.
    held = [b for b in bases if b.id in pinned]
    floor = [b for b in bases if b not in held] or bases
    names = walarchive.removable(sorted(by_name), floor, size)
    names = [n for n in names if not _within(n, held, size)]
    delete = [by_name[n].key for n in names]
    return WalPlan(
        cluster,
        files=len(objects),
        delete=delete,
        kept_bases=[b.id for b in bases],
        bytes=sum(by_name[n].size for n in names),
    )


def _within(name: str, bases: list[walarchive.BaseBackup], size: int) -> bool:
    segment = walnames.parse_segment(name[:24], size)
    return segment is not None and any(b.start <= segment <= b.stop for b in bases)


def _apply(
    settings: Settings, storage: Storage, catalog: Catalog, outcome: Outcome, say: Say
) -> None:
    prefix = settings.storage.prefix
    who = actor()
    for orphan in outcome.orphans:
        keys = [o.key for o in orphan.objects]
        catalog.audit(who, "retention-orphan", orphan.folder, {"objects": keys})
        try:
            for key in keys:
                storage.delete(key)
        except ObjectLocked as exc:
            outcome.locked.append(f"orphan {orphan.folder}: {exc}")
            continue
        except StorageError as exc:
            outcome.errors.append(f"orphan {orphan.folder}: {exc}")
            continue
        parsed = layout.parse_backup_key(prefix, keys[0])
        if parsed is not None:
            _uncount(outcome, parsed.tier, parsed.database, orphan.objects)
        say(f"removed orphan {orphan.folder} ({len(keys)} objects, no manifest)")
    for upload in outcome.uploads:
        catalog.audit(who, "retention-abort-upload", upload.key, {"upload_id": upload.upload_id})
        try:
            storage.abort_multipart(upload.key, upload.upload_id)
        except StorageError as exc:
            outcome.errors.append(f"upload {upload.key}: {exc}")
    spared: set[str] = set()  # parents of a dependant that could not be deleted
    for decision in outcome.decisions:  # newest first: dependants go before their parents
        item = decision.item
        try:
            if decision.action is Action.HOLD:
                _hold(storage, prefix, catalog, who, decision, outcome, say)
            elif decision.action in (Action.DELETE, Action.RELEASE):
                if item.id in spared:
                    raise StorageError("not deleted: a backup depending on it is still there")
                _delete(storage, catalog, who, decision, outcome, say)
        except CatalogUnavailable:
            raise  # without the audit log, nothing more is deleted
        except ObjectLocked as exc:  # not yet: the lock outlives this rule; a later run deletes
            outcome.locked.append(f"{item.id}: {exc}")
            say(f"kept {item.id} of {item.database} for now: {exc}")
            if item.parent_id is not None:
                spared.add(item.parent_id)
        except Exception as exc:  # one backup's failure must not stop the others
            outcome.errors.append(f"{item.id}: {exc}")
            log.warning("retention could not %s %s: %s", decision.action, item.id, exc)
            if item.parent_id is not None:
                spared.add(item.parent_id)  # never break a chain: its parent stays too
    for wal in outcome.wal:
        _delete_wal(storage, catalog, who, wal, outcome, say)
    catalog.record_usage(
        [(tier, db, n, size) for (tier, db), (n, size) in sorted(outcome.usage.items()) if n > 0]
    )


def _delete_wal(
    storage: Storage, catalog: Catalog, who: str, wal: WalPlan, outcome: Outcome, say: Say
) -> None:
    if wal.delete:
        catalog.audit(who, "retention-wal", wal.cluster, wal.to_json())
    locked: list[ObjectLocked] = []
    for key in wal.delete:
        try:
            storage.delete(key)
        except ObjectLocked as exc:  # younger than WAL_RETENTION_DAYS: a later run takes it
            locked.append(exc)
    size = len(wal.delete) - len(locked)
    if size:
        say(f"deleted {size} WAL files of {wal.cluster} older than every kept base backup")
        entry = outcome.usage.get(("wal", wal.cluster))
        if entry is not None and not locked:  # else the next run's inventory counts them
            entry[0] -= size
            entry[1] -= wal.bytes
    if locked:
        outcome.locked.append(f"{len(locked)} WAL files of {wal.cluster}, first: {locked[0]}")


def _hold(
    storage: Storage,
    prefix: str,
    catalog: Catalog,
    who: str,
    decision: Decision,
    outcome: Outcome,
    say: Say,
) -> None:
    item = decision.item
    catalog.audit(who, "retention-hold", item.id, {"reasons": decision.reasons})
    pin = Pin(
        datetime.now().astimezone().isoformat(timespec="seconds"),
        "retention",
        "; ".join(decision.reasons),
        item.tier,
        hold=True,
    )
    source = pins.Location(item.tier, item.database, item.id)
    where = pins.move(storage, prefix, source, layout.KEEP_TIER, pin)
    catalog.move_backup(item.id, layout.KEEP_TIER, where.folder(prefix) + layout.MANIFEST_OBJECT)
    _uncount(outcome, item.tier, item.database, item.objects)
    _uncount(outcome, layout.KEEP_TIER, item.database, item.objects, sign=-1)
    say(f"held {item.id} of {item.database} in keep/: {decision.reasons[-1]}")


def _delete(
    storage: Storage, catalog: Catalog, who: str, decision: Decision, outcome: Outcome, say: Say
) -> None:
    item = decision.item
    keys = sorted(
        (o.key for o in item.objects), key=lambda k: not k.endswith(layout.MANIFEST_OBJECT)
    )
    details = {
        "database": item.database,
        "tier": item.tier,
        "reasons": decision.reasons,
        "objects": keys,
    }
    locks.refuse_locked(storage, keys)  # all or nothing: a half-deleted backup is an orphan
    catalog.audit(who, "retention-delete", item.id, details)  # written before anything goes
    for key in keys:  # the manifest first: from then on the backup does not exist
        storage.delete(key)
    catalog.mark_deleted(item.id)
    _uncount(outcome, item.tier, item.database, item.objects)
    say(f"deleted {item.id} of {item.database} ({decision.reasons[0]})")


def _uncount(
    outcome: Outcome, tier: str, database: str, objects: list[ObjectInfo], sign: int = 1
) -> None:
    entry = outcome.usage.setdefault((tier, database), [0, 0])
    entry[0] -= sign * len(objects)
    entry[1] -= sign * sum(o.size for o in objects)
