"""Point-in-time recovery from a copy: WAL segments that fail their check on the primary come
from the copy one by one (wal-fetch), and with the primary down the whole recovery does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run
from tests.helpers import flip_byte, get_object, loads, objects, put_object
from tests.services import Cluster, S3Server
from tests.test_copy_restore import catch_up, copy_env
from tests.test_pitr import Archiving


class Copied:
    def __init__(self, primary: S3Server, archiving: Archiving, env: dict[str, str]) -> None:
        self.primary, self.archiving, self.env = primary, archiving, env


@pytest.fixture(scope="module")
def copied(s3: S3Server, pg: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Copied]:
    primary = S3Server()
    metadata = pg.create_database(f"meta_copypitr_{uuid.uuid4().hex[:8]}")
    archiving = Archiving(primary, pg.url(metadata))
    copy_bucket = f"pf-copy-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=copy_bucket)
    env = archiving.env(
        tmp_path_factory.mktemp("copypitr"), S3_MAX_ATTEMPTS="2", **copy_env(s3, copy_bucket)
    )
    src = archiving.cluster
    db = src.create_database("shop")
    src.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)", db)
    src.execute("INSERT INTO t (v) SELECT 'A' || g FROM generate_series(1, 100) g", db)
    loads(run(env, "backup", "--kind", "base", "--json").stdout)
    src.execute("INSERT INTO t (v) SELECT 'B' || g FROM generate_series(1, 50) g", db)
    archiving.switch_and_wait()
    catch_up(env)
    yield Copied(primary, archiving, env)
    archiving.cluster.destroy()
    if primary.proc.poll() is None:
        primary.stop()
    pg.drop_database(metadata)


def recover(copied: Copied, pg: Cluster) -> tuple[list[str], str]:
    into = f"pitr_copy_{uuid.uuid4().hex[:6]}"
    out = run(
        copied.env, "pitr", "--latest", "--target-db", into, "--target-url", pg.url("postgres")
    )
    assert "point-in-time recovery complete" in out.stdout
    got = [r[0] for r in pg.execute("SELECT v FROM t ORDER BY id", into)]
    pg.drop_database(into)
    return got, out.stdout + out.stderr


def test_wal_segments_that_fail_their_check_come_from_the_copy(copied: Copied, pg) -> None:
    bucket = copied.archiving.bucket
    wal = [k for k in objects(copied.primary, bucket, "backups/wal/") if k.endswith(".pfe")]
    assert wal
    for key in wal:
        data = get_object(copied.primary, bucket, key)
        put_object(copied.primary, bucket, key, flip_byte(data, len(data) - 20))
    got, said = recover(copied, pg)
    assert len(got) == 150 and got[0] == "A1" and got[-1] == "B50"
    assert "reading from copy dr" in said and "the primary repository" in said
    assert said.count("recover cluster") == 1  # segment by segment: the chain came from the primary


def test_pitr_recovers_from_the_copy_when_the_primary_is_down(copied: Copied, pg) -> None:
    copied.primary.stop()
    got, said = recover(copied, pg)
    assert len(got) == 150 and got[-1] == "B50"
    line = next(x for x in said.splitlines() if "reading from copy dr" in x)
    assert "the primary repository" in line and "instead" in line


def test_pitr_from_the_copy_with_the_catalog_down_too(copied: Copied, pg, refused) -> None:
    if copied.primary.proc.poll() is None:
        copied.primary.stop()
    gone = f"postgresql://x@127.0.0.1:{refused}/x"
    got, said = recover(
        Copied(copied.primary, copied.archiving, {**copied.env, "METADATA_DATABASE_URL": gone}), pg
    )
    assert len(got) == 150 and got[-1] == "B50"
    assert "reading from copy dr" in said


def test_pitr_from_an_unknown_copy_is_one_clear_line(copied: Copied, tmp_path: Path) -> None:
    result = run(
        copied.env,
        "pitr",
        "--latest",
        "--target-dir",
        str(tmp_path / "d"),
        "--from",
        "x",
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "permafrost: error: no copy destination named 'x' (COPY_STORAGE_URLS: dr)"
    ]
