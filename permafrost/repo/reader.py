"""Reading backups back from the bucket: which manifests are there, and each one, checked.

The bucket is the source of truth; the catalog, `list` during an outage, `wal verify` and the
restore side all read manifests through these.
"""

from __future__ import annotations

from collections.abc import Iterator

from permafrost import layout
from permafrost.errors import ManifestInvalid
from permafrost.repo import crypto
from permafrost.repo.manifest import Manifest, parse
from permafrost.storage import Storage


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
