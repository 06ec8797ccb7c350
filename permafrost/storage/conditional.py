"""Conditional writes that do not rest on one provider feature.

`put(key, data, if_absent=True)` must never replace an object: an archived WAL segment, the
repository's permafrost.json, a cluster's identity. S3 asks the provider with `If-None-Match: *`;
AWS S3 honours it (since 2024) and so does moto, but an S3-compatible provider that ignores the
header overwrites silently. So the header is probed (`probe`: an object written twice, the
second write must be refused), the answer is recorded in permafrost.json, and where it is not
honoured `put_checked` does what it can without the provider: check for the object, write, read
back and compare. That refuses an object that is already there and a write that another writer
replaced at once, but two writers racing between the check and the write are not excluded: only
the provider can do that.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from permafrost.errors import (
    AccessDenied,
    NotFound,
    StorageError,
    StorageUnavailable,
    WriteConflict,
)
from permafrost.storage.base import ProviderConditions, Storage

log = logging.getLogger("permafrost")

PROBE_BODIES = (b"permafrost conditional write probe: first\n", b"second\n")


class Conditional(StrEnum):
    """Whether a bucket refuses the second write of a conditional put."""

    HONOURED = "honoured"
    NOT_HONOURED = "not honoured"
    UNKNOWN = "unknown"  # not probed yet (a repository from before the probe)


MEANING = {
    Conditional.HONOURED: "the provider refuses a second write of the same key "
    "(If-None-Match: *): an archived WAL segment or permafrost.json is never replaced",
    Conditional.NOT_HONOURED: "the provider let a second write replace the probe object: "
    "wal-push and init check for an object first, write, read back and compare, but concurrent "
    "writers are not excluded by the provider (run one archiver per CLUSTER_NAME)",
    Conditional.UNKNOWN: "not probed yet: writes check for the object first, write, read back "
    "and compare, until `permafrost init` or the next wal-push probes the bucket",
}
LOCAL = "a local directory: link(2) never replaces a file"


def already_exists(exc: StorageError) -> bool:
    """Whether a write was refused because the object exists (both backends say so)."""
    return "already exists" in str(exc)


def probe(storage: Storage, key: str) -> Conditional:
    """Write `key` twice with the provider's condition; honoured when the second is refused.
    The probe object is deleted afterwards. A local directory needs no probe (link(2))."""
    if not isinstance(storage, ProviderConditions):
        return Conditional.HONOURED
    try:
        if not _first_write(storage, storage, key):
            return Conditional.NOT_HONOURED
        try:
            storage.put_if_none_match(key, PROBE_BODIES[1])
        except StorageError as exc:
            if already_exists(exc):
                return Conditional.HONOURED
            raise
        return Conditional.NOT_HONOURED
    finally:
        _remove_probe(storage, key)


def _remove_probe(storage: Storage, key: str) -> None:
    """Delete the probe object; credentials that may not delete (an append-only policy) leave
    it, which is said, not an error: the probe's answer stands."""
    try:
        storage.delete(key)
    except AccessDenied:
        log.warning(
            "the conditional-write probe object %s is left in the bucket: these credentials may "
            "not delete (an append-only policy); remove it with credentials that may",
            key,
        )


def _first_write(storage: Storage, conditions: ProviderConditions, key: str) -> bool:
    """The probe's first write; False when the provider refuses the header itself (a plain
    write of the same object then goes through), which is not honouring it either."""
    try:
        conditions.put_if_none_match(key, PROBE_BODIES[0])
    except StorageUnavailable:
        raise
    except StorageError as exc:
        if not exc.permanent:
            raise
        storage.put(key, PROBE_BODIES[0])  # raises when the header was not the cause
        return False
    return True


def put_checked(storage: Storage, key: str, data: bytes) -> None:
    """`put(if_absent=True)` without the provider's help: refuse an object that is there, write,
    then read back and compare, so a write another writer replaced at once is refused too."""
    try:
        storage.head(key)
    except NotFound:
        pass
    else:
        raise StorageError(f"{key} already exists")
    storage.put(key, data)
    if storage.get(key) != data:
        raise WriteConflict(
            f"{key} holds other bytes right after this write: another process wrote it at the "
            "same time, and this bucket does not honour conditional writes (concurrent writers "
            "are not excluded by the provider); run one writer per CLUSTER_NAME and retry"
        )
