"""A backup to each destination and back: Azure Blob (Azurite), Google Cloud Storage
(gcp-storage-emulator) and SFTP (OpenSSH's sshd), each through the `permafrost` command with
STORAGE_URL pointing there, as an operator would set it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import KEY, run, unique
from tests.destinations import Azurite, GcsEmulator, SshServer
from tests.helpers import loads, table_digest
from tests.services import Cluster


def base_env(pg: Cluster, source_db: str, metadata_db: str, home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "DATABASE_URL": pg.url(source_db),
        "METADATA_DATABASE_URL": pg.url(metadata_db),
        "BACKUP_ENCRYPTION_KEY": KEY,
        "UPLOAD_PART_SIZE_MB": "5",
    }


def azure_env(azurite: Azurite) -> dict[str, str]:
    container = unique("pf").replace("_", "-")
    azurite.create_container(container)
    return {
        "STORAGE_URL": f"azure://{container}/backups",
        "AZURE_STORAGE_ACCOUNT": "devstoreaccount1",
        "AZURE_STORAGE_KEY": azurite.connection_string.split("AccountKey=")[1].split(";")[0],
        "AZURE_STORAGE_ENDPOINT": azurite.endpoint,
    }


def gcs_env(emulator: GcsEmulator) -> dict[str, str]:
    bucket = unique("pf").replace("_", "-")
    emulator.create_bucket(bucket)
    return {"STORAGE_URL": f"gs://{bucket}/backups", "GCS_ENDPOINT_URL": emulator.endpoint}


def sftp_env(sshd: SshServer) -> dict[str, str]:
    return {"STORAGE_URL": sshd.url(sshd.directory(unique("repo"))), **sshd.env()}


@pytest.fixture(params=["azure", "gcs", "sftp"])
def destination_env(
    request: pytest.FixtureRequest, pg: Cluster, source_db: str, metadata_db: str, tmp_path: Path
) -> dict[str, str]:
    env = base_env(pg, source_db, metadata_db, tmp_path)
    if request.param == "azure":
        return {**env, **azure_env(request.getfixturevalue("azurite"))}
    if request.param == "gcs":
        return {**env, **gcs_env(request.getfixturevalue("gcs_emulator"))}
    return {**env, **sftp_env(request.getfixturevalue("sshd"))}


@pytest.fixture
def target(pg: Cluster, source_db: str):
    name = f"{source_db}_t"
    yield name
    pg.drop_database(name)


def test_it_backs_up_lists_and_restores_every_row(
    destination_env: dict[str, str], pg: Cluster, source_db: str, target: str
) -> None:
    env = destination_env
    record = loads(run(env, "backup", "--json").stdout)
    listed = run(env, "list").stdout
    assert record["id"] in listed
    shown = loads(run(env, "show", record["id"], "--json").stdout)
    assert shown["id"] == record["id"]
    assert shown["location"].startswith(env["STORAGE_URL"])  # where it lives
    shown_text = run(env, "show", record["id"]).stdout
    assert re.search(rf"^stored at +{re.escape(env['STORAGE_URL'])}", shown_text, re.MULTILINE)
    result = run(env, "restore", "latest", "--target-db", target)
    assert f"restored backup {record['id']} into {target}" in result.stdout
    assert table_digest(pg, target) == table_digest(pg, source_db)
    lifecycle = run(env, "lifecycle", "check").stdout
    assert "retention alone deletes" in lifecycle


def test_wal_segments_go_there_and_come_back(
    destination_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**destination_env, "WAL_PREFETCH": "0"}
    segment = tmp_path / "000000010000000000000003"
    segment.write_bytes(os.urandom(64 * 1024) * 256)  # 16 MiB, as PostgreSQL's
    run(env, "wal-push", str(segment))
    fetched = tmp_path / "fetched"
    run(env, "wal-fetch", segment.name, str(fetched))
    assert fetched.read_bytes() == segment.read_bytes()
    missing = run(env, "wal-fetch", "000000010000000000000004", str(tmp_path / "no"), check=False)
    assert missing.returncode != 0 and not (tmp_path / "no").exists()


def test_sftp_refuses_an_unknown_host_key_in_one_line(
    sshd: SshServer, pg: Cluster, source_db: str, metadata_db: str, tmp_path: Path
) -> None:
    env = {**base_env(pg, source_db, metadata_db, tmp_path), **sftp_env(sshd)}
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = run({**env, "SFTP_KNOWN_HOSTS": str(empty)}, "backup", check=False)
    assert result.returncode == 6, result.stderr
    assert f"is not in {empty}: refusing to connect" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_sftp_refuses_a_changed_host_key(
    sshd: SshServer, pg: Cluster, source_db: str, metadata_db: str, tmp_path: Path
) -> None:
    env = {**base_env(pg, source_db, metadata_db, tmp_path), **sftp_env(sshd)}
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = Path(f"{other}.pub").read_text().split()[:2]
    changed = tmp_path / "known_hosts"
    changed.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    result = run({**env, "SFTP_KNOWN_HOSTS": str(changed)}, "backup", check=False)
    assert result.returncode == 6, result.stderr
    assert "has CHANGED" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not Path(env["STORAGE_URL"].split(str(sshd.port), 1)[1]).exists()  # nothing written
