"""`./setup.sh` natively with BACKUP_WORKERS=queue: WORKER_REPLICAS backup workers (`permafrost
worker` processes, worker-1 ... worker-N) run beside the scheduler, the monitor and the restore
worker, under the same supervisor. A queued backup is taken by one of them; running it again
with another WORKER_REPLICAS starts or stops workers and restarts nothing else; `stop` leaves
no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.services import free_port
from tests.test_setup_native import FAKE_DOCKER, Stack, setup, wait_until

ROOT = Path(__file__).resolve().parent.parent
PERMAFROST = str(ROOT / ".venv" / "bin" / "permafrost")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="permafrost-workers-"))
    root.chmod(0o755)  # the cluster inside runs as the postgres user
    (root / "bin").mkdir()
    (root / "bin" / "docker").write_text(FAKE_DOCKER)  # an engine without Compose: native
    (root / "bin" / "docker-compose").write_text("#!/bin/sh\nexit 127\n")
    for name in ("docker", "docker-compose"):
        (root / "bin" / name).chmod(0o755)
    (root / "user").mkdir()
    home = root / "home"
    port = free_port()
    env = {
        "PATH": f"{root / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(root / "user"),
        "PERMAFROST_HOME": str(home),
        "PERMAFROST_DOTENV": str(root / ".env"),
        "MONITOR_PORT": str(port),
        "NATIVE_PG_PORT": str(free_port()),
        "BACKUP_WORKERS": "queue",  # in the shell: wins over .env's inline, as documented
        "WORKER_REPLICAS": "2",
        "ALERT_CHECK_INTERVAL": "0",
    }
    first = setup(env)
    try:
        yield Stack(env, home, root / ".env", port, first)
    finally:
        setup(env, "stop")
        shutil.rmtree(root, ignore_errors=True)


def pids(stack: Stack, *names: str) -> dict[str, object]:
    return {name: stack.state(name).get("pid") for name in names}


def cli(stack: Stack, *args: str) -> str:
    env = {**os.environ, "PERMAFROST_ENV_FILE": str(stack.home / "permafrost.env")}
    done = subprocess.run([PERMAFROST, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def metadata_url(stack: Stack) -> str:
    lines = (stack.home / "permafrost.env").read_text().splitlines()
    return next(line.split("=", 1)[1] for line in lines if line.startswith("METADATA_"))


def test_it_runs_the_workers_beside_the_three_services(stack: Stack) -> None:
    first = stack.first
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("scheduler", "monitor", "restore", "worker-1", "worker-2"):
        assert f"{name} is running (pid" in first.stderr, first.stderr[-3000:]
    assert "worker-1.log ... worker-2.log" in first.stdout
    assert "WORKER_REPLICAS" not in (stack.home / "permafrost.env").read_text()
    status = stack.setup("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "worker-1   running (pid" in status.stdout and "worker-2   running" in status.stdout
    assert "task queue: " in status.stdout  # `permafrost status` with BACKUP_WORKERS=queue


def task_outcome(stack: Stack, task: int) -> str:
    """The task's status once it is done, and the worker that did it ("host:pid")."""
    with psycopg.connect(metadata_url(stack), autocommit=True) as conn:

        def finished() -> tuple[str, str] | None:
            row = conn.execute(
                "SELECT status, worker FROM permafrost.tasks WHERE id = %s", (task,)
            ).fetchone()
            return row if row and row[0] in ("succeeded", "failed") else None

        found = wait_until("a worker to take the backup", finished)
    assert isinstance(found, tuple)
    return f"{found[0]} by {found[1]}"


def test_a_queued_backup_is_taken_by_one_of_the_workers(stack: Stack) -> None:
    (queued,) = json.loads(cli(stack, "backup", "--queue", "--json"))
    status, _, worker = task_outcome(stack, queued["task_id"]).partition(" by ")
    assert status == "succeeded"
    workers = {str(p) for p in pids(stack, "worker-1", "worker-2").values()}
    assert worker.rsplit(":", 1)[1] in workers, (worker, workers)
    listed = json.loads(cli(stack, "list", "--json"))
    # set-up's first backup and this one; the scheduler's own (a catch-up of BACKUP_SCHEDULE's
    # run when the stack starts after it) may add one more, depending on the time of day.
    shop = [b["status"] for b in listed if b["database"] == "shop"]
    assert len(shop) >= 2 and set(shop) == {"completed"}, shop


def test_another_worker_count_starts_or_stops_workers_and_restarts_nothing_else(
    stack: Stack,
) -> None:
    services = pids(stack, "scheduler", "monitor", "restore", "worker-1")
    up = setup({**stack.env, "WORKER_REPLICAS": "3"})
    assert up.returncode == 0, up.stderr[-3000:]
    assert "starting worker-3" in up.stderr and "restarting" not in up.stderr
    assert "worker-3 is running (pid" in up.stderr
    assert pids(stack, *services) == services
    down = setup({**stack.env, "WORKER_REPLICAS": "1"})
    assert down.returncode == 0, down.stderr[-3000:]
    assert "stopping worker-2: no longer asked for" in down.stderr
    assert "stopping worker-3: no longer asked for" in down.stderr
    assert pids(stack, *services) == services
    assert pids(stack, "worker-2", "worker-3") == {"worker-2": None, "worker-3": None}
    status = stack.setup("status")
    assert "worker-1   running" in status.stdout and "worker-2" not in status.stdout


def test_a_bad_worker_count_is_refused_before_anything_changes(stack: Stack) -> None:
    services = pids(stack, "scheduler", "worker-1")
    refused = setup({**stack.env, "WORKER_REPLICAS": "many"})
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        "setup: error: WORKER_REPLICAS=many is not a number of backup workers: give 1 to 64 "
        "(or BACKUP_WORKERS=inline for none)"
    )
    assert pids(stack, *services) == services


def test_a_sources_file_in_env_is_what_the_services_and_workers_back_up(stack: Stack) -> None:
    settings = dict(
        line.split("=", 1) for line in (stack.home / "permafrost.env").read_text().splitlines()
    )
    server = settings["DATABASE_URL"].rsplit("/", 1)[0]  # the throwaway cluster, as postgres
    password = server.split(":")[2].split("@")[0]
    (stack.home / "local.pw").write_text(password)
    sources = stack.home / "sources.yaml"
    sources.write_text(
        "sources:\n"
        "  - name: local\n"
        f"    url: postgresql://postgres@{server.split('@')[1]}/postgres\n"
        "    password_file: local.pw   # beside the sources file\n"
        "    databases: [shop]\n"
        "    plain_names: true\n"
    )
    services = pids(stack, "scheduler", "worker-1")
    fleet = setup({**stack.env, "SOURCES_FILE": str(sources), "WORKER_REPLICAS": "1"})
    try:
        assert fleet.returncode == 0, fleet.stderr[-3000:]
        assert ".env changed (" in fleet.stderr and "SOURCES_FILE" in fleet.stderr
        settings_now = (stack.home / "permafrost.env").read_text()
        assert f"SOURCES_FILE={sources}" in settings_now and "DB_NAME=" not in settings_now
        assert pids(stack, *services) != services  # restarted with the file
        (queued,) = json.loads(cli(stack, "backup", "--all", "--queue", "--json"))
        assert (queued["database"], queued["source"]) == ("shop", "local")
        assert task_outcome(stack, queued["task_id"]).startswith("succeeded by ")
        listed = json.loads(cli(stack, "list", "--source", "local", "--json"))
        shop = [b["status"] for b in listed if b["database"] == "shop"]
        assert len(shop) >= 3 and set(shop) == {"completed"}, shop  # as above: catch-ups
    finally:
        # SOURCES_FILE was given in the shell only: .env is as it was.
        assert "SOURCES_FILE=\n" in stack.dotenv.read_text() or "SOURCES_FILE" not in (
            stack.dotenv.read_text()
        )


def test_stop_stops_the_workers_too(stack: Stack) -> None:
    stopped = stack.setup("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped worker-1" in stopped.stderr
    assert stack.processes() == {}
    assert not list((stack.home / "run").glob("worker-*"))
