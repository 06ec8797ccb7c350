"""Object lock tied to the tiers: how long each key is locked, from the retention settings.

With `OBJECT_LOCK=governance|compliance`, every object is written with a retain-until of its
tier's retention (`layout.lock_tier` says which tier a key is in; `retention_days` is the one
map from tier to days, which the lifecycle rules use too), so nothing, not even the credentials
that wrote it, can delete it before retention would. Only an S3 bucket created with object lock
can do that; every other destination is refused here, in one line, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from permafrost import layout
from permafrost.config.settings import RetentionSettings, Settings
from permafrost.config.storage import StorageSettings
from permafrost.errors import LockUnsupported
from permafrost.storage.base import LockingStorage


class LockMode(StrEnum):
    GOVERNANCE = "GOVERNANCE"  # a user with s3:BypassGovernanceRetention may still delete
    COMPLIANCE = "COMPLIANCE"  # nobody can, not even the account's root, until retain-until


# What each provider's documentation says about S3 Object Lock (README's provider table).
UNSUPPORTED_PROVIDERS = {
    "spaces": "DigitalOcean Spaces does not support S3 Object Lock (it is not in Spaces' S3 "
    "compatibility table; unsupported calls answer NotImplemented)",
}
UNSUPPORTED_SCHEMES = {
    "file": "a local directory (file://) cannot lock objects",
    "azure": "Azure Blob immutability policies are set on the container, not by Permafrost",
    "gs": "Google Cloud Storage retention is a bucket policy, not S3 Object Lock",
    "sftp": "an SFTP server cannot lock objects",
}


def retention_days(policy: RetentionSettings) -> dict[str, int]:
    """Each locked tier's retention in days: the one map from tier to days (lifecycle's expiry
    rules read it too). The repository config outlives every tier."""
    days = {
        "standard": policy.standard_days,
        "compliance": policy.compliance_days,
        layout.BASE_TIER: policy.wal_days,
        "wal": policy.wal_days,
    }
    days[layout.LOCK_REPOSITORY] = max(days.values())
    return days


@dataclass(frozen=True)
class LockPolicy:
    """The lock every write carries: a mode, and per tier the days from the write."""

    mode: LockMode
    prefix: str
    days: dict[str, int]

    def tier_of(self, key: str) -> str | None:
        return layout.lock_tier(self.prefix, key)

    def retain_until(self, key: str, now: datetime) -> datetime | None:
        """When the object written at `now` under `key` may go; None: not locked."""
        tier = self.tier_of(key)
        if tier is None:
            return None
        # A whole second later than the days, so a retention run at the same hour never races it.
        return (now + timedelta(days=self.days[tier], seconds=1)).replace(microsecond=0)


def policy(settings: Settings) -> LockPolicy | None:
    """The lock OBJECT_LOCK asks for, or None when it is off; refused where it cannot be had."""
    if settings.storage.object_lock == "off":
        return None
    refuse_unsupported(settings.storage)
    return LockPolicy(
        mode=LockMode(settings.storage.object_lock.upper()),
        prefix=settings.storage.prefix,
        days=retention_days(settings.retention),
    )


def refuse_unsupported(storage: StorageSettings) -> None:
    """Raise LockUnsupported for a destination that has no S3 Object Lock at all."""
    setting = f"OBJECT_LOCK={storage.object_lock}"
    what = UNSUPPORTED_SCHEMES.get(storage.scheme)
    if what is None and storage.scheme == "s3":
        what = UNSUPPORTED_PROVIDERS.get(storage.provider)
    if what is not None:
        raise LockUnsupported(
            f"{setting}: {what}; use an S3 bucket created with object lock (AWS S3, MinIO, "
            "Backblaze B2, Wasabi), or unset OBJECT_LOCK"
        )


def bucket_without_lock(storage_url: str, setting: str) -> LockUnsupported:
    return LockUnsupported(
        f"OBJECT_LOCK={setting}: bucket {storage_url} was not created with object lock, so "
        "nothing written there could be locked; create a bucket with object lock enabled "
        "(aws s3api create-bucket ... --object-lock-enabled-for-bucket) or unset OBJECT_LOCK"
    )


def describe_lock(storage: object, setting: str) -> str | None:
    """OBJECT_LOCK on this bucket in a line, for `doctor`; None when it is off."""
    if not isinstance(storage, LockingStorage) or not storage.locking:
        return None
    bucket = storage.bucket_lock()
    default = (
        f"a default retention of {bucket.default_mode} {bucket.default_days} days"
        if bucket.default_mode
        else "no default retention (each object carries its tier's date)"
    )
    state = "enabled" if bucket.enabled else "NOT enabled"
    return (
        f"OBJECT_LOCK={setting}, {state} on the bucket, {default}; `permafrost lock status` "
        "shows every tier"
    )
