"""The stack as users run it: `./setup.sh` with Docker, docker-compose.yml, and README's commands.

Run alone, as `./setup.sh test containers` does: `pytest -m containers -s tests/containers`.
scripts/containers.py starts a Docker engine when none answers (and stops it at the end), builds
the base image and permafrost:test (cached under .cache/docker). The test then copies the checkout
into a directory of its own and runs setup.sh's Docker path there, with docker-compose.test.yml
named in COMPOSE_FILE (its stand-ins replace the images no registry serves here) and the offline
build arguments. setup.sh builds permafrost:0.1.0, starts the stack, takes and proves the first
backup; every test after that runs on that one stack, in the order written. The commands a user
types are recorded and compared with README's Docker path, line for line (the last test).
Each step prints its time in one line: `containers: <step> 3.2s`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from tests.services import free_port

pytestmark = pytest.mark.containers

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import containers  # noqa: E402

SERVICES = ("scheduler", "monitor", "restore", "metadata", "db", "minio", "mailpit")
OURS = ("scheduler", "monitor", "restore")  # the services LOG_FORMAT=logfmt applies to
# What setup.sh's Docker path reads and builds from (the Dockerfile's context among it).
SOURCES = (
    "setup.sh",
    ".env.example",
    ".dockerignore",
    "Dockerfile",
    "pyproject.toml",
    "README.md",
    "docker-compose.yml",
    "docker-compose.test.yml",
    "docker",
    "scripts",
    "permafrost",
    "scheduler",
    "monitor",
    "restore",
    "wheelhouse",
)
README_PATH = "<!-- README's Docker path: tests/containers/test_compose.py runs these, in order -->"


HEALTH = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
SERVICE_AND_ID = '{{.Label "com.docker.compose.service"}} {{.ID}}'


@contextmanager
def step(name: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"containers: {name} {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)


class Stack:
    """One compose project in a copy of the checkout, so the checkout's .env is never touched."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port, self.mail_port = free_port(), free_port()
        self.env = {
            **os.environ,
            **containers.BUILD_ARGS,  # the offline build: every layer but the labels is cached
            "COMPOSE_FILE": "docker-compose.yml:docker-compose.test.yml",
            "COMPOSE_PROJECT_NAME": f"permafrost-test-{os.getpid()}",
            "MONITOR_PORT": str(self.port),
            "MAILPIT_PORT": str(self.mail_port),
            "MINIO_CONSOLE_PORT": str(free_port()),
        }
        self.base = [*containers.compose_command(), "--profile", "local"]
        self.typed: list[str] = []  # the user's commands, as README shows them
        self.first_run = ""  # what the first ./setup.sh printed

    def setup(self) -> str:
        """`./setup.sh`, as a user runs it; its output, stdout and stderr."""
        self.typed.append("./setup.sh")
        result = subprocess.run(
            ["./setup.sh"],
            cwd=self.directory,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stdout
        return result.stdout

    def user(self, *args: str, shown: str = "") -> str:
        """A compose command of README's path: no --profile (setup.sh's .env sets the local
        profile); README drops the `-T` (no terminal here) and writes `docker compose`."""
        self.typed.append(shown or " ".join(["docker compose", *(a for a in args if a != "-T")]))
        command = [*containers.compose_command(), *args]
        result = subprocess.run(
            command, cwd=self.directory, env=self.env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{' '.join(args)}: {result.stdout}{result.stderr}"
        return result.stdout

    def shell(self, command: str) -> None:
        """A command of README's path that is not Compose's (editing .env)."""
        self.typed.append(command)
        subprocess.run(["sh", "-c", command], cwd=self.directory, env=self.env, check=True)

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.base, *args], cwd=self.directory, env=self.env, capture_output=True, text=True
        )
        if check and result.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)}: {result.stdout}{result.stderr}")
        return result

    def exec(self, service: str, *command: str) -> str:
        return self.compose("exec", "-T", service, *command).stdout

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def inspect(self, service: str, template: str) -> str:
        result = subprocess.run(
            ["docker", "inspect", "-f", template, self.container(service)],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()

    def states(self, template: str) -> dict[str, str]:
        """`docker inspect -f template` of each of SERVICES' containers, in two engine calls
        (Compose v1 takes a second or more to start, each time)."""
        project = f"label=com.docker.compose.project={self.env['COMPOSE_PROJECT_NAME']}"
        listing = subprocess.run(
            ["docker", "ps", "-a", "--filter", project, "--format", SERVICE_AND_ID],
            capture_output=True,
            text=True,
            check=True,
        )
        ids = dict(line.split() for line in listing.stdout.splitlines())
        missing = [name for name in SERVICES if name not in ids]
        assert not missing, f"not running: {missing}"
        inspect = subprocess.run(
            ["docker", "inspect", "-f", template, *(ids[name] for name in SERVICES)],
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(zip(SERVICES, inspect.stdout.splitlines(), strict=True))

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = self.states(HEALTH)
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
        """Newest first, from the mailbox URL setup.sh prints (the host's published port)."""
        url = f"http://127.0.0.1:{self.mail_port}/api/v1/messages"
        with urllib.request.urlopen(url, timeout=10) as response:
            messages = json.load(response)["messages"]
        return [" ".join(message["Subject"].split()) for message in messages]  # unfolded

    def rows(self, database: str) -> str:
        query = "SELECT count(*), sum(total) FROM orders; SELECT count(*) FROM customers"
        return self.exec("db", "psql", "-U", "backup", "-d", database, "-tAc", query)

    def metadata(self, query: str) -> str:
        return self.exec(
            "metadata", "psql", "-U", "permafrost", "-d", "permafrost", "-tAc", query
        ).strip()

    def backups(self, *options: str) -> list[str]:
        """The backup ids `permafrost list` shows, newest first."""
        listing = self.exec("restore", "permafrost", "list", *options)
        return [line.split()[0] for line in listing.splitlines()[1:] if line.strip()]


def project_directory(directory: Path) -> Path:
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, directory / name, ignore=skip)
        else:
            shutil.copy2(ROOT / name, directory / name)
    text = (ROOT / ".env.example").read_text()  # as `cp .env.example .env` leaves it, and:
    # The dead-man's switch within a minute: the scheduler writes a heartbeat every 30 s.
    for name, value in (("ALERT_CHECK_INTERVAL", "3s"), ("SCHEDULER_MAX_SILENCE", "45s")):
        text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, flags=re.MULTILINE)
    (directory / ".env").write_text(text)
    (directory / ".env").chmod(0o600)
    return directory


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    engine_was_running = containers.answers("docker", "info")
    with step("prepare (packages, engine, base image, wheelhouse, image)"):
        containers.prepare()
    stack = Stack(project_directory(tmp_path_factory.mktemp("compose")))
    try:
        with step("./setup.sh (build, up, healthy, first backup, test restore)"):
            stack.first_run = stack.setup()
        yield stack
    finally:
        with step("compose down"):
            stack.compose("down", "-v", "--remove-orphans", check=False)
        if not engine_was_running:
            containers.timed("engine stop", containers.stop)


def test_setup_builds_starts_takes_the_first_backup_and_proves_it(stack: Stack) -> None:
    output = stack.first_run
    assert "building the image permafrost:0.1.0" in output, output
    assert "cannot be" not in output, output  # neither pulled nor built: the native fallback
    assert f"dashboard   http://localhost:{stack.port}/" in output, output
    assert f"alert mail  http://localhost:{stack.mail_port}/" in output, output
    stack.wait_healthy(timeout=10)  # setup.sh waited already
    (first,) = stack.backups("--status", "completed")
    assert re.search(rf"backup {first} verified by restoring [1-9]\d* tables", output), output
    assert stack.get("/health")[0] == 200
    assert isinstance(stack.mail_subjects(), list)  # the mailbox answers on the printed URL
    # The restore service's env_file, which Compose v1 requires: setup.sh made it, private.
    restore_env = stack.directory / "restore.env"
    assert restore_env.read_text() == "" and restore_env.stat().st_mode & 0o777 == 0o600


def test_a_second_setup_changes_nothing(stack: Stack) -> None:
    template = "{{.Id}} {{.State.StartedAt}}"
    before = stack.states(template)
    with step("./setup.sh again"):
        output = stack.setup()
    assert "no first backup taken" in output, output
    assert len(stack.backups()) == 1
    assert stack.states(template) == before


def test_without_a_pinned_image_setup_says_which_in_one_line(stack: Stack) -> None:
    # docker-compose.yml alone: its postgres, MinIO and Mailpit images cannot be pulled here, so
    # setup.sh names the first and runs natively (the case at its end); only the line is checked.
    result = subprocess.run(
        ["bash", "-c", "source ./setup.sh && images_available"],
        cwd=stack.directory,
        env={**stack.env, "COMPOSE_FILE": "docker-compose.yml"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    pattern = (
        r"setup: the image \S+:\S+ cannot be pulled \(.+\): running the services as local processes"
    )
    assert re.fullmatch(pattern, line), line


def test_it_accepts_the_compose_file_with_the_env_setup_writes(stack: Stack) -> None:
    stack.compose("config", "-q")
    without_override = [*containers.compose_command(), "-f", "docker-compose.yml", "config", "-q"]
    subprocess.run(without_override, cwd=stack.directory, env=stack.env, check=True)


def test_it_backs_up_lists_and_restores_the_same_rows(stack: Stack) -> None:
    with step("exec backup"):
        assert "completed" in stack.user("exec", "-T", "scheduler", "permafrost", "backup")
    listing = stack.user("exec", "-T", "restore", "permafrost", "list")
    assert "shop" in listing and "completed" in listing
    with step("exec restore latest"):
        stack.user(
            "exec",
            "-T",
            "restore",
            "permafrost",
            "restore",
            "latest",
            "--target-db",
            "shop_restored",
        )
    assert stack.rows("shop_restored") == stack.rows("shop")
    assert stack.rows("shop").startswith("20000|")


def test_it_shows_the_backup_on_the_dashboard(stack: Stack) -> None:
    backup_id = stack.backups()[0]
    status, page = stack.get("/")
    assert status == 200 and backup_id in page
    status, body = stack.get("/backups")
    assert status == 200 and backup_id in json.dumps(json.loads(body))


def test_a_stopped_scheduler_is_emailed_and_its_return_too(stack: Stack) -> None:
    before = stack.mail_subjects()
    assert not any("scheduler" in subject for subject in before), before  # no false alarm
    seen = len(before)
    stack.user("stop", "scheduler")
    try:
        with step("dead-man's switch email"):
            critical = wait_for_mail(stack, seen, lambda s: "CRITICAL: the scheduler stopped" in s)
        # Nothing is resolved while the scheduler stays stopped.
        assert not any("RESOLVED" in subject for subject in new_mail(stack, seen))
    finally:
        stack.user("start", "scheduler")
    with step("resolved email"):
        resolved = wait_for_mail(stack, seen, lambda s: "RESOLVED: the scheduler stopped" in s)
    print(f"containers: emails {critical!r}, then {resolved!r}", file=sys.stderr)


def wait_for_mail(stack: Stack, seen: int, wanted: Callable[[str], bool]) -> str:
    deadline = time.monotonic() + 90
    while True:
        found = [subject for subject in new_mail(stack, seen) if wanted(subject)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, stack.mail_subjects()
        time.sleep(1)


def new_mail(stack: Stack, seen: int) -> list[str]:
    subjects = stack.mail_subjects()  # newest first
    return subjects[: len(subjects) - seen]


def test_a_scheduler_killed_mid_backup_is_restarted_and_its_backup_left_interrupted(
    stack: Stack,
) -> None:
    # About 300 MB of rows, so that pg_dump is still running when the container is killed.
    filler = "CREATE TABLE filler AS SELECT g, md5(g::text) || md5((g + 1)::text) AS t"
    psql = ("db", "psql", "-U", "backup", "-d", "shop", "-c")
    stack.exec(*psql, f"{filler} FROM generate_series(1, 3000000) g")
    try:
        killed = kill_mid_backup(stack)
    finally:
        stack.exec(*psql, "DROP TABLE filler")
    assert killed in stack.backups("--status", "interrupted")
    assert killed not in stack.backups("--status", "completed")
    runs = stack.metadata(f"SELECT status FROM permafrost.job_runs WHERE backup_id = '{killed}'")
    assert runs == "aborted", runs
    verify = stack.compose("exec", "-T", "restore", "permafrost", "verify", killed, check=False)
    assert verify.returncode == 3, verify.stdout + verify.stderr
    assert "completed" in stack.exec("scheduler", "permafrost", "backup")


def kill_mid_backup(stack: Stack) -> str:
    """SIGKILL to the scheduler container's process from the host, during a backup, as the OOM
    killer or a crash ends it; the restart policy alone (unless-stopped) must bring it back.
    Not `docker kill -s KILL`: Docker counts that as a manual stop (daemon/kill.go sets
    HasBeenManuallyStopped for any signal), and no restart policy restarts it then.
    Returns the killed backup's id."""
    restarts = int(stack.inspect("scheduler", "{{.RestartCount}}"))
    backup = subprocess.Popen(
        [*stack.base, "exec", "-T", "scheduler", "permafrost", "backup"],
        cwd=stack.directory,
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with step("kill -s KILL mid-backup, restarted by the policy"):
        wait_for_pg_dump(stack, backup)
        killed = stack.backups("--status", "running")
        os.kill(int(stack.inspect("scheduler", "{{.State.Pid}}")), signal.SIGKILL)
        backup.communicate(timeout=60)
        deadline = time.monotonic() + 60
        while int(stack.inspect("scheduler", "{{.RestartCount}}")) == restarts:
            assert time.monotonic() < deadline, "the restart policy did not bring it back"
            time.sleep(0.5)
        stack.wait_healthy(timeout=120)
    assert len(killed) == 1, killed
    return killed[0]


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


LOGFMT = re.compile(r'^ts=\S+ level=[a-z]+ service=\S+ logger=\S+ msg=("(?:[^"\\]|\\.)*"|\S*)')


def test_every_service_logs_logfmt_one_line_per_event(stack: Stack) -> None:
    output = stack.user("logs", "--no-color", *OURS)
    lines = [line.split("| ", 1)[1] for line in output.splitlines() if "| " in line]
    assert len(lines) > 20, output
    services = {match.group(1) for match in re.finditer(r" service=(\S+)", "\n".join(lines))}
    assert {"scheduler", "monitor", "restore-worker"} <= services, services
    bad = [line for line in lines if not LOGFMT.match(line)]
    assert not bad, "\n".join(bad[:10])


def test_down_and_up_keep_the_catalog_the_databases_and_the_bucket(stack: Stack) -> None:
    before = stack.backups()
    with step("down and up"):
        stack.user("down")
        stack.user("up", "-d")
        stack.wait_healthy()
    assert stack.backups() == before  # the catalog: the metadata-data volume
    assert stack.rows("shop_restored") == stack.rows("shop")  # the databases: db-data
    with step("restore latest after down and up"):  # the bucket: minio-data
        stack.user(
            "exec", "-T", "restore", "permafrost", "restore", "latest", "--target-db", "shop_again"
        )
    assert stack.rows("shop_again") == stack.rows("shop")
    assert "completed" in stack.user("exec", "-T", "scheduler", "permafrost", "backup")


def test_an_upgrade_migrates_once_and_restores_the_old_backups(stack: Stack) -> None:
    migrations = "SELECT version, applied_at FROM permafrost.schema_migrations ORDER BY version"
    applied = stack.metadata(migrations)
    files = sorted((ROOT / "permafrost" / "catalog" / "migrations").glob("*.sql"))
    assert len(applied.splitlines()) == len(files)
    oldest = stack.backups()[-1]  # the first backup, taken by setup.sh under 0.1.0
    stack.shell("sed -i 's/^PERMAFROST_VERSION=.*/PERMAFROST_VERSION=0.1.1/' .env")
    with step("upgrade: ./setup.sh with PERMAFROST_VERSION=0.1.1"):
        output = stack.setup()
    assert "building the image permafrost:0.1.1" in output, output
    for service in OURS:
        label = '{{index .Config.Labels "org.opencontainers.image.version"}}'
        assert stack.inspect(service, label) == "0.1.1"
    assert stack.metadata(migrations) == applied  # none applied again, none new
    with step("restore the first backup under 0.1.1"):
        stack.user(
            "exec",
            "-T",
            "restore",
            "permafrost",
            "restore",
            oldest,
            "--target-db",
            "shop_v010",
            shown="docker compose exec restore permafrost restore ID --target-db shop_v010",
        )
    assert stack.rows("shop_v010") == stack.rows("shop")
    assert "completed" in stack.user("exec", "-T", "scheduler", "permafrost", "backup")


SQLITE_IN_THE_STACK = "**In the stack.**"  # README's SQLite section: the override to write
APP_ROWS = {"users": 3, "notes": 5}


def sqlite_app(directory: Path) -> Path:
    """An application's SQLite file in rollback-journal mode, readable by the containers' uid
    10001, in a directory they may write (a restore writes beside the file)."""
    path = directory / "app.db"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("PRAGMA journal_mode=delete")
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users)")
        db.executemany("INSERT INTO users (name) VALUES (?)", [("ann",), ("bob",), ("cy",)])
        db.executemany("INSERT INTO notes (user_id) VALUES (?)", [(1,), (1,), (2,), (3,), (3,)])
    path.chmod(0o644)
    directory.chmod(0o777)
    return path


def sqlite_override(directory: Path) -> str:
    """README's docker-compose.override.yml for a SQLite file, the host directory swapped in."""
    readme = (ROOT / "README.md").read_text().split("## SQLite files", 1)[1]
    block = readme.split(SQLITE_IN_THE_STACK, 1)[1].split("```", 2)[1]
    assert block.count("/srv/admin:/srv/admin") == 2 and block.count("/srv/admin/admin.db") == 2
    block = block.replace("/srv/admin:/srv/admin", f"{directory}:/srv/app")
    return block.replace("/srv/admin/admin.db", "/srv/app/app.db").lstrip("\n")


def test_a_sqlite_file_is_backed_up_verified_restored_and_measured(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # As README's SQLite section says: its override, named in COMPOSE_FILE as this test sets
    # that variable (Compose reads docker-compose.override.yml itself only without it), then
    # `docker compose up -d`, which recreates the scheduler and the restore worker.
    directory = tmp_path_factory.mktemp("sqlite-app")
    sqlite_app(directory)
    (stack.directory / "docker-compose.override.yml").write_text(sqlite_override(directory))
    stack.env["COMPOSE_FILE"] += ":docker-compose.override.yml"
    with step("sqlite: up -d with the override"):
        stack.compose("up", "-d")
        stack.wait_healthy()
    with step("sqlite: backup, verify --test-restore, restore"):
        made = json.loads(
            stack.exec("scheduler", "permafrost", "backup", "--database", "app.db", "--json")
        )
        assert made["kind"] == "sqlite" and made["database"] == "app.db", made
        assert made["sqlite"]["path"] == "/srv/app/app.db", made
        verify = stack.exec(
            "restore", "permafrost", "verify", "latest", "--database", "app.db", "--test-restore"
        )
        assert len(re.findall(r"^  \S.*? {2,}passed\b", verify, re.MULTILINE)) == 7, verify
        stack.exec(
            "restore",
            "permafrost",
            "restore",
            "latest",
            "--database",
            "app.db",
            "--target-path",
            "/srv/app/restored.db",
        )
    with closing(
        sqlite3.connect(f"{(directory / 'restored.db').as_uri()}?mode=ro", uri=True)
    ) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in APP_ROWS}
    assert counts == APP_ROWS
    metrics = stack.get("/metrics")[1]
    sample = 'permafrost_backup_last_success_timestamp_seconds{database="app.db",kind="sqlite"}'
    assert sample in metrics, metrics


def test_readme_shows_the_docker_path_this_test_ran(stack: Stack) -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split(README_PATH, 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    shown = [line.split("  #")[0].strip() for line in block.strip().splitlines()]
    shown = [line for line in shown if line and not line.startswith("#")]
    assert stack.typed == shown
