"""A backup copied from an S3 primary to a copy of each other kind (Azure Blob on Azurite, Google
Cloud Storage on gcp-storage-emulator, SFTP on sshd), each copy then restored alone: STORAGE_URL
pointed at it, the primary's key, no primary and no metadata store."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run
from tests.helpers import loads, table_digest
from tests.test_copies import alone, empty_bucket, push_a_segment
from tests.test_destinations import azure_env, gcs_env, sftp_env


def as_copy(index: int, name: str, destination: dict[str, str]) -> tuple[str, dict[str, str]]:
    """`NAME=URL` for COPY_STORAGE_URLS and the destination's variables as COPY_<index>_*."""
    url = destination["STORAGE_URL"]
    return f"{name}={url}", {
        f"COPY_{index}_{k}": v for k, v in destination.items() if k != "STORAGE_URL"
    }


def test_a_copy_to_azure_gcs_and_sftp_each_restores_alone(
    env, pg, source_db, s3, bucket, azurite, gcs_emulator, sshd, tmp_path: Path
):
    places = {"blob": azure_env(azurite), "gcs": gcs_env(gcs_emulator), "box": sftp_env(sshd)}
    listed, extra = [], {}
    for index, (name, destination) in enumerate(places.items(), start=1):
        entry, variables = as_copy(index, name, destination)
        listed.append(entry)
        extra.update(variables)
    env = {**env, "COPY_STORAGE_URLS": " ".join(listed), **extra}
    backup = loads(run(env, "backup", "--json").stdout)
    segment, wal = push_a_segment(env, pg, tmp_path)

    copied = run(env, "copy", "--all-missing")
    for name in places:
        assert f"{name}: 1 backups copied and verified, 1 WAL files" in copied.stdout, copied.stdout
    shown = loads(run(env, "show", backup["id"], "--json").stdout)
    assert sorted(c["destination"] for c in shown["copies"]) == sorted(places)

    empty_bucket(s3, bucket)  # the primary is gone
    expected = table_digest(pg, source_db)
    for name, destination in places.items():
        site = alone(env, destination)
        restored = f"{source_db}_{name}"
        try:
            run(site, "restore", backup["id"], "--target-db", restored)
            assert table_digest(pg, restored) == expected, name
        finally:
            pg.drop_database(restored)
        fetched = tmp_path / f"{name}.wal"
        run({**site, "WAL_PREFETCH": "0"}, "wal-fetch", segment, str(fetched))
        assert fetched.read_bytes() == wal, name
