"""Public-key and KMS modes: backup hosts that cannot read, and data keys from KMS (moto)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import boto3
import pytest

from permafrost.config.settings import Settings
from permafrost.logs import sayer
from scheduler.jobs import Jobs, JobSpec
from tests.conftest import run
from tests.helpers import loads, table_digest
from tests.services import Cluster, S3Server


def _without_key(env: dict[str, str], **extra: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "BACKUP_ENCRYPTION_KEY"} | extra


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def _segment(pg: Cluster, tmp_path: Path) -> Path:
    pg.execute("CREATE TABLE IF NOT EXISTS walkeys AS SELECT g FROM generate_series(1, 1000) g")
    ((name,),) = pg.execute("SELECT pg_walfile_name(pg_switch_wal())")
    copy = tmp_path / name
    shutil.copy(pg.data / "pg_wal" / name, copy)
    return copy


def _keypair(env: dict[str, str]) -> tuple[str, str]:
    lines = run(env, "keygen", "--pair").stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == ["BACKUP_PUBLIC_KEY", "BACKUP_PRIVATE_KEY"]
    public, private = (line.split("=", 1)[1] for line in lines)
    return public, private


def test_a_backup_host_with_the_public_key_writes_what_only_the_private_key_reads(
    env, pg, source_db, tmp_path
) -> None:
    public, private = _keypair(env)
    writer = _without_key(env, BACKUP_PUBLIC_KEY=public)
    reader = _without_key(env, BACKUP_PRIVATE_KEY=private)
    backup = loads(run(writer, "backup", "--json").stdout)
    segment = _segment(pg, tmp_path)
    run(writer, "wal-push", str(segment))
    run(writer, "wal-push", str(segment))  # PostgreSQL's retry: accepted without the private key
    other = tmp_path / "other" / segment.name
    other.parent.mkdir()
    other.write_bytes(b"\0" * segment.stat().st_size)
    clash = run(writer, "wal-push", str(other), check=False)
    assert clash.returncode == 5 and "already archived with different contents" in clash.stderr

    # wal-fetch answers PostgreSQL: 126 stops recovery (1 would end it as "no more WAL").
    for code, *args in (
        (4, "restore", "latest", "--target-db", f"{source_db}_no"),
        (4, "verify", "latest"),
        (4, "decrypt", "--backup", "latest", "-o", str(tmp_path / "dump")),
        (126, "wal-fetch", segment.name, str(tmp_path / "RECOVERYXLOG")),
    ):
        refused = run(writer, *args, check=False)
        assert refused.returncode == code, (args, refused.stderr)
        assert "only BACKUP_PRIVATE_KEY opens it" in _one_line(refused.stderr)
    assert f"{source_db}_no" not in {r[0] for r in pg.execute("SELECT datname FROM pg_database")}

    target = f"{source_db}_pk"
    run(reader, "restore", backup["id"], "--target-db", target)
    assert table_digest(pg, target) == table_digest(pg, source_db)
    pg.drop_database(target)
    run(reader, "verify", "latest")
    run(reader, "wal-fetch", segment.name, str(tmp_path / "RECOVERYXLOG"))
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == segment.read_bytes()
    run(reader, "decrypt", "--backup", "latest", "-o", str(tmp_path / "dump"))
    assert (tmp_path / "dump").read_bytes().startswith(b"PGDMP")


def test_a_public_key_the_repository_does_not_know_is_refused(env) -> None:
    first, _ = _keypair(env)
    other, _ = _keypair(env)
    run(_without_key(env, BACKUP_PUBLIC_KEY=first), "init")
    refused = run(_without_key(env, BACKUP_PUBLIC_KEY=other), "backup", check=False)
    assert refused.returncode == 4
    assert "BACKUP_PUBLIC_KEY" in _one_line(refused.stderr)


def _kms(s3: S3Server):  # type: ignore[no-untyped-def]
    return boto3.client(
        "kms",
        endpoint_url=s3.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def kms_key(s3: S3Server) -> str:
    return str(_kms(s3).create_key(Description="permafrost test")["KeyMetadata"]["KeyId"])


def _stored(s3: S3Server, bucket: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def test_kms_data_keys_back_up_and_restore(env, s3, bucket, pg, source_db, kms_key) -> None:
    kms_env = _without_key(env, KMS_KEY_ID=kms_key)
    backup = loads(run(kms_env, "backup", "--json").stdout)
    target = f"{source_db}_kms"
    run(kms_env, "restore", backup["id"], "--target-db", target)
    assert table_digest(pg, target) == table_digest(pg, source_db)
    pg.drop_database(target)

    _kms(s3).disable_key(KeyId=kms_key)
    before = _stored(s3, bucket)
    refused = run(kms_env, "backup", check=False)
    assert refused.returncode == 4
    assert "DisabledException" in _one_line(refused.stderr)
    assert _stored(s3, bucket) == before


def test_kms_down_fails_the_backup_and_writes_nothing(
    env, s3, bucket, refused, kms_key, pg, metadata_db
) -> None:
    kms_env = _without_key(env, KMS_KEY_ID=kms_key, KMS_ENDPOINT_URL=f"http://127.0.0.1:{refused}")
    result = run(kms_env, "backup", check=False)
    assert result.returncode == 14
    assert "KMS at http://127.0.0.1" in _one_line(result.stderr)
    assert not [k for k in _stored(s3, bucket) if k.endswith(".pfe")]

    settings = Settings.from_env(kms_env)  # the scheduler's job: a failed run and an alert
    db = settings.source.databases[0]
    jobs = Jobs(settings, say=sayer("scheduler"), abort=threading.Event())
    assert "error" in jobs.backup(JobSpec(f"backup:{db}", "backup", db, "critical"), "schedule")
    alerts = pg.execute("SELECT severity, summary FROM permafrost.alerts", metadata_db)
    assert len(alerts) == 1 and alerts[0][0] == "critical" and "KMS at http" in alerts[0][1]
    assert not [k for k in _stored(s3, bucket) if k.endswith(".pfe")]


def test_a_symmetric_repository_moves_to_public_key_and_both_kinds_restore(
    env, pg, source_db
) -> None:
    old = loads(run(env, "backup", "--json").stdout)  # symmetric, as before
    public, private = _keypair(env)
    run({**env, "BACKUP_PUBLIC_KEY": public}, "init")  # the symmetric key vouches for the new one
    writer = _without_key(env, BACKUP_PUBLIC_KEY=public)
    new = loads(run(writer, "backup", "--json").stdout)
    listed = {b["id"] for b in loads(run(writer, "list", "--json").stdout)}
    assert {old["id"], new["id"]} <= listed

    reader = {**env, "BACKUP_PRIVATE_KEY": private}  # keeps the old key for the old backups
    for backup in (old, new):
        target = f"{source_db}_{backup['id'][-6:]}"
        run(reader, "restore", backup["id"], "--target-db", target)
        assert table_digest(pg, target) == table_digest(pg, source_db)
        pg.drop_database(target)
    refused = run(_without_key(env, BACKUP_PRIVATE_KEY=private), "verify", old["id"], check=False)
    assert refused.returncode == 4 and "BACKUP_ENCRYPTION_KEY" in _one_line(refused.stderr)
