"""One object copied to a copy destination, and checked there.

Streaming: ranged reads of the source (threads ahead) feed a multipart writer on the
destination, in memory bounded by part size times concurrency on each side. Server-side: the
destination's store copies it from the primary's bucket (same S3 endpoint and credentials).
Either way the object is then read back from the destination and its SHA-256 compared with the
one the manifest records (or, for an object whose manifest records none, with the source's),
so a copy is called verified only for bytes that were read where they now are.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from enum import StrEnum

from permafrost.config.env import Secret
from permafrost.config.storage import StorageSettings
from permafrost.errors import IntegrityError, NotFound, StorageError
from permafrost.storage import BucketCopy, Storage
from permafrost.storage.transfer import ObjectWriter, read_object


class Method(StrEnum):
    STREAM = "stream"
    SERVER_SIDE = "server-side"
    FOUND = "found"  # already at the destination, read back and matched


@dataclass(frozen=True)
class Source:
    """Where objects come from: the primary's store, and its bucket when a destination at the
    same endpoint and with the same credentials can copy server-side from it."""

    storage: Storage
    transfer: StorageSettings  # part size and concurrency of ranged reads
    server_side_bucket: str | None = None


@dataclass(frozen=True)
class Copied:
    key: str
    size: int
    sha256: str
    method: Method


def server_side_bucket(primary: StorageSettings, target: StorageSettings) -> str | None:
    """The primary's bucket, when the target can copy from it server-side: both S3, the same
    endpoint, the same credentials (then one account can read the one and write the other)."""
    if primary.scheme != "s3" or target.scheme != "s3":
        return None
    same = (
        primary.endpoint_url == target.endpoint_url
        and _revealed(primary.access_key_id) == _revealed(target.access_key_id)
        and _revealed(primary.secret_access_key) == _revealed(target.secret_access_key)
    )
    return primary.bucket if same else None


def _revealed(secret: Secret | None) -> str | None:
    return secret.reveal() if secret is not None else None


def copy_object(
    source: Source,
    key: str,
    target: Storage,
    target_key: str,
    target_transfer: StorageSettings,
    expected: str | None,
) -> Copied:
    """Copy `key` to `target_key` unless a checked copy is there already; read it back.

    expected: the SHA-256 of the stored bytes the manifest records (None: none recorded, the
    source's own bytes are the reference). IntegrityError when the source does not match it (the
    primary's object is damaged: nothing is copied) or the read-back does not."""
    size = source.storage.head(key).size
    with contextlib.suppress(NotFound):
        there = target.head(target_key)
        if there.size == size:
            reference = expected or _sha256(source.storage, key, size, source.transfer)
            if _sha256(target, target_key, size, target_transfer) == reference:
                return Copied(target_key, size, reference, Method.FOUND)
    if source.server_side_bucket is not None and isinstance(target, BucketCopy):
        reference = expected or _sha256(source.storage, key, size, source.transfer)
        target.copy_from_bucket(source.server_side_bucket, key, target_key)
        method = Method.SERVER_SIDE
    else:
        reference = _stream(source, key, size, target, target_key, target_transfer, expected)
        method = Method.STREAM
    _read_back(target, target_key, size, target_transfer, reference)
    return Copied(target_key, size, reference, method)


def _stream(
    source: Source,
    key: str,
    size: int,
    target: Storage,
    target_key: str,
    transfer: StorageSettings,
    expected: str | None,
) -> str:
    """Source ranges into a multipart writer; the source's SHA-256, checked before the object is
    completed there (a damaged source leaves nothing at the destination)."""
    writer = ObjectWriter(
        target, target_key, part_size=transfer.part_size, concurrency=transfer.concurrency
    )
    try:
        for block in read_object(
            source.storage,
            key,
            size,
            part_size=source.transfer.part_size,
            concurrency=source.transfer.concurrency,
        ):
            writer.write(block)
        if expected is not None and writer.sha256 != expected:
            raise IntegrityError(
                f"{key} on the primary does not match the SHA-256 its manifest records: "
                "not copied (verify the backup)"
            )
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.sha256


def _read_back(
    target: Storage, key: str, size: int, transfer: StorageSettings, reference: str
) -> None:
    actual = target.head(key).size
    if actual != size or _sha256(target, key, size, transfer) != reference:
        with contextlib.suppress(StorageError):
            target.delete(key)
        raise IntegrityError(
            f"{key} read back from the copy does not match what was written "
            f"({actual} of {size} bytes, or another SHA-256): removed there, copy again"
        )


def _sha256(storage: Storage, key: str, size: int, transfer: StorageSettings) -> str:
    digest = hashlib.sha256()
    for block in read_object(
        storage, key, size, part_size=transfer.part_size, concurrency=transfer.concurrency
    ):
        digest.update(block)
    return digest.hexdigest()
