"""WAL archiving: push one file to the bucket, fetch one back, prefetch those that follow.

`wal-push` runs as PostgreSQL's archive_command: it must be idempotent (PostgreSQL retries a
file after a crash, and pushing the same bytes again succeeds) and refuse to overwrite (a file
of the same name with other bytes is an error, loudly, because two servers may be writing to
one archive). `wal-fetch` runs as restore_command: a file that is not in the archive is the
normal end of recovery, so it exits 1 without a word.

Not yet wired into the command line: the PITR issue does that.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import zstandard

from permafrost import layout
from permafrost.errors import IntegrityError, NotFound, StorageError, UsageError, WrongKey
from permafrost.repo import crypto
from permafrost.repo.config import Repository
from permafrost.repo.pipeline import open_bytes
from permafrost.storage.base import Storage, VerifiedPut
from permafrost.wal import names as walnames

WAL_COMPRESSION_LEVEL = 1  # a segment must be archived quickly; level 1 is ~3x zstd's -3 speed


@dataclass(frozen=True)
class Pushed:
    name: str
    key: str
    plain_bytes: int
    stored_bytes: int
    already_there: bool
    sealed_sha256: str = ""  # of the bytes this push sent (empty when it found them there)
    verified: bool = False  # the provider confirmed it stored these bytes (VerifiedPut)


def wal_key(repo: Repository, cluster: str, name: str) -> str:
    timeline = walnames.timeline_of(name)
    if timeline is None:
        raise UsageError(f"{name!r} is not a WAL file name (segment, .history, .backup, .partial)")
    return layout.wal_key(repo.prefix, cluster, timeline, name)


def push(repo: Repository, cluster: str, path: Path) -> Pushed:
    return push_data(repo, cluster, path.name, path.read_bytes())


def push_data(repo: Repository, cluster: str, name: str, data: bytes) -> Pushed:
    key = wal_key(repo, cluster, name)
    sealed = seal(repo.key, data)
    try:
        verified = _put(repo.storage, key, sealed)
    except StorageError as exc:
        if "already exists" not in str(exc):
            raise
        _same_or_refuse(repo, key, name, data, sealed)
        return Pushed(name, key, len(data), len(sealed), already_there=True)
    digest = "" if verified else hashlib.sha256(sealed).hexdigest()
    return Pushed(name, key, len(data), len(sealed), False, digest, verified)


def _put(storage: Storage, key: str, sealed: bytes) -> bool:
    """Store a new object; True when the provider confirmed the bytes it stored (VerifiedPut:
    S3's Content-MD5 and ETag), False when only a read-back can tell."""
    if isinstance(storage, VerifiedPut):
        return storage.put_verified(key, sealed, if_absent=True)
    storage.put(key, sealed, if_absent=True)
    return False


def check_stored(repo: Repository, pushed: Pushed) -> int:
    """The stored object's size, once it is known to hold what the push sent: confirmed by the
    provider on the way in (no request), compared when found there already (then only its size
    is read), or else read back and compared."""
    if pushed.verified:
        return pushed.stored_bytes
    return read_back(repo, pushed)


def read_back(repo: Repository, pushed: Pushed) -> int:
    """The stored object's size, after checking that it holds what the push sent (a push that
    found the object there has compared its contents already: then only its size is read)."""
    if pushed.already_there:
        return repo.storage.head(pushed.key).size
    stored = repo.storage.get(pushed.key)
    if hashlib.sha256(stored).hexdigest() != pushed.sealed_sha256:
        raise IntegrityError(
            f"{pushed.name} read back from the bucket differs from what was written: the "
            "bucket or a proxy changed it; it is not acknowledged, and the next push retries"
        )
    return len(stored)


def seal(key: crypto.WriteKey, data: bytes) -> bytes:
    compressed = zstandard.ZstdCompressor(level=WAL_COMPRESSION_LEVEL).compress(data)
    return crypto.encrypt_bytes(key, compressed, compressed=True)


log = logging.getLogger(__name__)
_DIFFERENT = (
    "{} is already archived with different contents: another server may be archiving into "
    "this cluster's folder (check CLUSTER_NAME); nothing was overwritten"
)


def _same_or_refuse(repo: Repository, key: str, name: str, data: bytes, sealed: bytes) -> None:
    stored = repo.storage.get(key)
    try:
        archived = open_bytes(repo.keyring, stored)
    except WrongKey:
        # A backup host with only the public key (or without kms:Decrypt) cannot open what it
        # archived. The same bytes seal to the same length (zstd is deterministic, the wrap's
        # size fixed), so a retry is accepted; another server's WAL is refused by its length.
        if len(stored) != len(sealed):
            raise IntegrityError(_DIFFERENT.format(name)) from None
        log.warning("%s is already archived; this host's key cannot open it to compare", name)
        return
    if hashlib.sha256(archived).digest() != hashlib.sha256(data).digest():
        raise IntegrityError(_DIFFERENT.format(name))


def fetch(repo: Repository, cluster: str, name: str) -> bytes | None:
    """The file's original bytes, or None when the archive does not have it."""
    try:
        sealed = repo.storage.get(wal_key(repo, cluster, name))
    except NotFound:
        return None
    return open_bytes(repo.keyring, sealed)
