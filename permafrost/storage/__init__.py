"""Storage backends behind one protocol; `open_storage` picks one from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from permafrost.config.storage import StorageSettings
from permafrost.storage.base import (
    BucketCopy,
    LifecycleStorage,
    LockingStorage,
    ObjectInfo,
    PendingUpload,
    PermissionProbing,
    ProviderConditions,
    Storage,
    VerifiedPut,
    VersionedStorage,
)

__all__ = [
    "BucketCopy",
    "LifecycleStorage",
    "LockingStorage",
    "ObjectInfo",
    "PendingUpload",
    "PermissionProbing",
    "ProviderConditions",
    "Storage",
    "VerifiedPut",
    "VersionedStorage",
    "open_storage",
]


if TYPE_CHECKING:
    from permafrost.storage.lock import LockPolicy


def open_storage(settings: StorageSettings, lock: LockPolicy | None = None) -> Storage:
    """The backend STORAGE_URL names; with a lock (OBJECT_LOCK), only S3, which then writes
    every object locked (storage/lock.py refused the others before this is called)."""
    # Each backend is imported when chosen: importing boto3 costs about 0.15 s, which a local
    # bucket need not pay.
    if settings.scheme == "file":
        from permafrost.storage.local import LocalStorage

        return LocalStorage(settings.local_path)
    if settings.scheme == "azure":
        from permafrost.storage.azure import AzureStorage

        return AzureStorage(settings)
    if settings.scheme == "gs":
        from permafrost.storage.gcs import GcsStorage

        return GcsStorage(settings)
    if settings.scheme == "sftp":
        from permafrost.storage.sftp import SftpStorage

        return SftpStorage(settings)
    from permafrost.storage.s3 import S3Storage

    return S3Storage(settings, lock)
