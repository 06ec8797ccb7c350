"""`./setup.sh` without Docker Compose: the services as supervised local processes.

One stack for the module (it takes a minute to start): run twice, a service killed with -9
comes back, an edited .env restarts what reads it, a malformed line is refused, an alert email
lands in .permafrost/mail/, and `stop` leaves nothing of any process group behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

# A docker client whose engine answers but that has no Compose plugin (v2).
FAKE_DOCKER = """#!/bin/sh
case "$1" in
  info) exit 0 ;;
  compose) echo "docker: 'compose' is not a docker command." >&2; exit 1 ;;
esac
exit 1
"""


@dataclass
class Stack:
    env: dict[str, str]
    home: Path
    dotenv: Path
    port: int
    first: subprocess.CompletedProcess[str]

    def setup(self, *args: str) -> subprocess.CompletedProcess[str]:
        return setup(self.env, *args)

    def state(self, name: str) -> dict[str, object]:
        try:
            found: dict[str, object] = json.loads((self.home / "run" / f"{name}.state").read_text())
        except (OSError, ValueError):
            return {}
        return found

    def processes(self) -> dict[int, str]:
        """Every process that carries this stack's mark, children of the services included."""
        mark = f"PERMAFROST_STACK={self.home}".encode()
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if mark in (entry / "environ").read_bytes().split(b"\0"):
                        found[int(entry.name)] = (entry / "cmdline").read_bytes().decode()
                except OSError:
                    continue
        return found


def setup(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["./setup.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def wait_until(what: str, check: Callable[[], object], seconds: float = 180) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"waited {seconds:.0f} s for {what}")


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as health:
            return health.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="permafrost-native-"))
    root.chmod(0o755)  # the cluster inside runs as the postgres user
    (root / "bin").mkdir()
    (root / "bin" / "docker").write_text(FAKE_DOCKER)
    (root / "bin" / "docker").chmod(0o755)
    # ... and no Compose v1 either (Debian's docker-compose may be installed on this machine).
    (root / "bin" / "docker-compose").write_text("#!/bin/sh\nexit 127\n")
    (root / "bin" / "docker-compose").chmod(0o755)
    (root / "user").mkdir()
    home = root / "home"
    port = free_port()
    env = {
        # No /usr/sbin: PostgreSQL's programs must still run as postgres (no runuser needed).
        "PATH": f"{root / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(root / "user"),
        "PERMAFROST_HOME": str(home),
        "PERMAFROST_DOTENV": str(root / ".env"),
        "MONITOR_PORT": str(port),
        "NATIVE_PG_PORT": str(free_port()),
        "WAL_ARCHIVING": "receive",
        "WAL_SPOOL_DIR": str(home / "wal-spool"),
        "SCHEDULE_MISFIRE_GRACE": "1m",
        "ALERT_CHECK_INTERVAL": "3s",
    }
    first = setup(env)
    try:
        yield Stack(env, home, root / ".env", port, first)
    finally:
        setup(env, "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_it_runs_the_stack_and_says_that_compose_is_what_is_missing(stack: Stack) -> None:
    first = stack.first
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    assert "a Docker engine answers but Docker Compose is missing" in first.stderr
    assert (
        "docker-compose-plugin" in first.stderr and "no Docker engine answers" not in first.stderr
    )
    key = next(
        line
        for line in stack.dotenv.read_text().splitlines()
        if line.startswith("BACKUP_ENCRYPTION_KEY=")
    )
    assert len(key) > len("BACKUP_ENCRYPTION_KEY=") + 40
    assert "a lost key means lost backups" in first.stderr.lower()
    assert f"http://localhost:{stack.port}/" in first.stdout
    assert f"{stack.home / 'mail'}/" in first.stdout
    assert "verified by restoring 2 tables" in first.stderr
    assert "permafrost doctor" in first.stderr  # at the end: its report, then whatever it found
    assert "logical backups: ready" in first.stdout
    assert healthy(stack.port)


def test_a_second_run_changes_nothing(stack: Stack) -> None:
    dotenv = stack.dotenv.read_text()
    pids = {name: stack.state(name)["pid"] for name in ("scheduler", "monitor", "restore")}
    second = stack.setup()
    assert second.returncode == 0, second.stderr[-3000:]
    assert "scheduler is already running" in second.stderr
    assert "taking a first backup" not in second.stderr and "restarting" not in second.stderr
    assert stack.dotenv.read_text() == dotenv  # no key generated twice
    assert {name: stack.state(name)["pid"] for name in pids} == pids


def test_status_says_what_runs_since_when_and_how_often_it_restarted(stack: Stack) -> None:
    status = stack.setup("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "supervisor running" in status.stdout
    assert "scheduler  running (pid" in status.stdout and "scheduler: alive" in status.stdout
    assert " UTC, 0 restarts" in status.stdout
    assert "mail       running" in status.stdout


def test_the_monitors_have_no_shared_gunicorn_control_socket(stack: Stack) -> None:
    assert not (Path(stack.env["HOME"]) / ".gunicorn").exists()


def test_a_service_killed_with_kill_9_comes_back(stack: Stack) -> None:
    old = stack.state("monitor")["pid"]
    assert isinstance(old, int)
    os.kill(old, signal.SIGKILL)
    wait_until("a new monitor", lambda: stack.state("monitor").get("pid") not in (None, old))
    wait_until("the new monitor to answer", lambda: healthy(stack.port))
    log = (stack.home / "logs" / "supervisor.log").read_text()
    assert "monitor exited (killed by signal 9)" in log and "restarting in 1 s" in log
    status = stack.setup("status")
    assert "monitor    running" in status.stdout and "1 restart;" in status.stdout, status.stdout
    assert "last: exited (killed by signal 9)" in status.stdout


def receivers(stack: Stack) -> list[int]:
    return [pid for pid, line in stack.processes().items() if "pg_receivewal" in line]


def test_a_killed_scheduler_comes_back_without_its_old_pg_receivewal(stack: Stack) -> None:
    old = wait_until("pg_receivewal under the scheduler", lambda: receivers(stack))
    scheduler = stack.state("scheduler")["pid"]
    assert isinstance(scheduler, int) and isinstance(old, list)
    os.kill(scheduler, signal.SIGKILL)
    wait_until(
        "a new scheduler", lambda: stack.state("scheduler").get("pid") not in (None, scheduler)
    )
    wait_until("the old pg_receivewal to be gone", lambda: not set(old) & set(receivers(stack)))
    wait_until("a new pg_receivewal", lambda: receivers(stack))
    log = (stack.home / "logs" / "supervisor.log").read_text()
    assert "killed what was left of its process group" in log


def test_editing_env_restarts_the_services_that_read_it_and_says_so(stack: Stack) -> None:
    before = {name: stack.state(name)["pid"] for name in ("scheduler", "monitor", "mail")}
    text = stack.dotenv.read_text()
    stack.dotenv.write_text(text.replace("\nMAX_BACKUP_AGE=26h\n", "\nMAX_BACKUP_AGE=30h\n"))
    again = stack.setup()
    assert again.returncode == 0, again.stderr[-3000:]
    assert ".env changed (MAX_BACKUP_AGE): restarting scheduler, monitor, restore" in again.stderr
    assert "mail is already running" in again.stderr
    after = {name: stack.state(name)["pid"] for name in before}
    assert after["scheduler"] != before["scheduler"] and after["monitor"] != before["monitor"]
    assert after["mail"] == before["mail"]
    assert "MAX_BACKUP_AGE=30h" in (stack.home / "permafrost.env").read_text()
    assert healthy(stack.port)


def test_a_malformed_env_line_is_refused_with_its_number(stack: Stack) -> None:
    text = stack.dotenv.read_text()
    number = len(text.splitlines()) + 1
    pids = {name: stack.state(name)["pid"] for name in ("scheduler", "monitor")}
    stack.dotenv.write_text(text + "this is not a setting\n")
    try:
        refused = stack.setup()
    finally:
        stack.dotenv.write_text(text)
    assert refused.returncode == 2, refused.stderr
    assert f".env, line {number}: expected NAME=value" in refused.stderr
    last = refused.stderr.splitlines()[-1]
    assert last.startswith("setup: error: ") and f"line {number}" in last
    assert refused.stderr.count("error") == 1 and "Traceback" not in refused.stderr
    assert {name: stack.state(name)["pid"] for name in pids} == pids


def test_the_backup_page_offers_the_native_command_and_a_free_target(stack: Stack) -> None:
    import base64

    import psycopg

    settings_file = stack.home / "permafrost.env"
    values = dict(line.split("=", 1) for line in settings_file.read_text().splitlines())
    dotenv = dict(
        line.split("=", 1) for line in stack.dotenv.read_text().splitlines() if "=" in line
    )
    env = {**os.environ, "PERMAFROST_ENV_FILE": str(settings_file)}
    listed = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "permafrost"), "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    backup = json.loads(listed.stdout)[0]["id"]
    server = values["DATABASE_URL"].rsplit("/", 1)[0]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE shop_restored")
    login = base64.b64encode(
        f"{dotenv['DASHBOARD_USER']}:{dotenv['DASHBOARD_PASSWORD']}".encode()
    ).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.port}/backup/{backup}",
        headers={"Accept": "text/html", "Authorization": f"Basic {login}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        page = response.read().decode()
    assert "docker compose" not in page
    assert (
        f"PERMAFROST_ENV_FILE={settings_file} .venv/bin/permafrost restore {backup} "
        "--target-db shop_restored_2"
    ) in page


def test_an_alert_email_lands_in_the_mail_directory(stack: Stack) -> None:
    env = {**os.environ, "PERMAFROST_ENV_FILE": str(stack.home / "permafrost.env")}
    permafrost = [str(ROOT / ".venv" / "bin" / "permafrost")]
    sql = "ALTER DATABASE shop ALLOW_CONNECTIONS {}"
    import psycopg

    url = next(
        line.split("=", 1)[1]
        for line in (stack.home / "permafrost.env").read_text().splitlines()
        if line.startswith("METADATA_DATABASE_URL=")
    ).rsplit("/", 1)[0]
    with psycopg.connect(f"{url}/postgres", autocommit=True) as conn:
        conn.execute(sql.format("false"))  # type: ignore[arg-type]
        try:
            failed = subprocess.run(
                [*permafrost, "backup"], env=env, capture_output=True, text=True, timeout=300
            )
        finally:
            conn.execute(sql.format("true"))  # type: ignore[arg-type]
    assert failed.returncode != 0
    mails = wait_until("an alert email in mail/", lambda: list((stack.home / "mail").glob("*.eml")))
    assert isinstance(mails, list)
    text = b"".join(path.read_bytes() for path in mails).decode(errors="replace")
    assert "oncall@localhost" in text and "shop" in text


def test_stop_stops_whole_process_groups_even_without_their_leaders(stack: Stack) -> None:
    wait_until("pg_receivewal under the scheduler", lambda: receivers(stack))
    supervisor = int((stack.home / "run" / "supervisor.pid").read_text())
    os.kill(supervisor, signal.SIGKILL)  # nothing restarts the scheduler now
    scheduler = stack.state("scheduler")["pid"]
    assert isinstance(scheduler, int)
    os.kill(scheduler, signal.SIGKILL)
    # Its wal-receive and pg_receivewal die with it (PR_SET_PDEATHSIG), supervisor or not.
    wait_until("pg_receivewal gone with its scheduler", lambda: not receivers(stack))
    stopped = stack.setup("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped scheduler" in stopped.stderr and "PostgreSQL stopped" in stopped.stderr
    assert stack.processes() == {}
    after = stack.setup("status")
    assert after.returncode == 1 and "scheduler  stopped" in after.stdout


def test_the_supervisor_gives_up_on_a_service_that_keeps_crashing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "logs").mkdir()
    crash = ["/bin/sh", "-c", "echo cannot start >&2; exit 3"]
    spec = {"argv": crash, "env": {"PATH": "/usr/bin:/bin"}, "cwd": "/", "digest": "x"}
    (run / "services.json").write_text(json.dumps({"restore": spec}))
    env = {"PATH": "/usr/bin:/bin", "PERMAFROST_HOME": str(tmp_path)}
    stack = [sys.executable, str(ROOT / "scripts" / "stack.py")]
    supervisor = subprocess.Popen(
        [*stack, "supervise"],
        env=env,
        stdout=(tmp_path / "logs" / "supervisor.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        state = run / "restore.state"
        wait_until(
            "the supervisor to give up",
            lambda: state.exists() and '"failed"' in state.read_text(),
            seconds=120,
        )
        status = subprocess.run([*stack, "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 1
        assert "restore    failed: gave up at " in status.stdout
        assert "exited 5 times in a row within 10 s of starting" in status.stdout
        log = (tmp_path / "logs" / "supervisor.log").read_text()
        assert "restore exited (exit code 3)" in log and "restarting in 8 s" in log
        assert "cannot start" in (tmp_path / "logs" / "restore.log").read_text()
    finally:
        supervisor.terminate()
        supervisor.wait(timeout=60)


FAKE_COMPOSE = """#!/bin/sh
echo "$@" >> "$DOCKER_CALLS"
case "$*" in *"list --status completed --json"*) echo '[{"database": "shop"}]' ;; esac
exit 0
"""


@pytest.mark.parametrize("dotenv_ok", [True, False])
def test_with_compose_it_says_changed_settings_are_applied_and_refuses_a_bad_env_line(
    tmp_path: Path, dotenv_ok: bool
) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "docker").write_text(FAKE_COMPOSE)
    (tmp_path / "bin" / "docker").chmod(0o755)
    dotenv = tmp_path / ".env"
    dotenv.write_text("MONITOR_PORT=8090\n" + ("" if dotenv_ok else "oops no equals sign\n"))
    env = {
        "PATH": f"{tmp_path / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PERMAFROST_DOTENV": str(dotenv),
        "PERMAFROST_HOME": str(tmp_path / "home"),
        "DOCKER_CALLS": str(tmp_path / "calls"),
    }
    result = setup(env)
    calls = (tmp_path / "calls").read_text() if (tmp_path / "calls").exists() else ""
    if dotenv_ok:
        assert result.returncode == 0, result.stderr
        assert "docker compose recreates the services whose settings in .env changed" in (
            result.stderr
        )
        # setup.sh builds the image itself: `up` builds nothing, so an unchanged image
        # recreates no container
        assert "up -d --wait" in calls and "up -d --build" not in calls
        assert "exec -T restore permafrost verify latest --database shop --test-restore" in calls
        assert "exec -T scheduler permafrost doctor" in calls  # its findings never stop setup
    else:
        assert result.returncode == 2, result.stderr
        assert f"{dotenv}, line 2: expected NAME=value" in result.stderr.splitlines()[-1]
        assert "up -d" not in calls  # nothing was started or recreated
