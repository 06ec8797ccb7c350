"""The whole system as docker-compose runs it, without Docker: the scheduler, the monitor and the
restore worker as separate processes, with the compose file's commands and the .env variables,
against a source cluster, a metadata cluster of its own, the S3 server and an SMTP server.

An operator's day: a backup from "run now", seen on /backups and /metrics; a test restore done by
the worker; the scheduler stopped and the dead-man's-switch email; a restore from the command
line compared row by row; the scheduler back and the alert resolved by email.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import KEY, run
from tests.helpers import table_digest
from tests.services import Cluster, S3Server, serve_http
from tests.test_alerts import SMTPServer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "stack-test-api-token-0123456789"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


@pytest.fixture(scope="module")
def metadata_cluster() -> Iterator[Cluster]:
    cluster = Cluster("metadata").start()
    yield cluster
    cluster.destroy()


class Service:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        command = list(COMPOSE[name]["command"])  # exactly what compose runs
        if command[0] in ("permafrost", "gunicorn"):
            command[0] = str(BIN / command[0])
        if name == "monitor":
            command[command.index("0.0.0.0:8090")] = f"127.0.0.1:{env['MONITOR_PORT']}"
        self.name, self.command, self.env = name, command, env
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(self.command, env=self.env, stdout=handle, stderr=handle)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            kind = response.headers.get("Content-Type", "")
            return response.status, json.loads(raw) if "json" in kind else raw.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:  # not listening yet
        return 0, None


def finished(task_url: str, what: str) -> dict[str, Any]:
    """A queued task once it has succeeded or failed."""

    def done() -> dict[str, Any] | None:
        task = http("GET", task_url)[1]
        return (
            task if isinstance(task, dict) and task["status"] in ("succeeded", "failed") else None
        )

    found: dict[str, Any] = wait_for(done, what)
    return found


def test_an_operators_day_with_the_three_services(
    pg: Cluster,
    metadata_cluster: Cluster,
    s3: S3Server,
    bucket: str,
    source_db: str,
    tmp_path: Path,
) -> None:
    smtp = SMTPServer()
    metadata_db = metadata_cluster.create_database("permafrost")
    env = {  # what .env would hold, as compose passes it (env_file) to the three services
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(pg.port),
        "DB_USER": "postgres",
        "DB_PASSWORD": "test-Secret-pw-1",
        "DB_NAME": source_db,
        "METADATA_DATABASE_URL": metadata_cluster.url(metadata_db),
        "STORAGE_URL": f"s3://{bucket}/permafrost",
        "S3_ENDPOINT_URL": s3.url,
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "S3_PROVIDER": "minio",
        "BACKUP_ENCRYPTION_KEY": KEY,
        "MONITOR_API_TOKEN": TOKEN,
        "ALERT_EMAIL": "oncall@example.com",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "SMTP_TLS": "none",
        "ALERT_CHECK_INTERVAL": "1",
        "SCHEDULER_MAX_SILENCE": "6s",
        "BACKUP_SCHEDULE": "off",
        "COMPLIANCE_SCHEDULE": "off",
        "VERIFY_SCHEDULE": "off",
        "CLEANUP_SCHEDULE": "off",
        "LIFECYCLE_SCHEDULE": "off",
        "RESTORE_TMPDIR": str(tmp_path),
    }
    monitors: list[Service] = []

    def start_monitor(port: int) -> subprocess.Popen[bytes]:
        env.update(MONITOR_PORT=str(port), MONITOR_PUBLIC_URL=f"http://127.0.0.1:{port}")
        monitors.append(Service("monitor", dict(env), tmp_path))
        assert monitors[-1].proc is not None
        return monitors[-1].proc

    _, port = serve_http(start_monitor)  # first, so its port is in the env the others share
    base = f"http://127.0.0.1:{port}"
    services = {name: Service(name, env, tmp_path) for name in ("scheduler", "restore")}
    services["monitor"] = monitors[-1]
    try:
        wait_for(lambda: http("GET", base + "/health")[0] == 200, "the monitor's /health")
        wait_for(
            lambda: (
                isinstance(body := http("GET", base + "/status")[1], dict)
                and body["scheduler"]["alive"]
            ),
            "a live scheduler",
        )

        # Run now: the scheduler takes the task and backs up.
        status, queued = http("POST", base + "/backup/run-now", {"database": source_db})
        assert status == 202, queued
        task = finished(base + queued["status_url"], "the scheduler to take the backup task")
        assert task["status"] == "succeeded", services["scheduler"].output()
        backup_id = task["result"]["backups"][0]["backup_id"]
        listed = http("GET", base + f"/backups?database={source_db}")[1]
        assert [b["id"] for b in listed["backups"]] == [backup_id]
        metrics = http("GET", base + "/metrics")[1]
        assert (
            f'permafrost_backup_last_size_bytes{{database="{source_db}",kind="logical"}}' in metrics
        )
        # the source server's version and the pg_dump's that took it (Debian's 15 here)
        assert re.search(
            r'permafrost_source_server_version{client_version="15\.\d+",'
            rf'database="{source_db}",kind="logical",major="15",version="15\.\d+"}} 1\.0',
            metrics,
        ), metrics

        # A test restore, done by the restore worker.
        status, queued = http("POST", base + "/restore-test", {"database": source_db})
        assert status == 202, queued
        task = finished(
            base + queued["status_url"], "the restore worker to finish the test restore"
        )
        assert task["status"] == "succeeded", services["restore"].output()
        shown = http("GET", base + f"/backup/{backup_id}")[1]
        assert shown["verification"] == "verified"

        # The scheduler stops: the dead-man's switch emails on-call.
        assert services["scheduler"].stop() == 0
        dead = wait_for(lambda: smtp.mailbox.about("scheduler_dead"), "the dead-man's email", 60)
        assert dead[0]["Subject"].startswith("[permafrost] CRITICAL: the scheduler stopped")
        assert "permafrost status" in dead[0].get_body(("plain",)).get_content()

        # Restore from the command line into a new database; the rows are the source's.
        target = f"{source_db}_restored"
        run(env, "restore", backup_id, "--target-db", target)
        assert table_digest(pg, target) == table_digest(pg, source_db)
        pg.drop_database(target)

        # The scheduler comes back: the alert resolves, by email too.
        services["scheduler"].start()
        resolved = wait_for(
            lambda: [m for m in smtp.mailbox.about("scheduler_dead") if "RESOLVED" in m["Subject"]],
            "the resolution email",
            60,
        )
        assert resolved
        alerts = http("GET", base + "/alerts")[1]
        assert "scheduler_dead" not in [a["key"] for a in alerts["active"]]
    finally:
        for service in services.values():
            if service.proc is not None and service.proc.poll() is None:
                service.stop()
        smtp.stop()
