"""Reading backups back from the bucket: which manifests are there, and each one, checked.

The bucket is the source of truth; the catalog, `list` during an outage, `wal verify` and the
restore side all read manifests through these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from permafrost import layout
from permafrost.config.settings import StorageSettings
from permafrost.errors import ManifestInvalid
from permafrost.repo import crypto
from permafrost.repo.config import Repository
from permafrost.repo.manifest import Manifest, parse
from permafrost.repo.pipeline import Opened
from permafrost.storage import Storage
from permafrost.storage.base import StreamingReads
from permafrost.storage.transfer import read_object, stream_object


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


# Downloads are ranges of at most 4 MiB, whatever the upload part size: each range is held twice
# while its body is read (botocore joins the pieces), and CONCURRENCY + 1 of them are in flight,
# so 8 MiB ranges cost about 50 MB more at the peak of a restore, for no speed on loopback or in
# a region (bench/restore.py, docs/PERFORMANCE.md).
READ_RANGE = 4 * 1024 * 1024
# A backend that reads a range piece by piece (StreamingReads: S3, a local directory) is asked
# for long ranges instead, read in 1 MiB pieces: a 64 MiB range costs no more memory than a
# 1 MiB one, and 16 times fewer requests than 4 MiB ranges (each of which moto's server, at
# least, answers by reading the whole object).
STREAM_RANGE = 64 * 1024 * 1024
STREAM_PIECE = 1024 * 1024


def data_blocks(storage: Storage, manifest: Manifest, transfer: StorageSettings) -> Iterator[bytes]:
    """The stored bytes of a backup's data object, downloaded in parallel ranges."""
    key, size = manifest.objects["data"], manifest.stored_bytes
    if isinstance(storage, StreamingReads):
        return stream_object(
            storage,
            key,
            size,
            range_size=STREAM_RANGE,
            piece=STREAM_PIECE,
            concurrency=transfer.concurrency,
        )
    return read_object(
        storage,
        key,
        size,
        part_size=min(transfer.part_size, READ_RANGE),
        concurrency=transfer.concurrency,
    )


def object_name(manifest: Manifest) -> str:
    """A backup's data object as messages name it."""
    return f"backup {manifest.id} ({manifest.objects['data']})"


def read_back(
    repository: Repository,
    manifest: Manifest,
    transfer: StorageSettings,
    feed: Callable[[bytes], object],
    on_progress: Callable[[int], None] | None = None,
) -> tuple[Opened, str]:
    """Hand every plaintext piece of the data object to feed; what was read, and its SHA-256.

    The caller checks both hashes against the manifest (repo.integrity.check_hashes) once feed
    has taken the last piece: only then is what it received known to be the backup.
    """
    opened = Opened(
        data_blocks(repository.storage, manifest, transfer),
        repository.keyring,
        object_name(manifest),
    )
    dump_hash = hashlib.sha256()
    for chunk in opened.chunks():
        dump_hash.update(chunk)
        if on_progress is not None:
            on_progress(len(chunk))
        feed(chunk)
    return opened, dump_hash.hexdigest()
