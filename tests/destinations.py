"""Real servers for the other destinations, each on a loopback port, started by the tests.

- Azurite (npm, installed by scripts/azurite.py) for azure://: its blob service, in memory.
- gcp-storage-emulator (PyPI, the test extra) for gs://: in memory.
- Debian's OpenSSH sshd for sftp://: its own config, a throwaway host key and client key pair in
  a temporary directory, the current user logging in by key only.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from scripts.azurite import blob_program
from tests.services import START_ATTEMPTS, _may_start, free_port

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key: it opens nothing but the emulator.
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def _listening(proc: subprocess.Popen[bytes], port: int, seconds: float = 30) -> bool:
    """True once the port accepts connections; False when the process exited first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"nothing listened on port {port} within {seconds:.0f} s")


class Azurite:
    """Azurite's blob service, in memory, on a loopback port."""

    def __init__(self) -> None:
        _may_start("Azurite")
        program = blob_program()
        if not program.exists():
            raise RuntimeError(f"Azurite is missing ({program}): run ./setup.sh test")
        self.root = Path(tempfile.mkdtemp(prefix="permafrost-azurite-"))
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [
                    str(program),
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    str(self.port),
                    "--inMemoryPersistence",
                    "--silent",
                    "--skipApiVersionCheck",
                    "--loose",
                    "--disableTelemetry",
                ],
                cwd=self.root,  # its debug log and lock files, if any
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if _listening(self.proc, self.port):
                return
        raise RuntimeError("Azurite exited before listening")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint};"
        )

    def create_container(self, name: str) -> None:
        from azure.storage.blob import BlobServiceClient

        BlobServiceClient.from_connection_string(self.connection_string).create_container(name)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


class GcsEmulator:
    """gcp-storage-emulator, in memory, on a loopback port."""

    def __init__(self) -> None:
        _may_start("the Google Cloud Storage emulator")
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gcp_storage_emulator",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--in-memory",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if _listening(self.proc, self.port):
                return
        raise RuntimeError("the GCS emulator exited before listening")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_bucket(self, name: str) -> None:
        body = f'{{"name": "{name}"}}'.encode()
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=permafrost",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class SshServer:
    """OpenSSH's sshd as its own server: a throwaway host key, a client key pair, the current
    user by key only, SFTP through internal-sftp, all under a temporary directory."""

    def __init__(self) -> None:
        _may_start("sshd")
        sshd = Path("/usr/sbin/sshd")
        if not sshd.exists():
            raise RuntimeError("sshd is missing (openssh-server): run ./setup.sh test")
        self.root = Path(tempfile.mkdtemp(prefix="permafrost-sshd-"))
        self.root.chmod(0o755)
        self.user = getpass.getuser()
        self.host_key = self._keygen("host_key")
        self.client_key = self._keygen("client_key")
        (self.root / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            config = self._config()
            self.proc = subprocess.Popen(
                [str(sshd), "-D", "-e", "-f", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=(self.root / "sshd.log").open("ab"),
            )
            if _listening(self.proc, self.port):
                break
        else:
            raise RuntimeError(f"sshd exited before listening: {self.log()}")
        self.known_hosts = self.root / "known_hosts"
        public = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n")

    def _keygen(self, name: str) -> Path:
        path = self.root / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
            check=True,
            capture_output=True,
        )
        return path

    def _config(self) -> Path:
        config = self.root / "sshd_config"
        config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.root}/sshd.pid\n"
            f"AuthorizedKeysFile {self.root}/authorized_keys\n"
            f"AllowUsers {self.user}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "Subsystem sftp internal-sftp\n"
        )
        return config

    def directory(self, name: str) -> Path:
        """A fresh directory on the server for one repository (its parent exists)."""
        folder = self.root / "data"
        folder.mkdir(exist_ok=True)
        return folder / name

    def url(self, path: Path) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}{path}"

    def env(self) -> dict[str, str]:
        return {"SFTP_KNOWN_HOSTS": str(self.known_hosts), "SFTP_KEY_PATH": str(self.client_key)}

    def log(self) -> str:
        path = self.root / "sshd.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)
