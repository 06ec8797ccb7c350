"""`permafrost verify` catches every kind of damage, says which, and records it."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run
from tests.helpers import flip_byte, get_object, loads, put_object
from tests.services import S3Server


@pytest.fixture
def backup(env: dict[str, str]) -> dict:
    record = loads(run(env, "backup", "--json").stdout)
    return loads(run(env, "show", record["id"], "--json").stdout)


def _damage_and_verify(env: dict[str, str], s3: S3Server, bucket: str, key: str, damage) -> str:
    put_object(s3, bucket, key, damage(get_object(s3, bucket, key)))
    result = run(env, "verify", "latest", check=False)
    assert result.returncode == 5, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    return result.stderr


def test_it_catches_a_flipped_byte(env, s3, bucket, backup) -> None:
    key = backup["manifest"]["objects"]["data"]
    message = _damage_and_verify(env, s3, bucket, key, lambda b: flip_byte(b, 200))
    assert "failed authentication" in message
    shown = loads(run(env, "show", backup["id"], "--json").stdout)
    assert shown["verification"] == "failed"
    assert "failed authentication" in shown["verifications"][0]["error"]


def test_it_catches_a_truncated_object(env, s3, bucket, backup) -> None:
    key = backup["manifest"]["objects"]["data"]
    assert "truncated" in _damage_and_verify(env, s3, bucket, key, lambda b: b[:-100])


def test_it_catches_an_edited_manifest(env, s3, bucket, backup) -> None:
    def edit(raw: bytes) -> bytes:
        body = json.loads(raw)
        body["row_counts"][0]["rows"] += 1
        return json.dumps(body).encode()

    message = _damage_and_verify(env, s3, bucket, backup["manifest_key"], edit)
    assert "does not match its signature" in message


def test_it_catches_objects_swapped_between_backups(env, s3, bucket, backup) -> None:
    other = loads(run(env, "backup", "--json").stdout)
    other = loads(run(env, "show", other["id"], "--json").stdout)
    key_a, key_b = backup["manifest"]["objects"]["data"], other["manifest"]["objects"]["data"]
    data_a, data_b = get_object(s3, bucket, key_a), get_object(s3, bucket, key_b)
    put_object(s3, bucket, key_a, data_b)
    put_object(s3, bucket, key_b, data_a)
    for backup_id in (backup["id"], other["id"]):
        result = run(env, "verify", backup_id, check=False)
        assert result.returncode == 5
        assert "SHA-256" in result.stderr or "replaced" in result.stderr


def test_it_catches_a_missing_data_object(env, s3, bucket, backup) -> None:
    s3.client().delete_object(Bucket=bucket, Key=backup["manifest"]["objects"]["data"])
    result = run(env, "verify", backup["id"], check=False)
    assert result.returncode == 5 and "missing its data object" in result.stderr


def test_it_answers_unknown_and_malformed_ids_in_one_line(env: dict[str, str]) -> None:
    unknown = run(env, "verify", "20200101T000000Z-abcdef", check=False)
    assert unknown.returncode == 3
    assert unknown.stderr == (
        "permafrost: error: no backup 20200101T000000Z-abcdef: run "
        "`permafrost list` to see the backups\n"
    )
    malformed = run(env, "show", "../../etc/passwd", check=False)
    assert malformed.returncode == 2 and "is not a backup id" in malformed.stderr
    nothing = run(env, "verify", "latest", check=False)
    assert nothing.returncode == 3 and "no completed backup" in nothing.stderr


def test_decrypt_refuses_a_swapped_object_and_leaves_no_output(
    env, s3, bucket, backup, tmp_path
) -> None:
    other = loads(run(env, "backup", "--json").stdout)
    other = loads(run(env, "show", other["id"], "--json").stdout)
    put_object(
        s3,
        bucket,
        backup["manifest"]["objects"]["data"],
        get_object(s3, bucket, other["manifest"]["objects"]["data"]),
    )
    out = tmp_path / "dump"
    result = run(env, "decrypt", "--backup", backup["id"], "-o", str(out), check=False)
    assert result.returncode == 5
    assert "SHA-256" in result.stderr or "replaced" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_sync_skips_a_manifest_moved_to_another_folder(env, s3, bucket, backup) -> None:
    moved = backup["manifest_key"].replace(backup["id"], "20200101T000000Z-abcdef")
    put_object(s3, bucket, moved, get_object(s3, bucket, backup["manifest_key"]))
    result = run(env, "catalog", "sync", check=False)
    assert result.returncode == 1 and "moved or swapped" in result.stderr
    assert [r["id"] for r in loads(run(env, "list", "--json").stdout)] == [backup["id"]]
