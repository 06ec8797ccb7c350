"""The checks that tie a backup's data object to its manifest: present, whole, and the same bytes.

Verify, restore, decrypt and pitr read a data object back; each checks it with these before
trusting a byte of it.
"""

from __future__ import annotations

from permafrost.errors import HashMismatch, IntegrityError, NotFound, Truncated
from permafrost.repo.manifest import Manifest
from permafrost.storage import Storage


def check_data_object(storage: Storage, manifest: Manifest) -> None:
    """The data object is there and has the size the manifest recorded."""
    data_key = manifest.objects["data"]
    try:
        size = storage.head(data_key).size
    except NotFound:
        raise IntegrityError(
            f"backup {manifest.id} is missing its data object {data_key}"
        ) from None
    if size != manifest.stored_bytes:
        raise Truncated(
            f"data object of {manifest.id} is {size} bytes; the manifest says "
            f"{manifest.stored_bytes}: it was truncated or replaced"
        )


def check_hashes(manifest: Manifest, stored_sha256: str, dump_sha256: str) -> None:
    """The bytes read back (stored, and the dump inside them) are the ones the manifest signed."""
    if stored_sha256 != manifest.stored_sha256:
        raise HashMismatch(f"stored bytes of {manifest.id} do not match the manifest's SHA-256")
    if dump_sha256 != manifest.dump_sha256:
        raise HashMismatch(f"the dump inside {manifest.id} does not match the manifest's SHA-256")
