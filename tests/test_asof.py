"""`--as-of`: the repository read as it was, from a versioned bucket's old object versions, so
backups an attacker deleted or overwrote come back (moto's S3 server keeps versions and delete
markers as S3 does)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from permafrost.errors import NotFound, StorageError, UsageError
from permafrost.storage.asof import as_of
from permafrost.storage.s3 import S3Storage
from tests.conftest import run, unique
from tests.helpers import loads, objects, table_digest
from tests.services import Cluster, S3Server
from tests.storage.test_contract import s3_settings


@pytest.fixture
def versioned(s3: S3Server, bucket: str) -> str:
    s3.client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


@pytest.fixture
def target(pg: Cluster):
    name = unique("asof")
    yield name
    pg.drop_database(name)


def a_moment_between() -> str:
    """Now, with a second either side: S3 keeps object times in whole seconds."""
    time.sleep(1.2)
    moment = datetime.now(UTC).isoformat(timespec="milliseconds")
    time.sleep(1.2)
    return moment


def attack(s3: S3Server, bucket: str, pg: Cluster, metadata_db: str, first: str, second: str):
    """What someone with the backup host's credentials does: delete one backup, overwrite the
    other's data and drop its manifest, delete permafrost.json, and mark the catalog's rows
    deleted."""
    client = s3.client()
    for key in objects(s3, bucket):
        if first in key or key.endswith("permafrost.json"):
            client.delete_object(Bucket=bucket, Key=key)
        elif second in key and key.endswith("data.pfe"):
            client.put_object(Bucket=bucket, Key=key, Body=b"encrypted by the attacker")
        elif second in key and key.endswith("manifest.json"):
            client.delete_object(Bucket=bucket, Key=key)
    pg.execute("UPDATE permafrost.backups SET status = 'deleted'", metadata_db)


def test_it_restores_backups_an_attacker_deleted_and_overwrote(
    env, pg, s3, versioned, source_db, metadata_db, target
) -> None:
    first = loads(run(env, "backup", "--json").stdout)["id"]
    expected = table_digest(pg, source_db)
    pg.execute("DELETE FROM billing.invoices WHERE id > 250", source_db)
    second = loads(run(env, "backup", "--json").stdout)["id"]
    moment = a_moment_between()
    attack(s3, versioned, pg, metadata_db, first, second)

    assert run(env, "list").stdout.strip() == "no backups"
    gone = run(env, "restore", first, "--target-db", target, check=False)
    assert gone.returncode == 3

    listed = run(env, "list", "--as-of", moment)
    assert listed.stdout.startswith("as of ")
    assert first in listed.stdout and second in listed.stdout
    as_json = loads(run(env, "list", "--as-of", moment, "--json").stdout)
    assert [b["id"] for b in as_json] == [second, first]

    restored = run(env, "restore", first, "--target-db", target, "--as-of", moment)
    assert f"restored backup {first} into" in restored.stdout
    assert table_digest(pg, target) == expected
    audit = pg.execute(
        "SELECT action, target, details->>'result' FROM permafrost.audit_log", metadata_db
    )
    assert audit == [("restore", first, "succeeded")]


def test_latest_as_of_a_moment_is_the_newest_backup_then(
    env, pg, s3, versioned, source_db, metadata_db, target
) -> None:
    first = loads(run(env, "backup", "--json").stdout)["id"]
    moment = a_moment_between()
    pg.execute(
        "DELETE FROM customers WHERE id > 1000 AND id NOT IN "
        "(SELECT customer_id FROM billing.invoices)",
        source_db,
    )
    second = loads(run(env, "backup", "--json").stdout)["id"]
    after = a_moment_between()
    attack(s3, versioned, pg, metadata_db, first, second)

    assert [b["id"] for b in loads(run(env, "list", "--json", "--as-of", moment).stdout)] == [first]
    result = run(env, "restore", "latest", "--target-db", target, "--as-of", after)
    assert f"restored backup {second}" in result.stdout
    assert table_digest(pg, target) == table_digest(pg, source_db)


def test_a_bucket_without_versioning_is_refused_in_one_line(env, bucket) -> None:
    run(env, "backup")
    result = run(env, "list", "--as-of", "2026-01-01T00:00:00Z", check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "never had it on" in result.stderr and "put-bucket-versioning" in result.stderr


def test_a_local_directory_is_refused_and_a_bad_time_named(env, tmp_path) -> None:
    local = {**env, "STORAGE_URL": f"file://{tmp_path}/repo"}
    result = run(local, "list", "--as-of", "2026-01-01T00:00:00Z", check=False)
    assert result.returncode == 2 and "only an S3 bucket with versioning" in result.stderr
    result = run(env, "list", "--as-of", "last tuesday", check=False)
    assert result.returncode == 2 and "--as-of 'last tuesday' is not a time" in result.stderr


def test_the_view_reads_each_key_as_it_was_and_writes_nothing(s3, versioned) -> None:
    storage = S3Storage(s3_settings(s3, versioned))
    storage.put("pfx/a", b"first a")
    storage.put("pfx/b", b"only b")
    moment = datetime.fromisoformat(a_moment_between())
    storage.put("pfx/a", b"second a")
    storage.delete("pfx/b")
    storage.put("pfx/c", b"born later")

    view = as_of(storage, storage.url, moment)
    assert [(i.key, i.size) for i in view.list("pfx/")] == [("pfx/a", 7), ("pfx/b", 6)]
    assert view.get("pfx/a") == b"first a"
    assert view.get("pfx/a", 6, 1) == b"a"
    assert view.get("pfx/b") == b"only b"
    with pytest.raises(NotFound, match="did not exist"):
        view.get("pfx/c")
    with pytest.raises(StorageError, match="read only"):
        view.put("pfx/a", b"x")
    with pytest.raises(StorageError, match="read only"):
        view.delete("pfx/a")
    assert storage.get("pfx/a") == b"second a"
    now = as_of(storage, storage.url, datetime.now(UTC))
    assert [i.key for i in now.list("pfx/")] == ["pfx/a", "pfx/c"]


def test_the_view_is_refused_on_a_bucket_that_keeps_no_versions(s3, bucket) -> None:
    storage = S3Storage(s3_settings(s3, bucket))
    with pytest.raises(UsageError, match="never had it on"):
        as_of(storage, storage.url, datetime.now(UTC))
