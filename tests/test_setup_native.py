"""`./setup.sh` without a Docker engine: the services as local processes, twice, then stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent


def setup(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["./setup.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_setup_runs_the_stack_natively_twice_and_stops_it(tmp_path: Path) -> None:
    home = Path(tempfile.mkdtemp(prefix="permafrost-native-"))
    home.chmod(0o755)  # the cluster inside runs as the postgres user
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PERMAFROST_HOME": str(home / "home"),
        "PERMAFROST_DOTENV": str(tmp_path / ".env"),
        "MONITOR_PORT": str(port),
        "NATIVE_PG_PORT": str(free_port()),
    }
    try:
        first = setup(env)
        assert first.returncode == 0, first.stderr[-3000:]
        dotenv = (tmp_path / ".env").read_text()
        key = next(
            line for line in dotenv.splitlines() if line.startswith("BACKUP_ENCRYPTION_KEY=")
        )
        assert len(key) > len("BACKUP_ENCRYPTION_KEY=") + 40
        assert "a lost key means lost backups" in first.stderr.lower()
        assert f"http://localhost:{port}/" in first.stdout
        assert "verified by restoring 2 tables" in first.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as health:
            assert health.status == 200

        second = setup(env)  # changes nothing, breaks nothing
        assert second.returncode == 0, second.stderr[-3000:]
        assert "scheduler is already running" in second.stderr
        assert "taking a first backup" not in second.stderr
        assert (tmp_path / ".env").read_text() == dotenv  # no key generated twice

        status = setup(env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "scheduler  running" in status.stdout and "scheduler: alive" in status.stdout
    finally:
        stopped = setup(env, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped scheduler" in stopped.stderr and "PostgreSQL stopped" in stopped.stderr
    after = setup(env, "status")
    assert after.returncode == 1 and "scheduler  stopped" in after.stdout
    shutil.rmtree(home, ignore_errors=True)
