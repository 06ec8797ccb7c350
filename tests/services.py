"""Real services for the tests: PostgreSQL clusters made with initdb, and moto's S3 server.

Nothing here is a mock: a cluster is a real postgres process on a loopback port with password
authentication, and the S3 server is moto in server mode, spoken to over HTTP by boto3.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

SUPERUSER = "postgres"
PASSWORD = "test-Secret-pw-1"
START_ATTEMPTS = 5  # a port taken between free_port() and the bind: try another
_refusal: str | None = None  # set by `pytest --quick`: no service starts, its test is skipped


def refuse_to_start(reason: str) -> None:
    """From now on, a test that starts a cluster or an S3 server is skipped, for `reason`."""
    global _refusal
    _refusal = reason


def _may_start(what: str) -> None:
    if _refusal is not None:
        pytest.skip(f"needs {what}: {_refusal}")


def pg_bin() -> Path:
    root = Path("/usr/lib/postgresql")
    majors = sorted(
        (p for p in root.iterdir() if (p / "bin" / "initdb").exists()),
        key=lambda p: int(p.name),
        reverse=True,
    )
    if not majors:
        raise RuntimeError("PostgreSQL server binaries are missing: run ./setup.sh test")
    return majors[0] / "bin"


def serve_http(
    start: Callable[[int], subprocess.Popen[bytes]], health_path: str = "/health"
) -> tuple[subprocess.Popen[bytes], int]:
    """Start an HTTP service on a free port and wait until `health_path` answers 200.

    A port can be taken between free_port() and the service's bind; a service that exits before
    answering is started again on another port (START_ATTEMPTS in all)."""
    for _ in range(START_ATTEMPTS):
        port = free_port()
        proc = start(port)
        if _answers(proc, f"http://127.0.0.1:{port}{health_path}"):
            return proc, port
    raise RuntimeError(f"the service exited {START_ATTEMPTS} times before answering")


def _answers(proc: subprocess.Popen[bytes], url: str, seconds: float = 30) -> bool:
    """True once url answers 200; False when the process has exited first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


def free_port() -> int:
    """A loopback port that was free a moment ago. Another process may take it before the
    caller binds it: a service started on it must retry on a bind failure (`Cluster.start`
    does), and a test that needs a port where nothing listens holds `refused_port()` instead."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as it is held: bound, never
    listened on, so nothing else can start listening there meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _as_owner() -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class Cluster:
    """A throwaway PostgreSQL cluster in a temporary directory."""

    def __init__(
        self,
        name: str = "pg",
        settings: dict[str, str] | None = None,
        *,
        initdb_args: tuple[str, ...] = (),
        start_prefix: tuple[str, ...] = (),
        bin_dir: Path | None = None,
    ) -> None:
        # initdb_args: extra initdb options (--wal-segsize=1); start_prefix: a command the
        # server is started under (prlimit --fsize=… for a target that runs out of space);
        # bin_dir: another major's server (tests/majors.py), else the newest Debian one.
        _may_start("PostgreSQL")
        self.initdb_args, self.start_prefix = initdb_args, start_prefix
        self.root = Path(tempfile.mkdtemp(prefix=f"permafrost-{name}-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.bin = bin_dir or pg_bin()
        self.settings = settings or {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._initdb()

    def _initdb(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres")
        subprocess.run(
            [
                *_as_owner(),
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
                *self.initdb_args,
            ],
            check=True,
            capture_output=True,
        )
        conf = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "'64MB'",
            "max_connections": "50",
            **self.settings,
        }
        with (self.data / "postgresql.conf").open("a") as handle:
            for key, value in conf.items():
                handle.write(f"{key} = {value}\n")

    def start(self) -> Cluster:
        """Start the server; when its port was taken meanwhile, on another port."""
        for _ in range(START_ATTEMPTS - 1):
            try:
                return self._start()
            except subprocess.CalledProcessError:
                if "could not bind" not in self._log():
                    raise
            self._move_to(free_port())
        return self._start()

    def _start(self) -> Cluster:
        subprocess.run(
            [
                *self.start_prefix,
                *_as_owner(),
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        return self

    def _log(self) -> str:
        log = self.root / "log"
        return log.read_text(errors="replace") if log.exists() else ""

    def _move_to(self, port: int) -> None:
        self.port = port
        with (self.data / "postgresql.conf").open("a") as handle:
            handle.write(f"port = {port}\n")  # the last setting of a name wins

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            [
                *_as_owner(),
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                mode,
                "-w",
                "stop",
            ],
            check=False,
            capture_output=True,
        )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.url(database), autocommit=True)

    def execute(self, sql: str, database: str = "postgres") -> list[tuple]:
        with self.connect(database) as conn:
            cur = conn.execute(sql)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class S3Server:
    """moto's S3 server on a loopback port, in its own process.

    It binds port 0 and says which port it got (werkzeug's "Running on" line), so no other
    process can take the port between choosing and binding it.
    """

    def __init__(self) -> None:
        _may_start("the S3 server")
        self._log = Path(tempfile.mkdtemp(prefix="permafrost-moto-")) / "log"
        moto = Path(sys.executable).parent / "moto_server"
        with self._log.open("w") as log:
            self.proc = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", "0"], stdout=subprocess.DEVNULL, stderr=log
            )
        self.port = self._wait()
        self.url = f"http://127.0.0.1:{self.port}"

    def _wait(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            said = self._log.read_text(errors="replace")
            running = re.search(r"Running on http://127\.0\.0\.1:(\d+)", said)
            if running:
                return int(running.group(1))
            time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self._log.parent, ignore_errors=True)
