"""Retention under object lock (OBJECT_LOCK): what a lock changes in deleting and holding.

- A backup is deleted whole or not at all: every object's lock is read first, and one still
  locked (or under a legal hold) defers the whole backup to a later run (`ObjectLocked`), which
  retention reports as deferred, not as an error.
- Nothing needs moving into keep/ to escape lifecycle expiry: under a lock Permafrost writes no
  expiry rule (retention deletes, once the lock allows it), so a hold stays where it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from permafrost.errors import ObjectLocked
from permafrost.retention.plan import Action, Decision
from permafrost.storage import LockingStorage, Storage


def locking(storage: Storage) -> bool:
    return isinstance(storage, LockingStorage) and storage.locking


def refuse_locked(storage: Storage, keys: Iterable[str], now: datetime | None = None) -> None:
    """Raise ObjectLocked, naming the first object a lock or hold keeps, before any delete."""
    if not isinstance(storage, LockingStorage) or not storage.locking:
        return
    moment = now or datetime.now(UTC)
    for key in keys:
        state = storage.lock_state(key)
        if state.blocks(moment):
            raise ObjectLocked(state.why())


def hold_in_place(storage: Storage, decisions: list[Decision]) -> None:
    """Under a lock, a backup retention would hold in keep/ is kept where it is."""
    if not locking(storage):
        return
    for decision in decisions:
        if decision.action is Action.HOLD:
            decision.action = Action.KEEP
            decision.reasons.append("kept in place: under OBJECT_LOCK no lifecycle rule expires it")
