"""The stack as users run it: the image, docker-compose.yml, and the .env that setup.sh writes.

Run alone, as `./setup.sh test containers` does: `pytest -m containers -s tests/containers`.
scripts/containers.py starts a Docker engine when none answers (and stops it at the end), builds
the base image and the project's image (cached under .cache/docker), then the test brings the
stack up with docker-compose.test.yml, whose stand-ins replace the images no registry serves here.
Each step prints its time in one line: `containers: <step> 3.2s`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.services import free_port

pytestmark = pytest.mark.containers

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import containers  # noqa: E402

SERVICES = ("scheduler", "monitor", "restore", "metadata", "db", "minio", "mailpit")
NEXT = "permafrost:test-next"  # the upgrade test's image: the same code, version 0.1.1


@contextmanager
def step(name: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"containers: {name} {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)


class Stack:
    """One compose project in a directory of its own, so the checkout's .env is never touched."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.env = {**os.environ, "MONITOR_PORT": str(port)}
        files = ["-f", "docker-compose.yml", "-f", "docker-compose.test.yml"]
        project = ["-p", f"permafrost-test-{os.getpid()}"]
        self.base = [*containers.compose_command(), *project, *files, "--profile", "local"]

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.base, *args], cwd=self.directory, env=self.env, capture_output=True, text=True
        )
        if check and result.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)}: {result.stdout}{result.stderr}")
        return result

    def exec(self, service: str, *command: str) -> str:
        return self.compose("exec", "-T", service, *command).stdout

    def health(self, service: str) -> str:
        container = self.compose("ps", "-q", service).stdout.strip()
        inspect = subprocess.run(
            [
                "docker",
                "inspect",
                "-f",
                "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}",
                container,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return inspect.stdout.strip()

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = {name: self.health(name) for name in SERVICES}
            if all(state == "healthy" for state in states.values()):
                return
            if time.monotonic() > deadline or "unhealthy" in states.values():
                logs = self.compose("logs", "--tail=20", check=False).stdout
                raise AssertionError(f"not healthy: {states}\n{logs}")
            time.sleep(2)

    def dotenv(self) -> dict[str, str]:
        lines = (self.directory / ".env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")

    def get(self, path: str) -> tuple[int, str]:
        values = self.dotenv()
        login = f"{values['DASHBOARD_USER']}:{values['DASHBOARD_PASSWORD']}".encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        request.add_header("Authorization", f"Basic {base64.b64encode(login).decode()}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()

    def mail_subjects(self) -> list[str]:
        url = "http://localhost:8025/api/v1/messages"
        body = json.loads(self.exec("mailpit", "curl", "-fsS", url))
        return [message["Subject"] for message in body["messages"]]

    def rows(self, database: str) -> str:
        query = "SELECT count(*), sum(total) FROM orders; SELECT count(*) FROM customers"
        return self.exec("db", "psql", "-U", "backup", "-d", database, "-tAc", query)


def project_directory(directory: Path) -> Path:
    for name in ("docker-compose.yml", "docker-compose.test.yml"):
        shutil.copy(ROOT / name, directory / name)
    shutil.copytree(ROOT / "docker", directory / "docker")
    env = {"PATH": "/usr/bin:/bin", "PERMAFROST_DOTENV": str(directory / ".env")}
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stack.py"), "env", "--docker-local"],
        env=env,
        check=True,
        capture_output=True,
    )
    with (directory / ".env").open("a") as dotenv:  # the dead-man's switch within seconds
        dotenv.write("ALERT_CHECK_INTERVAL=3s\nSCHEDULER_MAX_SILENCE=15s\n")
    return directory


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    engine_was_running = containers.answers("docker", "info")
    with step("prepare (packages, engine, base image, wheelhouse, image)"):
        containers.prepare()
    stack = Stack(project_directory(tmp_path_factory.mktemp("compose")), free_port())
    try:
        with step("compose up"):
            stack.compose("up", "-d")
        with step("all services healthy"):
            stack.wait_healthy()
        yield stack
    finally:
        with step("compose down"):
            stack.compose("down", "-v", "--remove-orphans", check=False)
        if not engine_was_running:
            containers.timed("engine stop", containers.stop)


def test_it_accepts_the_compose_file_with_the_env_setup_writes(stack: Stack) -> None:
    stack.compose("config", "-q")
    without_override = [*containers.compose_command(), "-f", "docker-compose.yml", "config", "-q"]
    subprocess.run(without_override, cwd=stack.directory, env=stack.env, check=True)


def test_it_answers_health_on_the_published_port(stack: Stack) -> None:
    status, body = stack.get("/health")
    assert status == 200, body


def test_it_backs_up_lists_and_restores_the_same_rows(stack: Stack) -> None:
    with step("exec backup"):
        assert "completed" in stack.exec("scheduler", "permafrost", "backup")
    listing = stack.exec("restore", "permafrost", "list")
    assert "shop" in listing and "completed" in listing
    with step("exec restore latest"):
        stack.exec("restore", "permafrost", "restore", "latest", "--target-db", "shop_restored")
    assert stack.rows("shop_restored") == stack.rows("shop")
    assert stack.rows("shop").startswith("20000|")


def test_it_shows_the_backup_on_the_dashboard(stack: Stack) -> None:
    backup_id = stack.exec("restore", "permafrost", "list").splitlines()[1].split()[0]
    status, page = stack.get("/")
    assert status == 200 and backup_id in page
    status, body = stack.get("/backups")
    assert status == 200 and backup_id in json.dumps(json.loads(body))


def test_it_emails_when_the_scheduler_is_stopped(stack: Stack) -> None:
    seen = len(stack.mail_subjects())
    stack.compose("stop", "scheduler")
    try:
        with step("dead-man's switch email"):
            deadline = time.monotonic() + 90
            while not any("scheduler stopped" in s for s in new_mail(stack, seen)):
                assert time.monotonic() < deadline, stack.mail_subjects()
                time.sleep(2)
    finally:
        stack.compose("start", "scheduler")
    assert any("CRITICAL" in s for s in new_mail(stack, seen))


def new_mail(stack: Stack, seen: int) -> list[str]:
    subjects = stack.mail_subjects()  # newest first
    return subjects[: len(subjects) - seen]


def test_a_scheduler_killed_mid_backup_leaves_an_interrupted_backup(stack: Stack) -> None:
    # About 300 MB of rows, so that pg_dump is still running when the container is killed.
    filler = "CREATE TABLE filler AS SELECT g, md5(g::text) || md5((g + 1)::text) AS t"
    stack.exec(
        "db",
        "psql",
        "-U",
        "backup",
        "-d",
        "shop",
        "-c",
        f"{filler} FROM generate_series(1, 3000000) g",
    )
    try:
        backup = subprocess.Popen(
            [*stack.base, "exec", "-T", "scheduler", "permafrost", "backup"],
            cwd=stack.directory,
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        with step("kill -s KILL mid-backup"):
            wait_for_pg_dump(stack, backup)
            stack.compose("kill", "-s", "KILL", "scheduler")
            backup.communicate(timeout=60)
            stack.compose("start", "scheduler")
        interrupted = stack.exec("restore", "permafrost", "list", "--status", "interrupted")
        assert len(interrupted.splitlines()) == 2, interrupted  # the header and that backup
        backup_id = interrupted.splitlines()[1].split()[0]
        verify = stack.compose(
            "exec", "-T", "restore", "permafrost", "verify", backup_id, check=False
        )
        assert verify.returncode == 3, verify.stdout + verify.stderr
    finally:
        stack.exec("db", "psql", "-U", "backup", "-d", "shop", "-c", "DROP TABLE filler")
    assert "completed" in stack.exec("scheduler", "permafrost", "backup")


def wait_for_pg_dump(stack: Stack, backup: subprocess.Popen[str]) -> None:
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'"
    deadline = time.monotonic() + 60
    while stack.exec("db", "psql", "-U", "backup", "-d", "shop", "-tAc", query).strip() == "0":
        if backup.poll() is not None:
            raise AssertionError(
                f"the backup ended before pg_dump was seen: {backup.communicate()}"
            )
        assert time.monotonic() < deadline, "pg_dump never started"
        time.sleep(0.2)


def test_an_upgrade_keeps_the_backups_and_runs_the_new_image(stack: Stack) -> None:
    before = stack.exec("restore", "permafrost", "list")
    with step("upgrade (a new image, up -d)"):
        containers.timed("next image", lambda: containers.project_image(NEXT, version="0.1.1"))
        stack.env["PERMAFROST_TEST_IMAGE"] = NEXT
        stack.compose("up", "-d")
        stack.wait_healthy()
    container = stack.compose("ps", "-q", "scheduler").stdout.strip()
    label = '{{index .Config.Labels "org.opencontainers.image.version"}}'
    inspect = subprocess.run(
        ["docker", "inspect", "-f", label, container], capture_output=True, text=True, check=True
    )
    assert inspect.stdout.strip() == "0.1.1"
    assert stack.exec("restore", "permafrost", "list") == before
    assert "completed" in stack.exec("scheduler", "permafrost", "backup")


def test_its_volumes_survive_down_and_up(stack: Stack) -> None:
    before = stack.exec("restore", "permafrost", "list")
    with step("down and up"):
        stack.compose("down")
        stack.compose("up", "-d")
        stack.wait_healthy()
    # The catalog (metadata-data) and the databases (db-data) are still there. The bucket is not
    # checked: moto's server, MinIO's stand-in, keeps its objects in memory, so this test is the
    # last (a backup after it finds the catalog's repository gone from the bucket).
    assert stack.exec("restore", "permafrost", "list") == before
    assert stack.rows("shop_restored") == stack.rows("shop")
