"""Copies (issue 18): a backup copied to a second place, checked there, restored from it alone."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import run
from tests.helpers import loads, table_digest
from tests.services import Cluster, S3Server


def new_bucket(s3: S3Server) -> str:
    name = f"pf-copy-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=name)
    return name


def s3_copy(index: int, s3: S3Server, key_id: str = "testing") -> dict[str, str]:
    """COPY_<index>_* for an S3 copy at the test server (another key id: another account, so
    no server-side copy; the same: server-side)."""
    return {
        f"COPY_{index}_S3_ENDPOINT_URL": s3.url,
        f"COPY_{index}_S3_REGION": "us-east-1",
        f"COPY_{index}_S3_ACCESS_KEY_ID": key_id,
        f"COPY_{index}_S3_SECRET_ACCESS_KEY": "testing",
        f"COPY_{index}_S3_PROVIDER": "generic",
    }


def alone(env: dict[str, str], storage: dict[str, str]) -> dict[str, str]:
    """The environment of a site that has only the copy: its STORAGE_URL and credentials, the
    primary's key, and no metadata store (it went with the primary)."""
    kept = {k: env[k] for k in ("PATH", "HOME", "DATABASE_URL", "BACKUP_ENCRYPTION_KEY")}
    return {**kept, **storage}


def empty_bucket(s3: S3Server, bucket: str) -> None:
    client = s3.client()
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=item["Key"])


@pytest.fixture
def target(pg: Cluster, source_db: str):
    names: list[str] = []
    yield lambda suffix: names.append(f"{source_db}_{suffix}") or names[-1]
    for name in names:
        pg.drop_database(name)


def test_it_copies_a_backup_to_s3_and_restores_from_the_copy_alone(
    env, s3, pg, source_db, bucket, target
):
    far, near = new_bucket(s3), new_bucket(s3)
    env = {
        **env,
        "COPY_STORAGE_URLS": f"far=s3://{far}/elsewhere near=s3://{near}/backups",
        **s3_copy(1, s3, key_id="another-account"),
        **s3_copy(2, s3),
    }
    backup = loads(run(env, "backup", "--json").stdout)

    copied = run(env, "copy", backup["id"])
    assert "far: 1 backups copied and verified" in copied.stdout
    assert "near: 1 backups copied and verified" in copied.stdout
    assert "bytes, stream," in copied.stdout and "bytes, server-side," in copied.stdout

    shown = loads(run(env, "show", backup["id"], "--json").stdout)
    assert sorted(c["destination"] for c in shown["copies"]) == ["far", "near"]
    listed = run(env, "list").stdout
    assert "far, near" in listed

    again = loads(run(env, "copy", backup["id"], "--to", "far", "--json").stdout)
    assert again == [
        {
            "destination": "far",
            "copied": [backup["id"]],
            "failed": {},
            "wal_files": 0,
            "error": None,
            "busy": False,
        }
    ]

    empty_bucket(s3, bucket)  # the primary is gone: only the copies are left
    expected = table_digest(pg, source_db)
    for name, url, key_id in (
        ("far", f"s3://{far}/elsewhere", "another-account"),
        ("near", f"s3://{near}/backups", "testing"),
    ):
        site = alone(
            env,
            {
                "STORAGE_URL": url,
                "S3_ENDPOINT_URL": s3.url,
                "S3_REGION": "us-east-1",
                "S3_ACCESS_KEY_ID": key_id,
                "S3_SECRET_ACCESS_KEY": "testing",
                "S3_PROVIDER": "generic",
            },
        )
        restored = target(name)
        run(site, "restore", backup["id"], "--target-db", restored)
        assert table_digest(pg, restored) == expected


def test_it_refuses_a_copy_without_destinations_or_without_a_choice(env):
    none = run(env, "copy", "--all-missing", check=False)
    assert none.returncode == 2
    assert "COPY_STORAGE_URLS" in none.stderr
    env = {**env, "COPY_STORAGE_URLS": "file:///nonexistent/copy"}
    neither = run(env, "copy", check=False)
    assert neither.returncode == 2
    assert "--all-missing" in neither.stderr
    unknown = run(env, "copy", "--all-missing", "--to", "nowhere", check=False)
    assert unknown.returncode == 2
    assert "no copy destination named 'nowhere'" in unknown.stderr
