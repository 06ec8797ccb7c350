"""One backup copied to a copy destination: every object its manifest lists, then the manifest.

The manifest is copied byte for byte (its signature stays valid: the same keys check it), last,
as the backup's commit point there too: a copy interrupted before it is an orphan at the
destination that the next copy completes (objects already there are read back, not sent again)
and the copy's retention removes if it is never completed. Keys are the primary's under the
copy's prefix (layout.rebase): a copy's layout is the primary's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from permafrost import layout
from permafrost.copies.objects import Copied, Method, Source, copy_object
from permafrost.copies.target import CopyTarget
from permafrost.errors import IntegrityError
from permafrost.repo import crypto
from permafrost.repo.manifest import Manifest, parse
from permafrost.repo.reader import located


@dataclass
class BackupCopy:
    """What copying one backup did."""

    backup_id: str
    manifest_key: str  # at the destination
    stored_bytes: int = 0
    seconds: float = 0.0
    objects: list[Copied] = field(default_factory=list)

    @property
    def method(self) -> Method:
        """How its bytes got there: found when nothing was sent, else the way any was sent."""
        sent = [c.method for c in self.objects if c.method is not Method.FOUND]
        return sent[0] if sent else Method.FOUND


def recorded_sha256(manifest: Manifest, name: str) -> str | None:
    """The SHA-256 of an object's stored bytes as the signed manifest records it (None: the
    manifest records only the plaintext's, as for a base backup's backup_manifest)."""
    if name == "data":
        return manifest.stored_sha256
    if name == "globals":
        value = manifest.globals.get("stored_sha256")
        return str(value) if value else None
    return None


def copy_backup(
    source: Source,
    prefix: str,
    keyring: crypto.Keyring,
    manifest_key: str,
    target: CopyTarget,
) -> BackupCopy:
    """Copy the backup whose manifest is at `manifest_key` on the primary to the target."""
    started = time.monotonic()
    raw = source.storage.get(manifest_key)
    manifest = located(parse(raw, keyring, manifest_key), manifest_key)
    result = BackupCopy(manifest.id, layout.rebase(manifest_key, prefix, target.prefix))
    transfer = target.destination.storage
    for name, key in sorted(manifest.objects.items()):
        there = layout.rebase(key, prefix, target.prefix)
        copied = copy_object(
            source, key, target.storage, there, transfer, recorded_sha256(manifest, name)
        )
        result.objects.append(copied)
        result.stored_bytes += copied.size
    target.storage.put(result.manifest_key, raw)
    if target.storage.get(result.manifest_key) != raw:
        raise IntegrityError(
            f"{result.manifest_key} read back from the copy is not what was written"
        )
    result.seconds = time.monotonic() - started
    return result
