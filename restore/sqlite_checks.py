"""A SQLite backup's checks, by the names its users know, each failing on its own damage.

    object present      the data object is in the bucket
    checksum            its size and SHA-256 are the manifest's (a flipped or missing byte)
    decryption          every chunk opens with the repository's keys (a wrong key, a forged chunk)
    decompression       the zstd stream reads to its end and gives the file the manifest hashed
    integrity_check     PRAGMA integrity_check on the restored copy (a damaged page)
    foreign_key_check   PRAGMA foreign_key_check on the restored copy
    row counts          every table holds the rows the manifest counted

Plain `verify` runs the first four, `verify --test-restore` all seven, and a restore checks the
file it is about to put in place the same way. The checks run in order; one that fails leaves
those that depend on it `skipped`, so the report names the first thing that is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from permafrost.config.settings import StorageSettings
from permafrost.errors import (
    EncryptionKeyError,
    IntegrityError,
    NotFound,
    PermafrostError,
    RowCountMismatch,
)
from permafrost.repo import crypto
from permafrost.repo.config import Repository
from permafrost.repo.manifest import Manifest
from permafrost.repo.pipeline import decompressed
from permafrost.repo.reader import data_blocks, object_name
from permafrost.sqlite import checks, snapshot
from permafrost.text import human_bytes

OnProgress = Callable[[int], None] | None


class Check(StrEnum):
    PRESENT = "object present"
    CHECKSUM = "checksum"
    DECRYPTION = "decryption"
    DECOMPRESSION = "decompression"
    INTEGRITY = "integrity_check"
    FOREIGN_KEYS = "foreign_key_check"
    ROW_COUNTS = "row counts"


QUICK = (Check.PRESENT, Check.CHECKSUM, Check.DECRYPTION, Check.DECOMPRESSION)
FULL = (*QUICK, Check.INTEGRITY, Check.FOREIGN_KEYS, Check.ROW_COUNTS)
ON_RESTORE = (*QUICK, Check.INTEGRITY, Check.ROW_COUNTS)  # foreign keys are the app's to judge


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Outcome:
    check: Check
    status: Status
    detail: str = ""


@dataclass
class Report:
    """The outcome of each check asked for, in order; the error that failed the first one."""

    backup_id: str
    outcomes: list[Outcome] = field(default_factory=list)
    error: PermafrostError | None = None

    def add(self, check: Check, status: Status, detail: str = "") -> None:
        self.outcomes.append(Outcome(check, status, detail))

    def fail(self, check: Check, error: PermafrostError) -> None:
        self.add(check, Status.FAILED, str(error))
        self.error = self.error or error

    @property
    def ok(self) -> bool:
        return self.error is None

    def skip_rest(self, wanted: tuple[Check, ...], why: str) -> None:
        done = {o.check for o in self.outcomes}
        for check in wanted:
            if check not in done:
                self.add(check, Status.SKIPPED, why)

    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(o) for o in self.outcomes]


@dataclass
class _Stream:
    """What one pass over the data object saw."""

    stored_bytes: int = 0
    stored_hash: Any = field(default_factory=hashlib.sha256)
    plain_bytes: int = 0
    plain_hash: Any = field(default_factory=hashlib.sha256)
    decryption: PermafrostError | None = None
    decompression: PermafrostError | None = None


def fetch_checked(
    repository: Repository,
    transfer: StorageSettings,
    manifest: Manifest,
    into: Path,
    report: Report,
    on_progress: OnProgress = None,
) -> bool:
    """Download, decrypt and decompress the backup into the file `into`, running the first four
    checks into report; whether they all passed (`into` then holds the backed-up file)."""
    if not _present(repository, manifest, report):
        return False
    seen = _Stream()
    with into.open("wb") as out:
        _stream(repository, transfer, manifest, seen, out.write, on_progress)
        out.flush()
        os.fsync(out.fileno())
    return _judge(manifest, seen, report)


def _present(repository: Repository, manifest: Manifest, report: Report) -> bool:
    key = manifest.objects["data"]
    try:
        size = repository.storage.head(key).size
    except NotFound:
        report.fail(Check.PRESENT, IntegrityError(f"backup {manifest.id} is missing {key}"))
        report.skip_rest(QUICK, "there is no data object")
        return False
    report.add(Check.PRESENT, Status.PASSED, f"{key}, {human_bytes(size)}")
    return True


def _stream(
    repository: Repository,
    transfer: StorageSettings,
    manifest: Manifest,
    seen: _Stream,
    write: Callable[[bytes], object],
    on_progress: OnProgress,
) -> None:
    blocks = iter(data_blocks(repository.storage, manifest, transfer))
    plain = _decrypted(blocks, crypto.Decryptor(repository.keyring, object_name(manifest)), seen)
    try:
        for piece in decompressed(plain):
            seen.plain_bytes += len(piece)
            seen.plain_hash.update(piece)
            write(piece)
            if on_progress is not None:
                on_progress(len(piece))
    except IntegrityError as exc:  # zstd's complaint (a decryption failure ends `plain` quietly)
        seen.decompression = exc
    for block in blocks:  # whatever was not read yet still counts towards the checksum
        _count(seen, block)


def _decrypted(
    blocks: Iterator[bytes], decryptor: crypto.Decryptor, seen: _Stream
) -> Iterator[bytes]:
    try:
        for block in blocks:
            _count(seen, block)
            if out := decryptor.update(block):
                yield out
        if out := decryptor.finish():
            yield out
    except (IntegrityError, EncryptionKeyError) as exc:
        seen.decryption = exc


def _count(seen: _Stream, block: bytes) -> None:
    seen.stored_bytes += len(block)
    seen.stored_hash.update(block)


def _judge(manifest: Manifest, seen: _Stream, report: Report) -> bool:
    stored_ok = (seen.stored_bytes, seen.stored_hash.hexdigest()) == (
        manifest.stored_bytes,
        manifest.stored_sha256,
    )
    if not stored_ok:
        report.fail(
            Check.CHECKSUM,
            IntegrityError(
                f"the stored bytes of {manifest.id} ({seen.stored_bytes} bytes) do not match the "
                f"manifest's size ({manifest.stored_bytes}) and SHA-256: changed or cut short"
            ),
        )
        report.skip_rest(QUICK, "the stored bytes are not the ones written")
        return False
    report.add(Check.CHECKSUM, Status.PASSED, "size and SHA-256 match the manifest")
    if seen.decryption is not None:
        report.fail(Check.DECRYPTION, seen.decryption)
        report.skip_rest(QUICK, "nothing to decompress")
        return False
    report.add(Check.DECRYPTION, Status.PASSED, "every chunk's tag checks")
    return _judge_plain(manifest, seen, report)


def _judge_plain(manifest: Manifest, seen: _Stream, report: Report) -> bool:
    error = seen.decompression
    if error is None and (seen.plain_bytes, seen.plain_hash.hexdigest()) != (
        manifest.dump_bytes,
        manifest.dump_sha256,
    ):
        error = IntegrityError(
            f"the decompressed file of {manifest.id} is {seen.plain_bytes} bytes and not the one "
            f"backed up ({manifest.dump_bytes} bytes, its SHA-256): the stream is cut short"
        )
    if error is not None:
        report.fail(Check.DECOMPRESSION, error)
        return False
    report.add(
        Check.DECOMPRESSION, Status.PASSED, f"{human_bytes(seen.plain_bytes)}, SHA-256 matches"
    )
    return True


def check_file(path: Path, manifest: Manifest, wanted: tuple[Check, ...], report: Report) -> None:
    """The checks on a restored copy that `wanted` names, each run whatever the others found."""
    with contextlib.closing(snapshot.open_private(path)) as conn:
        if Check.INTEGRITY in wanted:
            _problems(report, Check.INTEGRITY, checks.integrity_problems(conn), manifest.id)
        if Check.FOREIGN_KEYS in wanted:
            _problems(report, Check.FOREIGN_KEYS, checks.foreign_key_problems(conn), manifest.id)
        if Check.ROW_COUNTS in wanted:
            _row_counts(report, conn, manifest)


def _problems(report: Report, check: Check, problems: list[str], backup_id: str) -> None:
    if problems:
        report.fail(check, IntegrityError(f"{check} of {backup_id}: {checks.summary(problems)}"))
    else:
        report.add(check, Status.PASSED, "ok")


def _row_counts(report: Report, conn: sqlite3.Connection, manifest: Manifest) -> None:
    expected = {c.table: c.rows for c in manifest.row_counts}
    try:
        found = snapshot.row_counts(conn)
    except sqlite3.DatabaseError as exc:  # a file too damaged to count
        report.fail(Check.ROW_COUNTS, IntegrityError(f"the tables cannot be counted: {exc}"))
        return
    wrong = [
        f"{table}: {rows} expected, {found.get(table, 'missing')} restored"
        for table, rows in sorted(expected.items())
        if found.get(table) != rows
    ]
    if wrong:
        report.fail(
            Check.ROW_COUNTS, RowCountMismatch(f"row counts of {manifest.id}: {'; '.join(wrong)}")
        )
    else:
        report.add(Check.ROW_COUNTS, Status.PASSED, f"{len(expected)} tables match the manifest")
