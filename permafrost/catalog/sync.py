"""Rebuilding the catalog from the bucket, which is always the source of truth."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from permafrost import layout
from permafrost.errors import EncryptionKeyError, IntegrityError, ManifestInvalid
from permafrost.repo import crypto
from permafrost.repo.manifest import Manifest, parse
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


def manifest_keys(storage: Storage, prefix: str) -> Iterator[tuple[layout.BackupKey, str]]:
    """Every backup manifest in the bucket, tier by tier."""
    for tier in layout.BACKUP_TIERS:
        for info in storage.list(layout.tier_folder(prefix, tier)):
            parsed = layout.parse_backup_key(prefix, info.key)
            if parsed is not None and parsed.name == layout.MANIFEST_OBJECT:
                yield parsed, info.key


def read_manifest(storage: Storage, key: str, keyring: crypto.Keyring | None) -> Manifest:
    """A manifest, refused if edited, or if it is not the one its folder names.

    It is returned as found where it is: the tier is the folder's and the objects are the ones
    beside it, so a backup moved by `pin` (a server-side copy into keep/) reads as it should
    while its signed body still says where it was first written.
    """
    return located(parse(storage.get(key), keyring, key), key)


def located(manifest: Manifest, key: str) -> Manifest:
    expected = f"/{manifest.database}/{manifest.id}/{layout.MANIFEST_OBJECT}"
    if not ("/" + key).endswith(expected):
        raise ManifestInvalid(
            f"{key} describes backup {manifest.id} of {manifest.database}: it was moved or swapped"
        )
    return layout.relocate(manifest, key)


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
