"""Pins under object lock: a legal hold on every object of the backup, where it is.

A lock forbids copy-then-delete into keep/ (the original cannot be deleted), and needs no
keep/: a legal hold (PutObjectLegalHold ON) stops any deletion of an object for as long as it is
on, whatever its retain-until. So a pin puts the hold on each object of the backup (for a base
backup, also on the archived WAL from its start to its end, which it restores with) and writes
pin.json beside it (who, when, why; itself unlocked, so unpinning can remove it); retention
reads pin.json as it reads one in keep/. Unpinning removes the holds, then pin.json.

Legacy pins in keep/ still restore and list; `permafrost lock migrate` moves them back to their
tier under a hold (`migrate_one`): copy, hold, then delete the keep/ copy, so that at every
moment one complete copy is held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from permafrost import layout
from permafrost.errors import NotFound, UsageError
from permafrost.repo.config import Repository
from permafrost.retention.plan import Pin
from permafrost.storage import LockingStorage, Storage
from permafrost.wal import archive as walarchive
from permafrost.wal import names as walnames

Say = Callable[[str], None]


def locking(storage: Storage) -> LockingStorage | None:
    """The storage as a LockingStorage when OBJECT_LOCK is on, else None."""
    if isinstance(storage, LockingStorage) and storage.locking:
        return storage
    return None


def backup_keys(storage: Storage, folder: str) -> list[str]:
    """The objects a hold covers: all of the backup's but pin.json, its manifest last."""
    keys = [i.key for i in storage.list(folder) if not i.key.endswith("/" + layout.PIN_OBJECT)]
    return sorted(keys, key=lambda k: k.endswith(layout.MANIFEST_OBJECT))


def wal_keys(repo: Repository, cluster: str, backup_id: str) -> list[str]:
    """A base backup's archived WAL from its start to its end (what it restores with)."""
    base = next((b for b in walarchive.base_backups(repo, cluster) if b.id == backup_id), None)
    if base is None:
        return []
    keys = []
    for info in repo.storage.list(layout.wal_folder(repo.prefix, cluster)):
        name = info.key.rsplit("/", 1)[-1].removesuffix(".pfe")
        segment = walnames.parse_segment(name[:24], base.segment_size)
        if segment is not None and base.start <= segment <= base.stop:
            keys.append(info.key)
    return keys


def hold(storage: Storage, folder: str, pin: Pin, extra: Iterable[str], say: Say) -> None:
    """Legal hold ON on each object (the WAL first, the manifest last), then pin.json."""
    lockable = require_lock(storage, "a pin by legal hold")
    keys = [*extra, *backup_keys(storage, folder)]
    for key in keys:
        lockable.set_legal_hold(key, True)
    say(f"legal hold on {len(keys)} objects in {folder}")
    storage.put(folder + layout.PIN_OBJECT, pin.to_json())


def release(storage: Storage, folder: str, extra: Iterable[str], say: Say) -> None:
    """pin.json goes first (from then on retention decides on it), then every hold."""
    lockable = require_lock(storage, "an unpin of a legal hold")
    storage.delete(folder + layout.PIN_OBJECT)
    keys = [*backup_keys(storage, folder), *extra]
    for key in keys:
        try:
            lockable.set_legal_hold(key, False)
        except NotFound:
            continue  # WAL retention already took a segment the hold no longer covered
    say(f"legal hold off on {len(keys)} objects in {folder}")


def read_pin(storage: Storage, folder: str) -> Pin | None:
    try:
        return Pin.parse(storage.get(folder + layout.PIN_OBJECT))
    except (NotFound, ValueError):
        return None


def require_lock(storage: Storage, what: str) -> LockingStorage:
    held = locking(storage)
    if held is None:
        raise UsageError(
            f"{what} needs OBJECT_LOCK=governance|compliance on an S3 bucket with object lock; "
            "without it pins are kept in keep/ by `permafrost pin`"
        )
    return held
