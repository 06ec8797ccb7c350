"""Restoring from a copy: `--from NAME`, and the fallback when the primary is down or damaged.

The copies are made by `permafrost copy --all-missing`, as after an outage.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import run
from tests.helpers import flip_byte, get_object, loads, objects, put_object, table_digest
from tests.services import Cluster, S3Server


def catch_up(env: dict[str, str]) -> None:
    """Every backup (and WAL) the copy lacks, copied and verified there."""
    out = run(env, "copy", "--all-missing").stdout
    assert "dr: " in out and "copied and verified" in out, out


def copy_env(
    s3: S3Server, copy_bucket: str, name: str = "dr", prefix: str = "backups"
) -> dict[str, str]:
    return {
        "COPY_STORAGE_URLS": f"{name}=s3://{copy_bucket}/{prefix}",
        "COPY_1_S3_ENDPOINT_URL": s3.url,
        "COPY_1_S3_REGION": "us-east-1",
        "COPY_1_S3_ACCESS_KEY_ID": "testing",
        "COPY_1_S3_SECRET_ACCESS_KEY": "testing",
        "COPY_1_S3_PROVIDER": "generic",
    }


@pytest.fixture
def copy_bucket(s3: S3Server) -> str:
    name = f"pf-copy-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def primary() -> Iterator[S3Server]:
    """The primary on an S3 server of its own, so that a test can stop it."""
    server = S3Server()
    yield server
    if server.proc.poll() is None:
        server.stop()


@pytest.fixture
def target(pg: Cluster, source_db: str) -> Iterator[str]:
    name = f"{source_db}_t"
    yield name
    pg.drop_database(name)


def databases(pg: Cluster) -> set[str]:
    return {row[0] for row in pg.execute("SELECT datname FROM pg_database")}


@pytest.fixture
def down_env(env, s3, copy_bucket, primary) -> dict[str, str]:
    """A backup on its own primary, copied; then the primary's server stopped."""
    bucket = f"pf-{uuid.uuid4().hex[:10]}"
    primary.client().create_bucket(Bucket=bucket)
    env = {
        **env,
        "STORAGE_URL": f"s3://{bucket}/backups",
        "S3_ENDPOINT_URL": primary.url,
        "S3_MAX_ATTEMPTS": "2",
        **copy_env(s3, copy_bucket),
    }
    run(env, "backup")
    catch_up(env)
    primary.stop()
    return env


def test_it_restores_from_the_copy_when_the_primary_is_down(
    down_env, pg, source_db, target
) -> None:
    result = run(down_env, "restore", "latest", "--target-db", target)
    assert table_digest(pg, target) == table_digest(pg, source_db)
    said = [line for line in result.stderr.splitlines() if "reading from copy dr" in line]
    assert len(said) == 1 and "the primary repository" in said[0] and "instead" in said[0]
    assert "from copy dr into" in result.stdout
    assert not [d for d in databases(pg) if "_pfrestore_" in d]


def test_it_restores_from_the_copy_with_the_catalog_down_too(
    down_env, pg, source_db, target, refused
) -> None:
    gone = {**down_env, "METADATA_DATABASE_URL": f"postgresql://x@127.0.0.1:{refused}/x"}
    result = run(gone, "restore", "latest", "--target-db", target)
    assert table_digest(pg, target) == table_digest(pg, source_db)
    assert "reading from copy dr" in result.stderr


@pytest.fixture
def copied(env, s3, bucket, copy_bucket) -> tuple[dict[str, str], dict]:
    # Under another prefix: the catalog's keys (the primary's) are rebased onto the copy's.
    env = {**env, **copy_env(s3, copy_bucket, prefix="offsite/pf")}
    backup = loads(run(env, "backup", "--json").stdout)
    catch_up(env)
    return env, loads(run(env, "show", backup["id"], "--json").stdout)


@pytest.mark.parametrize("jobs", ["1", "2"], ids=["streamed", "through-a-file"])
def test_a_corrupt_object_on_the_primary_is_restored_from_the_copy(
    copied, s3, bucket, pg, source_db, target, jobs
) -> None:
    env, backup = copied
    data_key = backup["manifest"]["objects"]["data"]
    data = get_object(s3, bucket, data_key)
    put_object(s3, bucket, data_key, flip_byte(data, len(data) - 40))
    result = run(env, "restore", backup["id"], "--target-db", target, "--jobs", jobs)
    assert table_digest(pg, target) == table_digest(pg, source_db)
    line = next(x for x in result.stderr.splitlines() if "reading from copy dr" in x)
    assert re.search(r"failed: .*(authentication|SHA-256|truncat)", line), line
    assert not [d for d in databases(pg) if "_pfrestore_" in d]


@pytest.mark.parametrize("named", [True, False], ids=["from", "fallback"])
def test_an_emptied_primary_restores_from_the_copy(
    copied, s3, bucket, pg, source_db, target, named
) -> None:
    env, backup = copied
    for key in objects(s3, bucket):  # a leaked key deleted it all: only the copy can answer
        s3.client().delete_object(Bucket=bucket, Key=key)
    asked = ["--from", "dr"] if named else []
    result = run(env, "restore", backup["id"], "--target-db", target, *asked)
    assert table_digest(pg, target) == table_digest(pg, source_db)
    assert "reading from copy dr" in result.stderr


def test_from_an_unknown_copy_is_one_clear_line(copied, target, pg) -> None:
    env, backup = copied
    result = run(env, "restore", backup["id"], "--target-db", target, "--from", "nope", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "permafrost: error: no copy destination named 'nope' (COPY_STORAGE_URLS: dr)"
    ]
    assert target not in databases(pg)


def test_verify_reads_a_damaged_backup_from_the_copy_and_records_both(copied, s3, bucket) -> None:
    env, backup = copied
    data_key = backup["manifest"]["objects"]["data"]
    data = get_object(s3, bucket, data_key)
    put_object(s3, bucket, data_key, data[:-100])  # truncated on the primary
    result = run(env, "verify", backup["id"])
    assert f"backup {backup['id']} verified (from copy dr)" in result.stdout
    assert "the primary repository" in result.stderr and "reading from copy dr" in result.stderr
    as_json = loads(run(env, "verify", backup["id"], "--json", "--from", "dr").stdout)
    assert as_json["status"] == "verified" and as_json["read_from"] == "dr"
    unknown = run(env, "verify", backup["id"], "--from", "nope", check=False)
    assert unknown.returncode == 2 and "no copy destination named 'nope'" in unknown.stderr


def test_a_stream_cut_off_midway_restarts_its_staging_database_from_the_copy(
    copied, s3, bucket, pg, source_db, target
) -> None:
    env, _ = copied
    pg.execute(  # about 4 MiB stored: several 1 MiB chunks, the last one damaged
        "CREATE TABLE noise AS SELECT g, md5(g::text) || md5((g * 7)::text) AS m"
        " FROM generate_series(1, 150000) g",
        source_db,
    )
    backup = loads(run(env, "backup", "--json").stdout)
    run(env, "copy", backup["id"])
    shown = loads(run(env, "show", backup["id"], "--json").stdout)
    data_key = shown["manifest"]["objects"]["data"]
    data = get_object(s3, bucket, data_key)
    assert len(data) > 2 * 1024 * 1024
    put_object(s3, bucket, data_key, flip_byte(data, len(data) - 100))
    result = run(env, "restore", backup["id"], "--target-db", target, "--jobs", "1")
    assert table_digest(pg, target) == table_digest(pg, source_db)
    assert "reading from copy dr" in result.stderr
    assert not [d for d in databases(pg) if "_pfrestore_" in d]
