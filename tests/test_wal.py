"""WAL archiving: wal-push and wal-fetch on real segments, and their exit codes."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import run
from tests.helpers import flip_byte, get_object, put_object
from tests.services import Cluster


@pytest.fixture
def wal_cluster():
    cluster = Cluster("wal", {"wal_level": "replica"}).start()
    yield cluster
    cluster.destroy()


def test_a_real_segment_round_trips_and_is_never_overwritten(
    wal_cluster: Cluster, env: dict[str, str], s3, bucket, tmp_path: Path
) -> None:
    # archive_command itself is exercised in test_pitr; here a real segment from pg_wal.
    wal_cluster.execute("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    ((segment,),) = wal_cluster.execute("SELECT pg_walfile_name(pg_switch_wal())")
    original = tmp_path / segment
    shutil.copy(wal_cluster.data / "pg_wal" / segment, original)
    run(env, "wal-push", str(original))
    key = f"backups/wal/main/00000001/{segment}.pfe"
    stored = get_object(s3, bucket, key)
    assert len(stored) < 16 * 1024 * 1024 // 4  # compressed

    out = tmp_path / "RECOVERYXLOG"
    run(env, "wal-fetch", segment, str(out))
    assert out.read_bytes() == original.read_bytes()

    run(env, "wal-push", str(original))  # the same bytes again: fine (PostgreSQL retries)
    original.write_bytes(b"\0" * (16 * 1024 * 1024))
    clash = run(env, "wal-push", str(original), check=False)
    assert clash.returncode == 5 and "already archived with different contents" in clash.stderr
    assert get_object(s3, bucket, key) == stored


def test_wal_fetch_exit_codes_tell_postgresql_what_happened(
    env: dict[str, str], s3, bucket, tmp_path: Path
) -> None:
    segment = tmp_path / "000000010000000000000003"
    segment.write_bytes(os.urandom(1024))
    run(env, "wal-push", str(segment))
    missing = run(env, "wal-fetch", "000000010000000000000004", str(tmp_path / "x"), check=False)
    assert (missing.returncode, missing.stderr) == (1, "")
    key = "backups/wal/main/00000001/000000010000000000000003.pfe"
    data = get_object(s3, bucket, key)
    put_object(s3, bucket, key, flip_byte(data, 100))
    corrupt = run(env, "wal-fetch", segment.name, str(tmp_path / "y"), check=False)
    assert corrupt.returncode == 126 and "failed authentication" in corrupt.stderr
    assert not (tmp_path / "y").exists()
    bad = run(env, "wal-push", str(tmp_path / "not-wal"), check=False)
    assert bad.returncode == 2
    shutil.copy(segment, tmp_path / "not-wal")
    bad = run(env, "wal-push", str(tmp_path / "not-wal"), check=False)
    assert bad.returncode == 2 and "is not a WAL file name" in bad.stderr


def test_wal_fetch_prefetches_the_next_segments(
    env: dict[str, str], s3, bucket, tmp_path: Path
) -> None:
    names = [f"0000000100000000000000{n:02X}" for n in range(0x10, 0x16)]
    for name in names:
        (tmp_path / name).write_bytes(name.encode() * 1000)
        run(env, "wal-push", str(tmp_path / name))
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    env = {**env, "WAL_PREFETCH": "3"}
    run(env, "wal-fetch", names[0], str(pg_wal / "RECOVERYXLOG"))
    folder = pg_wal / ".permafrost-prefetch"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all((folder / n).exists() for n in names[1:4]):
            break
        time.sleep(0.1)
    assert all((folder / n).exists() for n in names[1:4]), list(folder.iterdir())
    # The next fetch is served from the prefetched file, even with the bucket unreachable.
    offline = {**env, "S3_ENDPOINT_URL": "http://127.0.0.1:9", "S3_MAX_ATTEMPTS": "1"}
    run(offline, "wal-fetch", names[1], str(pg_wal / "RECOVERYXLOG"))
    assert (pg_wal / "RECOVERYXLOG").read_bytes() == names[1].encode() * 1000
    assert not (folder / names[1]).exists()
