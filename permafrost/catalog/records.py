"""What the catalog returns: plain records, importable without a database driver."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

# The tag a restore gives the safety backup it takes of a database it is about to replace: the
# manifest's mark of a safety backup (docs/FORMAT.md), which format-1 readers read unchanged.
SAFETY_TAG = "safety-backup"


class Purpose(StrEnum):
    """What a backup is for, as stored in backups.purpose."""

    BACKUP = "backup"  # a database's own backup: its card, its staleness alert, its retention
    SAFETY = "safety"  # taken by a restore before it replaced the database: SAFETY_RETENTION_DAYS

    @classmethod
    def of_tags(cls, tags: Iterable[str]) -> Purpose:
        return cls.SAFETY if SAFETY_TAG in tags else cls.BACKUP


class VerificationStatus(StrEnum):
    """A verification's outcome, as stored in verifications.status."""

    VERIFIED = "verified"
    FAILED = "failed"  # the stored bytes are not what was written: an integrity result
    UNVERIFIED = "unverified"  # it could not run (a setting is wrong): says nothing of the backup

    @classmethod
    def of(cls, error: str | None, setting: str | None) -> VerificationStatus:
        if setting is not None:
            return cls.UNVERIFIED
        return cls.FAILED if error else cls.VERIFIED


@dataclass
class BackupRecord:
    id: str
    database: str
    kind: str
    tier: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    size_bytes: int | None
    dump_bytes: int | None
    description: str
    tags: list[str]
    manifest_key: str | None
    manifest: dict[str, Any] | None
    error: str | None
    verified_at: datetime | None
    verification_status: str | None
    deleted_at: datetime | None
    catalogued_at: datetime
    purpose: str = Purpose.BACKUP
    backend_pid: int | None = None
    repository_id: str = ""  # permafrost.json's id ('': recorded before repositories had ids)
    # Base backups' chains (migration 0015): the backup an incremental was taken against, and
    # the full its chain starts from (a full names itself; both None for logical backups).
    parent_id: str | None = None
    chain_full_id: str | None = None

    @property
    def incremental(self) -> bool:
        return self.parent_id is not None

    @property
    def is_safety(self) -> bool:
        return self.purpose == Purpose.SAFETY or SAFETY_TAG in (self.tags or [])


@dataclass
class VerificationRecord:
    id: int
    backup_id: str
    kind: str
    started_at: datetime
    finished_at: datetime
    status: str
    error: str | None
    details: dict[str, Any]
    setting: str | None = None


@dataclass
class TierStats:
    database: str
    tier: str
    backups: int
    size_bytes: int
    dump_bytes: int
    oldest: datetime | None
    newest: datetime | None
    last_verified: datetime | None
    failed: int


@dataclass
class TaskRecord:
    id: int
    kind: str
    payload: dict[str, Any]
    status: str
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    attempts: int
    error: str | None
    result: dict[str, Any] | None
    source: str | None = None  # a backup task's source label (migration 0021)
    subject: str | None = None  # a backup task's backup lock name: one at a time per subject


class DrillStatus(StrEnum):
    """A PITR drill's outcome, as stored in drills.status."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass
class DrillRecord:
    """One PITR drill (migration 0016): what it recovered and what it measured."""

    cluster: str
    status: str
    started_at: datetime
    trigger: str = "manual"
    base_backup_id: str | None = None
    base_bytes: int | None = None
    target_time: datetime | None = None
    newest_wal_at: datetime | None = None
    reached_at: datetime | None = None
    last_replayed_at: datetime | None = None
    fetch_seconds: float | None = None
    replay_seconds: float | None = None
    recovery_seconds: float | None = None
    rpo_seconds: float | None = None
    wal_bytes: int | None = None
    error: str | None = None
    details: dict[str, Any] | None = None
    id: int | None = None
    finished_at: datetime | None = None
    repository_id: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == DrillStatus.SUCCEEDED


@dataclass
class ChainStats:
    """A cluster's newest chain of base backups: its full, its incrementals, their bytes."""

    cluster: str
    full_id: str
    members: int  # the full and its incrementals
    incrementals: int
    stored_bytes: int  # in the bucket, every member together
    changed_bytes: int  # what the members carry: the full's whole size, the incrementals' changes
    newest_id: str
    newest_at: datetime
