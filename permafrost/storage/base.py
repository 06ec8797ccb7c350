"""The storage protocol: the few operations Permafrost needs from a bucket.

Two implementations (`s3.S3Storage`, `local.LocalStorage`) answer it the same way: a missing
object raises `NotFound`, every other failure a `StorageError` that says whether retrying could
help. The contract suite in tests/storage runs unchanged against both.

An optional feature only some backends have is a capability of its own (`LifecycleStorage`,
`ProviderConditions`, `VersionedStorage`), which callers test with
`isinstance(storage, LifecycleStorage)`.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from permafrost.storage.probes import Probe


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class ObjectVersion:
    """One version of an object in a versioned bucket, or a delete marker (deleted)."""

    key: str
    version_id: str
    size: int
    modified: datetime
    deleted: bool


@dataclass(frozen=True)
class PendingUpload:
    key: str
    upload_id: str
    initiated: datetime


class Storage(Protocol):
    """A flat namespace of immutable objects addressed by '/'-separated keys."""

    @property
    def url(self) -> str:
        """Where this storage is, for messages (never with credentials)."""
        ...

    def check(self) -> None:
        """Raise StorageUnavailable unless the bucket answers."""

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Store an object whole. With if_absent, raise StorageError if it already exists."""

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """An object's bytes, or the range [offset, offset+length)."""
        ...

    def head(self, key: str) -> ObjectInfo: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix, in key order."""
        ...

    def delete(self, key: str) -> None:
        """Remove an object; removing one that is not there is not an error."""

    def copy(self, source: str, target: str) -> None:
        """Copy an object inside the bucket without downloading it (S3: server-side)."""

    def create_multipart(self, key: str) -> str: ...

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str: ...

    def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None: ...

    def abort_multipart(self, key: str, upload_id: str) -> None: ...

    def list_multipart(self, prefix: str) -> Iterator[PendingUpload]: ...


@runtime_checkable
class StreamingReads(Protocol):
    """A backend that hands a range back piece by piece as it arrives (S3, a local directory):
    one request covers a long range without holding it in memory (storage/transfer.py)."""

    def get_pieces(
        self, key: str, offset: int, length: int, piece: int
    ) -> Generator[bytes, None, None]:
        """The bytes [offset, offset+length) in order, in pieces of at most `piece` bytes; a
        transient failure midway is resumed where it stopped; StorageError when it is short."""
        ...


@runtime_checkable
class LifecycleStorage(Protocol):
    """A bucket with lifecycle rules (S3); a local directory has none."""

    def lifecycle_rules(self) -> list[dict[str, Any]]:
        """The bucket's lifecycle rules as S3 spells them; none set is an empty list."""
        ...

    def put_lifecycle_rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace the bucket's lifecycle rules with these (none: remove the configuration)."""


@runtime_checkable
class ProviderConditions(Protocol):
    """A bucket whose conditional put is the provider's to keep: S3 sends `If-None-Match: *`,
    which some S3-compatible providers ignore (the second write replaces the first). Until told
    that the provider honours it (`rely_on_provider(True)`, from the repository's probe),
    `put(..., if_absent=True)` checks for itself: head, write, read back, compare
    (storage/conditional.py). A local directory is not one: link(2) never replaces a file."""

    def put_if_none_match(self, key: str, data: bytes) -> None:
        """A PUT with `If-None-Match: *`, as the provider takes it; nothing checked here."""

    def rely_on_provider(self, honoured: bool) -> None:
        """Whether put(..., if_absent=True) may leave the refusal to the provider."""


@runtime_checkable
class VerifiedPut(Protocol):
    """A bucket that checks a whole-object write on the way in, so the writer need not read it
    back: S3 is sent the body's Content-MD5, refuses a body that does not match it (BadDigest),
    and answers with an ETag that, for an object stored whole and unencrypted by a KMS key, is
    the MD5 of the bytes it stored. Used by WAL archiving (wal/segment.py)."""

    def put_verified(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        """put(), sent with the body's Content-MD5; True when the provider's answer confirms
        that it stored `data` (its ETag is their MD5), False when it cannot tell (then read
        it back). A body refused for its digest raises StorageError."""
        ...


@dataclass(frozen=True)
class LockState:
    """What stops an object's deletion: a retention (mode, retain-until) and a legal hold."""

    key: str
    mode: str | None = None  # GOVERNANCE or COMPLIANCE, None: no retention set
    retain_until: datetime | None = None
    legal_hold: bool = False

    def blocks(self, now: datetime) -> bool:
        """Whether a delete of this object's version would be refused at `now`."""
        return self.legal_hold or (self.retain_until is not None and self.retain_until > now)

    def why(self) -> str:
        """Why it cannot be deleted, in words ('' when nothing holds it)."""
        if self.legal_hold:
            return f"{self.key} is under a legal hold (pinned): `permafrost unpin` releases it"
        if self.retain_until is not None:
            return (
                f"{self.key} is locked ({self.mode}) until {self.retain_until:%Y-%m-%d %H:%M} "
                "UTC; retention deletes it after that"
            )
        return ""


@dataclass(frozen=True)
class BucketLock:
    """A bucket's object lock configuration: enabled, and its default retention if any."""

    enabled: bool
    default_mode: str | None = None
    default_days: int | None = None


@runtime_checkable
class LockingStorage(Protocol):
    """A bucket with S3 Object Lock (OBJECT_LOCK): every object is written with the retain-until
    of its tier (`storage/lock.py`), a delete is refused while an object is locked or held, and
    a pin is a legal hold. Only S3Storage is one, and only with OBJECT_LOCK set."""

    @property
    def locking(self) -> bool:
        """Whether OBJECT_LOCK is on for this storage (writes carry a retain-until)."""
        ...

    def bucket_lock(self) -> BucketLock:
        """The bucket's object lock configuration (GetObjectLockConfiguration)."""
        ...

    def lock_state(self, key: str) -> LockState:
        """The current version's retention and legal hold."""
        ...

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Put (on) or remove a legal hold on the current version of `key`."""


@runtime_checkable
class VersionedStorage(Protocol):
    """A bucket that can keep every version of an object (S3 bucket versioning): what was
    deleted or overwritten can still be read by its version id (storage/asof.py)."""

    def versioning(self) -> str:
        """The bucket's versioning: "Enabled", "Suspended", or "" (never turned on)."""
        ...

    def list_versions(self, prefix: str) -> Iterator[ObjectVersion]:
        """Every version and delete marker under prefix: keys in order, each key's newest
        first."""
        ...

    def get_version(
        self, key: str, version_id: str, offset: int = 0, length: int | None = None
    ) -> bytes:
        """One version's bytes, or the range [offset, offset+length) of them."""
        ...


@runtime_checkable
class PermissionProbing(Protocol):
    """A bucket whose credentials can be asked what they may do, one harmless request per
    permission (`permafrost doctor`; storage/probes.py names them)."""

    def probe_permissions(self, probe_key: str, read_key: str, writes: bool = True) -> list[Probe]:
        """Probe with an object of its own at probe_key (removed where the credentials may);
        read_key is an object to read when none could be written. Without writes, only the
        reads are tried (the dashboard writes nothing)."""
        ...


@runtime_checkable
class BucketCopy(Protocol):
    """A store that copies an object from another bucket of the same account without the bytes
    passing through this process (S3's CopyObject / UploadPartCopy). A copy destination uses it
    when it is at the same endpoint with the same credentials as the primary (copies/)."""

    def copy_from_bucket(self, bucket: str, source: str, target: str) -> None:
        """Copy `source` of `bucket` to `target` in this bucket, server-side."""
