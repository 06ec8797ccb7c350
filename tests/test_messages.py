"""What the commands say when something is off: small things an operator found wrong (issue 14)."""

from __future__ import annotations

import os
import stat

from tests.conftest import run
from tests.helpers import flip_byte, get_object, loads, put_object
from tests.services import Cluster, S3Server


def test_it_exits_4_for_a_malformed_key(env: dict[str, str]) -> None:
    result = run({**env, "BACKUP_ENCRYPTION_KEY": "short"}, "backup", check=False)
    assert result.returncode == 4, result.stderr  # README: 4 is the encryption key
    assert result.stderr.count("\n") == 1 and "BACKUP_ENCRYPTION_KEY" in result.stderr


def test_wal_status_says_when_nothing_is_archived(env: dict[str, str]) -> None:
    run(env, "init")
    shown = run(env, "wal", "status").stdout
    assert "server is writing" in shown
    assert "None" not in shown
    assert "nothing on its timeline is archived yet" in shown


def test_verifying_a_base_backup_does_not_speak_of_pg_restore(env: dict[str, str]) -> None:
    base = loads(run(env, "backup", "--kind", "base", "--json").stdout)
    said = run(env, "verify", base["id"]).stdout
    assert "pg_restore" not in said
    assert "the tar reads through to backup_manifest" in said


def test_a_damaged_chunk_names_the_backup_and_what_to_do(
    env: dict[str, str], s3: S3Server, bucket: str
) -> None:
    record = loads(run(env, "backup", "--json").stdout)
    key = loads(run(env, "show", record["id"], "--json").stdout)["manifest"]["objects"]["data"]
    put_object(s3, bucket, key, flip_byte(get_object(s3, bucket, key), 200))
    result = run(env, "verify", record["id"], check=False)
    assert result.returncode == 5 and result.stderr.count("\n") == 1
    assert "failed authentication" in result.stderr
    assert f"backup {record['id']}" in result.stderr and key in result.stderr
    assert "restore another backup" in result.stderr


def test_status_shows_the_root_cause_whole(env: dict[str, str], pg: Cluster) -> None:
    broken = {**env, "DATABASE_URL": pg.url("no_such_database_for_status")}
    failed = run(broken, "backup", check=False)
    assert failed.returncode == 7
    cause = 'database "no_such_database_for_status" does not exist'
    assert cause in failed.stderr
    shown = run(broken, "status").stdout
    assert cause in shown, shown


def test_decrypt_writes_the_plaintext_for_its_owner_only(env: dict[str, str], tmp_path) -> None:
    run(env, "backup")
    out = tmp_path / "dump"
    old = os.umask(0o022)
    try:
        run(env, "decrypt", "--backup", "latest", "-o", str(out))
    finally:
        os.umask(old)
    assert out.read_bytes().startswith(b"PGDMP")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
