"""`pitr --as-of`: a cluster recovered from base backups and WAL an attacker deleted, read back
from the versioned bucket's old versions (wal-fetch, run by PostgreSQL, reads them as of the
same moment)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run
from tests.helpers import loads, objects
from tests.services import Cluster, S3Server
from tests.test_pitr import Archiving, moment, rows


@pytest.fixture
def archiving(s3: S3Server, pg: Cluster) -> Iterator[Archiving]:
    metadata = pg.create_database(f"meta_asof_{uuid.uuid4().hex[:8]}")
    source = Archiving(s3, pg.url(metadata))
    s3.client().put_bucket_versioning(
        Bucket=source.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    yield source
    source.cluster.destroy()
    pg.drop_database(metadata)


def test_pitr_as_of_recovers_from_deleted_base_backups_and_wal(
    archiving: Archiving, pg: Cluster, s3: S3Server, tmp_path: Path
) -> None:
    src = archiving.cluster
    db = src.create_database("shop")
    src.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)", db)
    src.execute("INSERT INTO t (v) SELECT 'A' || g FROM generate_series(1, 100) g", db)
    env = archiving.env(tmp_path)
    base = loads(run(env, "backup", "--kind", "base", "--json").stdout)
    src.execute("INSERT INTO t (v) SELECT 'B' || g FROM generate_series(1, 50) g", db)
    target_time = moment()
    src.execute("INSERT INTO t (v) SELECT 'C' || g FROM generate_series(1, 25) g", db)
    archiving.switch_and_wait()
    before_the_attack = moment()

    client = s3.client()
    doomed = objects(s3, archiving.bucket, "backups/wal/") + objects(
        s3, archiving.bucket, "backups/base/"
    )
    assert any("/wal/main/" in k for k in doomed) and any(base["id"] in k for k in doomed)
    for key in doomed:
        client.delete_object(Bucket=archiving.bucket, Key=key)

    target_url = pg.url("postgres")
    gone = run(
        env, "pitr", "--latest", "--target-db", "never", "--target-url", target_url, check=False
    )
    assert gone.returncode == 3 and "no base backup" in gone.stderr

    into = f"pitr_asof_{uuid.uuid4().hex[:6]}"
    out = run(
        env,
        "pitr",
        "--target-time",
        target_time,
        "--as-of",
        before_the_attack,
        "--target-db",
        into,
        "--target-url",
        target_url,
    )
    assert "read as the bucket held them" in out.stdout
    got = rows(pg, into)
    assert len(got) == 150 and got[0] == "A1" and got[-1] == "B50"
    pg.drop_database(into)
