"""What the catalog returns: plain records, importable without a database driver."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


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
    repository_id: str = ""  # permafrost.json's id ('': recorded before repositories had ids)


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
