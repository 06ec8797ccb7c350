"""Incremental base backups (PostgreSQL 17+): chains of a full and its incrementals.

One PostgreSQL 18 server for the module, with summarize_wal on (a refusal test turns it off and
back on); PostgreSQL 15 (the session's) for the refusal of servers before 17.
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


@pytest.fixture(scope="module")
def pg18() -> Iterator[Cluster]:
    cluster = Cluster("pg18inc", {**SETTINGS, "summarize_wal": "on"}, bin_dir=server_bin(18))
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def source18(pg18: Cluster) -> Iterator[str]:
    name = pg18.create_database(unique("inc"))
    pg18.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);"
        "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g",
        name,
    )
    yield name
    pg18.drop_database(name)


@pytest.fixture
def env18(
    s3: S3Server,
    bucket: str,
    pg: Cluster,
    pg18: Cluster,
    source18: str,
    metadata_db: str,
    tmp_path: Path,
) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "METADATA_DATABASE_URL": pg.url(metadata_db),
        "DATABASE_URL": pg18.url(source18),
        "PG_BIN_DIRS": str(client_bin(18)),
        "CLUSTER_NAME": "inc",
        **bucket_env(s3, bucket),
    }


def test_it_stores_a_full_base_backups_backup_manifest_and_names_it_its_own_chain(
    env18: dict[str, str], s3: S3Server, bucket: str
) -> None:
    made = loads(run(env18, "backup", "--kind", "base", "--json").stdout)
    assert made["incremental"] is False
    assert made["parent_id"] is None
    assert made["chain_full_id"] == made["id"]
    assert made["physical"]["changed_bytes"] > 1_000_000  # the whole cluster's files
    stored = objects(s3, bucket, f"backups/base/inc/{made['id']}/")
    assert f"backups/base/inc/{made['id']}/backup_manifest.pfe" in stored
    listed = loads(run(env18, "list", "--json").stdout)
    row = next(b for b in listed if b["id"] == made["id"])
    assert row["chain_full_id"] == made["id"] and row["incremental"] is False
