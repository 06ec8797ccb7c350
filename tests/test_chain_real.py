"""A real chain on PostgreSQL 18: pinned in part, grown from keep/, restored across the split,
unpinned whole, and deleted with its dependants.

One small PostgreSQL 18 server for the module (summarize_wal on); the synthesized chains of
tests/test_chain_bucket.py cover the rest without a server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import bucket_env, run, unique
from tests.helpers import loads, objects
from tests.majors import SETTINGS, client_bin, server_bin
from tests.services import Cluster, S3Server
from tests.test_incremental import restore_chain


@pytest.fixture(scope="module")
def pg18() -> Iterator[Cluster]:
    cluster = Cluster("pg18keep", {**SETTINGS, "summarize_wal": "on"}, bin_dir=server_bin(18))
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def env18(
    s3: S3Server, bucket: str, pg: Cluster, pg18: Cluster, metadata_db: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    source = pg18.create_database(unique("keep"))
    pg18.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g", source)
    yield {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "METADATA_DATABASE_URL": pg.url(metadata_db),
        "DATABASE_URL": pg18.url(source),
        "PG_BIN_DIRS": str(client_bin(18)),
        "CLUSTER_NAME": "keep18",
        **bucket_env(s3, bucket),
    }
    pg18.drop_database(source)


def backup(env: dict[str, str], kind: str) -> str:
    return str(loads(run(env, "backup", "--kind", kind, "--json").stdout)["id"])


def tier_of(s3: S3Server, bucket: str, backup_id: str) -> str:
    [key] = [k for k in objects(s3, bucket, "backups/") if k.endswith(f"{backup_id}/manifest.json")]
    return key.split("/")[1]


def test_a_real_chain_pinned_in_part_restores_across_keep_and_base_and_deletes_whole(
    env18: dict[str, str], s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    full = backup(env18, "base")
    first = backup(env18, "incremental")
    pinned = run(env18, "pin", first, "--reason", "release 4.2")
    assert f"pinned its chain too: the backup it restores from ({full})" in pinned.stdout
    second = backup(env18, "incremental")  # its parent is read from keep/
    assert [tier_of(s3, bucket, b) for b in (full, first, second)] == ["keep", "keep", "base"]
    listed = {b["id"]: b for b in loads(run(env18, "list", "--json").stdout)}
    assert listed[second]["parent_id"] == first and listed[second]["chain_full_id"] == full
    restore_chain(env18, [full, first, second], tmp_path)  # each member found by id
    refused = run(env18, "delete", second, "--apply", check=False)
    assert refused.returncode == 2 and "pinned" in refused.stderr
    unpinned = run(env18, "unpin", second)  # not pinned itself: its chain's pinned members are
    assert f"unpinned backup {first} of keep18 (in the chain of {second})" in unpinned.stdout
    assert [tier_of(s3, bucket, b) for b in (full, first, second)] == ["base"] * 3
    run(env18, "delete", first, "--apply")
    left = [b["id"] for b in loads(run(env18, "list", "--json").stdout)]
    assert left == [full]
