"""wal-push's record path: a segment the pusher stored is acknowledged from its record alone.

The pusher records what stat said of the file it read (device, inode, size, mtime_ns,
ctime_ns); `permafrost wal-push` acknowledges a file whose stat is the same without hashing it
or asking the bucket. Here the bucket does not answer at all, so only the record can say yes,
and every way the file can differ from what was stored must fall through to the full path
(which then fails: PostgreSQL keeps the segment and retries).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from permafrost.cli import exit_code
from permafrost.errors import StorageUnavailable
from permafrost.wal import ahead, quick
from permafrost.wal.names import Segment
from tests.conftest import KEY, run

NAME = Segment(1, 0x42).name()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """wal-push's settings, pointing at a bucket that does not answer."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "STORAGE_URL": "s3://none/x",
        "S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "S3_MAX_ATTEMPTS": "1",
        "BACKUP_ENCRYPTION_KEY": KEY,
        "S3_ACCESS_KEY_ID": "x",
        "S3_SECRET_ACCESS_KEY": "y",
        "WAL_PUSH_AHEAD": "0",  # no pusher started: only the record answers
    }


def stored_by_pusher(pg_wal: Path, env: dict[str, str], stored_at: float | None = None) -> Path:
    """A segment in pg_wal whose marker the pusher wrote after storing it (as store_segment
    does: the bytes and the stat read by read_stable)."""
    (pg_wal / "archive_status").mkdir(parents=True, exist_ok=True)
    path = pg_wal / NAME
    path.write_bytes(os.urandom(64 * 1024))
    os.utime(path, ns=(time.time_ns() - 10**9, time.time_ns() - 10**9))
    (pg_wal / "archive_status" / f"{NAME}.ready").touch()
    data, st = ahead.read_stable(path)
    assert st is not None
    marker = ahead.Marker(
        NAME,
        hashlib.sha256(data).hexdigest(),
        len(data),
        f"x/wal/main/00000001/{NAME}.pfe",
        len(data) + 100,
        quick.fingerprint(None, None, env),
        quick.stat_of(st),
        time.time() if stored_at is None else stored_at,
    )
    (pg_wal / quick.FOLDER).mkdir(exist_ok=True)
    ahead.write_marker(pg_wal / quick.FOLDER, marker)
    return path


def push(env: dict[str, str], path: Path) -> int:
    return run(env, "wal-push", str(path), check=False).returncode


UNREACHABLE = exit_code(StorageUnavailable("the bucket"))  # the full path tried the bucket


def test_it_acknowledges_an_unchanged_segment_from_the_record(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = stored_by_pusher(tmp_path / "pg_wal", env)
    assert push(env, path) == 0
    fingerprint = quick.fingerprint(None, None, env)
    marker = ahead.read_marker(tmp_path / "pg_wal" / quick.FOLDER, NAME, fingerprint)
    assert marker is not None and marker.stat is not None  # the slow path reads it too


def test_it_does_not_acknowledge_a_segment_whose_bytes_changed_in_place(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = stored_by_pusher(tmp_path / "pg_wal", env)
    before = path.stat()
    with path.open("r+b") as handle:  # same size, same inode, other bytes
        handle.seek(1000)
        handle.write(b"other bytes")
    # Even with its mtime set back as it was: ctime cannot be set back.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_ino == before.st_ino
    assert push(env, path) == UNREACHABLE


def test_it_does_not_acknowledge_another_file_under_the_name(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = stored_by_pusher(tmp_path / "pg_wal", env)
    other = path.with_name("other")
    other.write_bytes(path.read_bytes()[::-1])  # the same size
    os.replace(other, path)
    assert push(env, path) == UNREACHABLE


def test_it_does_not_acknowledge_a_truncated_or_grown_segment(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = stored_by_pusher(tmp_path / "pg_wal", env)
    with path.open("ab") as handle:
        handle.write(b"x")
    assert push(env, path) == UNREACHABLE


def test_it_does_not_trust_a_record_made_under_other_settings_or_long_ago(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = stored_by_pusher(tmp_path / "pg_wal", env)
    assert push({**env, "CLUSTER_NAME": "another"}, path) == UNREACHABLE
    stale = time.time() - quick.RECORD_TRUST_S - 5
    path = stored_by_pusher(tmp_path / "old" / "pg_wal", env, stored_at=stale)
    assert push(env, path) == UNREACHABLE


def test_a_damaged_record_is_not_trusted(env: dict[str, str], tmp_path: Path) -> None:
    path = stored_by_pusher(tmp_path / "pg_wal", env)
    record = ahead.marker_path(tmp_path / "pg_wal" / quick.FOLDER, NAME)
    line, rest = record.read_text().split("\n", 1)
    fields = line.split()
    fields[4] = str(int(fields[4]) + 1)  # another inode
    record.write_text(" ".join(fields) + "\n" + rest)
    assert push(env, path) == UNREACHABLE
    record.write_text("garbage\n")
    assert push(env, path) == UNREACHABLE


def test_a_file_written_just_now_is_read_once_it_can_be_told_apart(tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.write_bytes(b"fresh")
    data, st = ahead.read_stable(path)  # waits until STABLE_NS after the write, then reads
    assert data == b"fresh" and st is not None
    assert time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) >= quick.STABLE_NS
