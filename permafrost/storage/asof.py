"""The bucket as it was at a moment: a read-only view over a versioned bucket.

With bucket versioning on, S3 keeps every version of an object: a delete only adds a delete
marker and an overwrite a newer version. `AsOfStorage` answers the storage protocol's reads with,
for each key, the version that was current at the moment (the newest version stored at or before
it), and leaves out a key whose newest entry at that moment is a delete marker, or that did not
exist yet. So every reader (lookups, restore, pitr, wal-fetch) works unchanged on backups an
attacker deleted or overwrote since. Every write is refused: the past is not written to.

What each key resolved to is remembered (one entry per key read or listed), so a backup's
manifest and its data object, read several times in ranges, are one listing each.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import NoReturn

from permafrost.errors import NotFound, StorageError, UsageError
from permafrost.storage.base import ObjectInfo, ObjectVersion, PendingUpload, VersionedStorage

log = logging.getLogger("permafrost")

SUSPENDED = "Suspended"
ENABLED = "Enabled"


class AsOfStorage:
    def __init__(self, bucket: VersionedStorage, url: str, moment: datetime) -> None:
        self.bucket = bucket
        self.moment = moment
        self._url = url
        self._resolved: dict[str, ObjectVersion | None] = {}

    @property
    def url(self) -> str:
        return f"{self._url} as of {self.moment.isoformat(timespec='seconds')}"

    def check(self) -> None:
        self.bucket.versioning()  # reaches the bucket; StorageUnavailable when it cannot

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        version = self._version(key)
        return self.bucket.get_version(key, version.version_id, offset, length)

    def head(self, key: str) -> ObjectInfo:
        version = self._version(key)
        return ObjectInfo(key, version.size, version.modified)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for version in current_versions(self.bucket.list_versions(prefix), self.moment):
            self._resolved[version.key] = version
            yield ObjectInfo(version.key, version.size, version.modified)

    def list_multipart(self, prefix: str) -> Iterator[PendingUpload]:
        return iter(())

    def _version(self, key: str) -> ObjectVersion:
        if key not in self._resolved:
            exact = (v for v in self.bucket.list_versions(key) if v.key == key)
            found = list(current_versions(exact, self.moment))
            self._resolved[key] = found[0] if found else None
        version = self._resolved[key]
        if version is None:
            raise NotFound(f"{key} did not exist in {self.url}")
        return version

    # --- writes: refused --------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self._refuse("write", key)

    def delete(self, key: str) -> None:
        self._refuse("delete", key)

    def copy(self, source: str, target: str) -> None:
        self._refuse("copy", source)

    def create_multipart(self, key: str) -> str:
        self._refuse("write", key)

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        self._refuse("write", key)

    def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None:
        self._refuse("write", key)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._refuse("write", key)

    def _refuse(self, action: str, key: str) -> NoReturn:
        raise StorageError(
            f"cannot {action} {key}: {self.url} is the bucket as it was, read only; "
            "run the command without --as-of to change the repository"
        )


def current_versions(
    versions: Iterator[ObjectVersion], moment: datetime
) -> Iterator[ObjectVersion]:
    """Per key (keys in order, each key's newest first), the version current at moment: the
    newest stored at or before it, unless that is a delete marker."""
    for _, entries in itertools.groupby(versions, key=lambda v: v.key):
        current = next((v for v in entries if v.modified <= moment), None)
        if current is not None and not current.deleted:
            yield current


def as_of(storage: object, url: str, moment: datetime) -> AsOfStorage:
    """The view, or UsageError when this bucket keeps no old versions to read."""
    if not isinstance(storage, VersionedStorage):
        raise UsageError(
            f"--as-of reads old object versions, which only an S3 bucket with versioning keeps; "
            f"{url} has none"
        )
    state = storage.versioning()
    if state not in (ENABLED, SUSPENDED):
        raise UsageError(
            f"--as-of needs bucket versioning, and {url} has never had it on, so what was "
            "deleted or overwritten there is gone; turn it on for the future (aws s3api "
            "put-bucket-versioning --bucket NAME --versioning-configuration Status=Enabled)"
        )
    if state == SUSPENDED:
        log.warning(
            "versioning of %s is suspended: objects written since then keep no older versions, "
            "so what was overwritten or deleted after that cannot be read back",
            url,
        )
    return AsOfStorage(storage, url, moment)
