"""Rebuilding the catalog from the bucket, which is always the source of truth."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from permafrost.errors import EncryptionKeyError, IntegrityError
from permafrost.repo import crypto
from permafrost.repo.reader import manifest_keys, read_manifest
from permafrost.storage import Storage

if TYPE_CHECKING:
    from permafrost.catalog.store import Catalog

log = logging.getLogger("permafrost")


@dataclass(frozen=True)
class SyncResult:
    added: int
    updated: int
    removed: int
    invalid: int


def sync_catalog(
    catalog: Catalog,
    storage: Storage,
    prefix: str,
    keyring: crypto.Keyring | None,
    *,
    only_missing: bool = False,
) -> SyncResult:
    """Make the catalog list exactly the backups whose manifests are in the bucket.

    With only_missing, read just the manifests the catalog lacks (cheap after every backup);
    otherwise re-read them all and mark catalogued backups whose manifest is gone as deleted.
    """
    known = catalog.completed_ids()
    seen: set[str] = set()
    added = updated = invalid = 0
    for parsed, key in manifest_keys(storage, prefix):
        seen.add(parsed.backup_id)
        if only_missing and parsed.backup_id in known:
            continue
        try:
            manifest = read_manifest(storage, key, keyring)
        except (IntegrityError, EncryptionKeyError) as exc:
            log.warning("skipping %s: %s", key, exc)
            invalid += 1
            continue
        catalog.upsert_manifest(manifest, key)
        if parsed.backup_id in known:
            updated += 1
        else:
            added += 1
    removed = 0
    if not only_missing:
        for backup_id in known - seen:
            catalog.mark_deleted(backup_id)
            removed += 1
    return SyncResult(added, updated, removed, invalid)
