"""Storage backends behind one protocol; `open_storage` picks one from the settings."""

from __future__ import annotations

from permafrost.config.storage import StorageSettings
from permafrost.storage.base import (
    BucketCopy,
    LifecycleStorage,
    ObjectInfo,
    PendingUpload,
    ProviderConditions,
    Storage,
)

__all__ = [
    "BucketCopy",
    "LifecycleStorage",
    "ObjectInfo",
    "PendingUpload",
    "ProviderConditions",
    "Storage",
    "open_storage",
]


def open_storage(settings: StorageSettings) -> Storage:
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

    return S3Storage(settings)
