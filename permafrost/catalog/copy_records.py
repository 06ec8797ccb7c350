"""What the catalog says of copies (catalog/copies.py): plain records, importable without a
database driver."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class CopyRecord:
    """A verified copy of one backup in one repository (a copy destination)."""

    backup_id: str
    repository_id: str
    destination: str
    manifest_key: str
    stored_bytes: int
    method: str  # stream | server-side | found (already there, read back and matched)
    seconds: float
    verified_at: datetime
    removed_at: datetime | None = None  # deleted there by the copy's own retention


@dataclass(frozen=True)
class DestinationRecord:
    """A copy destination as the catalog last saw it."""

    name: str
    repository_id: str | None
    location: str
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None


@dataclass(frozen=True)
class WalCopyRecord:
    destination: str
    repository_id: str
    cluster: str
    last_segment: str
    last_copied_at: datetime | None
    segments: int
    bytes: int
