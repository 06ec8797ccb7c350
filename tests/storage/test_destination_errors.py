"""What each of the other destinations says when it cannot be used: one clear error naming what
to check (the S3 ones are in test_contract.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from permafrost.config.env import Secret
from permafrost.config.storage import AzureSettings, GcsSettings, SftpSettings, StorageSettings
from permafrost.errors import StorageUnavailable
from permafrost.storage import open_storage
from tests.destinations import AZURITE_ACCOUNT, Azurite, GcsEmulator, SshServer


def test_azure_says_when_the_container_does_not_exist(azurite: Azurite) -> None:
    azure = AzureSettings(connection_string=Secret(azurite.connection_string))
    storage = open_storage(StorageSettings(url="azure://no-such-container", azure=azure))
    with pytest.raises(StorageUnavailable, match="container no-such-container does not exist"):
        storage.check()
    with pytest.raises(StorageUnavailable, match="does not exist"):
        storage.put("k", b"x")


def test_azure_says_when_the_key_is_wrong(azurite: Azurite) -> None:
    azurite.create_container("wrong-key")
    wrong = AzureSettings(
        account=AZURITE_ACCOUNT, key=Secret("d3Jvbmc=" * 11), endpoint=azurite.endpoint
    )
    storage = open_storage(StorageSettings(url="azure://wrong-key", azure=wrong, max_attempts=1))
    with pytest.raises(StorageUnavailable, match=r"access denied.*AZURE_STORAGE_KEY"):
        storage.check()


def test_gcs_says_when_the_bucket_does_not_exist(gcs_emulator: GcsEmulator) -> None:
    gcs = GcsSettings(endpoint=gcs_emulator.endpoint)
    storage = open_storage(StorageSettings(url="gs://no-such-bucket", gcs=gcs))
    with pytest.raises(StorageUnavailable, match="bucket no-such-bucket does not exist"):
        storage.check()


@pytest.mark.slow  # the client library retries for a while first (about 9 s)
def test_gcs_says_when_the_emulator_cannot_be_reached(refused: int) -> None:
    gcs = GcsSettings(endpoint=f"http://127.0.0.1:{refused}")
    storage = open_storage(StorageSettings(url="gs://b", gcs=gcs, max_attempts=1))
    with pytest.raises(StorageUnavailable, match="cannot reach the bucket"):
        storage.check()


def sftp_storage(sshd: SshServer, path: Path | str, port: int | None = None) -> object:
    sftp = SftpSettings(known_hosts=sshd.known_hosts, key_file=sshd.client_key)
    url = f"sftp://{sshd.user}@127.0.0.1:{port or sshd.port}{path}"
    return open_storage(StorageSettings(url=url, sftp=sftp, max_attempts=1))


def test_sftp_says_when_the_parent_directory_is_missing(sshd: SshServer) -> None:
    storage = sftp_storage(sshd, sshd.directory("missing") / "deeper")
    with pytest.raises(StorageUnavailable, match="does not exist; check STORAGE_URL"):
        storage.check()  # type: ignore[attr-defined]
    with pytest.raises(StorageUnavailable, match="does not exist"):
        storage.put("k", b"x")  # type: ignore[attr-defined]


def test_sftp_says_when_the_server_cannot_be_reached(sshd: SshServer, refused: int) -> None:
    storage = sftp_storage(sshd, "/tmp/x", port=refused)
    with pytest.raises(StorageUnavailable, match="cannot reach the SFTP server"):
        storage.check()  # type: ignore[attr-defined]


def test_sftp_reconnects_when_its_connection_is_cut(sshd: SshServer) -> None:
    storage = sftp_storage(sshd, sshd.directory("reconnect"))
    storage.attempts = 3  # type: ignore[attr-defined]
    storage.put("a/one", b"first")  # type: ignore[attr-defined]
    sessions = [int(pid) for pid in _children(sshd.proc.pid)]
    assert sessions, "the test's connection has no sshd session process"
    for pid in sessions:  # the server side of this connection dies: as a dropped link would
        os.kill(pid, signal.SIGKILL)
    assert storage.get("a/one") == b"first"  # type: ignore[attr-defined]
    storage.put("a/two", b"second")  # type: ignore[attr-defined]
    assert [o.key for o in storage.list("a/")] == ["a/one", "a/two"]  # type: ignore[attr-defined]


def _children(pid: int) -> list[str]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return path.read_text().split() if path.exists() else []
