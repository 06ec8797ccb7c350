"""Bringing a backup's dump to local disk, checked, before anything touches a target.

The object is downloaded in parallel, its size and both SHA-256s and every chunk's tag are
checked, and the plaintext lands in a temporary file so that `pg_restore -j` can read it in
parallel. Free space is checked first; a full disk midway is reported as such.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from permafrost.config.settings import StorageSettings
from permafrost.errors import InsufficientSpace
from permafrost.repo.config import Repository
from permafrost.repo.integrity import check_data_object, check_hashes
from permafrost.repo.manifest import Manifest
from permafrost.repo.reader import read_back
from permafrost.text import human_bytes

MARGIN = 64 * 1024 * 1024


def temp_dir(configured: str | None) -> Path:
    """Where a dump is downloaded to: RESTORE_TMPDIR, else the system's temporary directory."""
    return Path(configured) if configured else Path(tempfile.gettempdir())


def check_space(directory: Path, manifest: Manifest) -> None:
    needed = manifest.dump_bytes + MARGIN
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise InsufficientSpace(
            f"{directory} has {human_bytes(free)} free, and restoring {manifest.id} needs "
            f"{human_bytes(needed)} for its dump: free some space or set RESTORE_TMPDIR"
        )


def fetch_dump(
    repository: Repository,
    transfer: StorageSettings,
    manifest: Manifest,
    directory: Path,
    on_progress: Callable[[int], None],
) -> Path:
    """The verified dump in a temporary file in directory; the caller removes it."""
    check_space(directory, manifest)
    check_data_object(repository.storage, manifest)
    fd, name = tempfile.mkstemp(prefix=f"permafrost-{manifest.id}-", suffix=".dump", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            opened, dump_sha = read_back(repository, manifest, transfer, out.write, on_progress)
        check_hashes(manifest, opened.stored_sha256, dump_sha)
    except OSError as exc:
        path.unlink(missing_ok=True)
        # ENOSPC: the disk is full; EDQUOT: a quota; EFBIG: a file size limit (ulimit -f).
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise InsufficientSpace(
                f"{directory} filled up while writing the dump of "
                f"{manifest.id}: free some space or set RESTORE_TMPDIR"
            ) from None
        raise
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
