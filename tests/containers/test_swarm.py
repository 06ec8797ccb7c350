"""The stack on Docker Swarm: `docker stack deploy -c docker-stack.yml`, as README shows it.

Run with the container stage (`./setup.sh test containers`), after the Compose test. The engine
becomes a one-node swarm (`docker swarm init`), the stack is deployed from docker-stack.yml with
docker-stack.test.yml's stand-ins (the same as docker-compose.test.yml's: no registry here), and
the swarm is left again at the end. The services are reached with `docker exec`, as an operator
on a node does: this engine has no IPVS, so published ports and virtual IPs do not answer here.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets as secrets_module
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.containers

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import containers  # noqa: E402

STACK = "pfswarm"
FILES = (
    "docker-stack.yml",
    "docker-stack.sources.yml",
    "docker-stack.test.yml",
    ".env.example",
    "docker",
    "scripts",
)
ALWAYS = ("metadata", "db", "db2", "minio", "mailpit", "scheduler", "monitor", "restore", "worker")
BIG = "big"
DATABASES = ("shop", BIG, "w2", "w3", "w4", "w5")  # the source orders-eu: the server db
BILLING = ("billing.billing", "billing.ledger")  # the source billing, `databases: all` on db2
# SOURCES_FILE, as docker-stack.sources.yml gives it to every service: two servers, each
# password a Swarm secret. orders-eu keeps plain names (the server DB_NAME named before).
SOURCES = f"""\
sources:
  - name: orders-eu
    url: postgresql://backup@db:5432/shop
    password_file: /run/secrets/orders-eu
    databases: [{", ".join(DATABASES)}]
    plain_names: true
  - name: billing
    url: postgresql://backup@db2:5432/postgres
    password_file: /run/secrets/billing
    databases: all
    exclude: [postgres]
"""


def run(*command: str, timeout: float = 300, **kwargs: object) -> str:
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,  # type: ignore[call-overload]
    )
    assert result.returncode == 0, f"{' '.join(command)}: {result.stdout}{result.stderr}"
    return str(result.stdout)


class Swarm:
    """One stack in a directory of its own (a copy of the files docker-stack.yml reads)."""

    def __init__(self, directory: Path, workers: int) -> None:
        self.directory = directory
        self.workers = workers
        self.env: dict[str, str] = {}

    def prepare(self) -> None:
        for name in FILES:
            source, target = ROOT / name, self.directory / name
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, target)
        # The .env that ./setup.sh writes for the local profile (generated keys and passwords).
        run(sys.executable, "scripts/stack.py", "env", "--docker-local", cwd=self.directory)
        (self.directory / "restore.env").touch(mode=0o600)
        values = self.dotenv()
        secrets = self.directory / "secrets"
        secrets.mkdir(mode=0o700)
        password = values["METADATA_PASSWORD"]
        (secrets / "metadata_password").write_text(password)
        url = f"postgresql://permafrost:{password}@metadata:5432/permafrost"
        (secrets / "metadata_url").write_text(url)
        # The fleet, as README's Swarm walk makes it: sources.yaml and a secret per password.
        (self.directory / "sources.yaml").write_text(SOURCES)
        (secrets / "orders-eu").write_text(values["DB_PASSWORD"])
        billing_password = secrets_module.token_urlsafe(18)
        (secrets / "billing").write_text(billing_password)
        # Backups are queued for the three workers, one at a time per source; DB_NAME unset:
        # the sources file names the databases.
        self.set_env(
            BACKUP_WORKERS="queue",
            DB_NAME="",
            MAX_CONCURRENT_PER_SOURCE="1",
            WORKER_MAX_SILENCE="2m",
        )
        self.env = {
            **os.environ,
            "PERMAFROST_VERSION": "test",  # permafrost:test, built by scripts/containers.py
            "WORKER_REPLICAS": str(self.workers),
            "DB_PASSWORD": values["DB_PASSWORD"],
            "BILLING_PASSWORD": billing_password,
        }

    def dotenv(self) -> dict[str, str]:
        lines = (self.directory / ".env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")

    def set_env(self, **values: str) -> None:
        text = (self.directory / ".env").read_text()
        for name, value in values.items():
            text, found = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.MULTILINE)
            if not found:
                text += f"\n{name}={value}\n"
        (self.directory / ".env").write_text(text)

    def deploy(self) -> str:
        return run(
            "docker",
            "stack",
            "deploy",
            "-c",
            "docker-stack.yml",
            "-c",
            "docker-stack.sources.yml",
            "-c",
            "docker-stack.test.yml",
            STACK,
            cwd=self.directory,
            env=self.env,
        )

    def containers(self, service: str) -> list[str]:
        """The running containers of one service, oldest first."""
        listing = run(
            "docker",
            "ps",
            "--filter",
            f"label=com.docker.swarm.service.name={STACK}_{service}",
            "--format",
            "{{.ID}} {{.CreatedAt}}",
        )
        rows = sorted(line.split(" ", 1) for line in listing.splitlines() if line.strip())
        return [row[0] for row in sorted(rows, key=lambda row: row[1])]

    def exec(self, service: str, *command: str, timeout: float = 300) -> str:
        (container, *_) = self.containers(service)
        return run("docker", "exec", container, *command, timeout=timeout)

    def replicas(self) -> dict[str, str]:
        listing = run(
            "docker",
            "service",
            "ls",
            "--filter",
            f"label=com.docker.stack.namespace={STACK}",
            "--format",
            "{{.Name}} {{.Replicas}}",
        )
        return {
            name.removeprefix(f"{STACK}_"): replicas.split()[0]
            for name, replicas in (line.split(" ", 1) for line in listing.splitlines())
        }

    def healthy(self, service: str) -> bool:
        ids = self.containers(service)
        if not ids:
            return False
        states = run(
            "docker",
            "inspect",
            "-f",
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}",
            *ids,
        ).split()
        return all(state in ("healthy", "running") for state in states)

    def wait(self, services: tuple[str, ...], timeout: float = 420) -> None:
        deadline = time.monotonic() + timeout
        while True:
            replicas = self.replicas()
            ready = [
                name
                for name in services
                if replicas.get(name, "0/1").split("/")[0]
                == replicas.get(name, "0/1").split("/")[1]
                and self.healthy(name)
            ]
            if len(ready) == len(services):
                return
            if time.monotonic() > deadline:
                logs = {
                    name: run(
                        "docker", "service", "logs", "--tail", "15", f"{STACK}_{name}", timeout=30
                    )
                    for name in services
                    if name not in ready
                }
                raise AssertionError(f"not ready: {replicas}\n{json.dumps(logs, indent=1)}")
            time.sleep(3)

    def tasks(self) -> list[dict[str, object]]:
        rows = self.metadata(
            "SELECT coalesce(json_agg(json_build_object('id', id, 'status', status, 'worker',"
            " worker, 'attempts', attempts, 'database', payload->>'database', 'tier',"
            " payload->>'job') ORDER BY id), '[]') FROM tasks WHERE kind = 'backup'"
        )
        found: list[dict[str, object]] = json.loads(rows)
        for task in found:
            task["tier"] = "compliance" if "compliance" in str(task["tier"]) else "standard"
        return found

    def container_of(self, hostname: str) -> str:
        """The worker container whose hostname (Swarm's default: its short id) is this."""
        for container in self.containers("worker"):
            if (
                run("docker", "inspect", "-f", "{{.Config.Hostname}}", container).strip()
                == hostname
            ):
                return container
        raise AssertionError(f"no worker container is {hostname}")

    def metadata(self, query: str) -> str:
        return self.exec(
            "metadata", "psql", "-U", "permafrost", "-d", "permafrost", "-tAc", query
        ).strip()

    def source(self, database: str, query: str, server: str = "db") -> str:
        return self.exec(server, "psql", "-U", "backup", "-d", database, "-tAc", query).strip()


def remove_stack() -> None:
    """`docker stack rm`, then the stack's volumes once its containers are gone (stack rm leaves
    volumes: a metadata store left from an earlier run would hold another password)."""
    subprocess.run(["docker", "stack", "rm", STACK], capture_output=True, timeout=120)
    label = f"label=com.docker.stack.namespace={STACK}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True
        ).stdout.split()
        if not left:
            break
        time.sleep(2)
    volumes = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", label], capture_output=True, text=True
    ).stdout.split()
    if volumes:
        subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    engine_was_running = containers.answers("docker", "info")
    containers.timed("packages", containers.packages)
    containers.timed("engine", containers.engine)
    containers.timed("base image", containers.base_image)
    containers.timed("wheelhouse", containers.wheelhouse)
    containers.timed("image", containers.project_image)
    # "inactive" or "active" (a manager already): init only the swarm this test makes.
    was_swarm = run("docker", "info", "-f", "{{.Swarm.LocalNodeState}}").strip() == "active"
    if not was_swarm:
        run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
    stack = Swarm(tmp_path_factory.mktemp("swarm"), workers=3)
    remove_stack()  # what an interrupted earlier run left
    try:
        stack.prepare()
        started = time.monotonic()
        stack.deploy()
        stack.wait(("metadata", "minio", "db", "db2", "mailpit"))
        bucket = stack.dotenv()["S3_BUCKET"]
        stack.exec(
            "minio",
            "python",
            "-c",
            "import boto3, sys; boto3.client('s3', endpoint_url='http://localhost:9000', "
            "region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='y')"
            ".create_bucket(Bucket=sys.argv[1])",
            bucket,
        )
        for database in DATABASES[1:]:  # the sample database is shop; five more, one big
            rows = 1_500_000 if database == BIG else 100_000
            stack.exec(
                "db", "psql", "-U", "backup", "-d", "shop", "-qc", f"CREATE DATABASE {database}"
            )
            stack.source(
                database,
                "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v"
                f" FROM generate_series(1, {rows}) g",
            )
        stack.exec("db2", "psql", "-U", "backup", "-d", "billing", "-qc", "CREATE DATABASE ledger")
        for database in ("billing", "ledger"):  # billing's server: listed by `databases: all`
            stack.source(
                database,
                "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g",
                server="db2",
            )
        stack.wait(ALWAYS)
        print(f"containers: swarm deploy {time.monotonic() - started:.1f}s", file=sys.stderr)
        yield stack
    finally:
        remove_stack()
        if not was_swarm:
            subprocess.run(
                ["docker", "swarm", "leave", "--force"], capture_output=True, timeout=120
            )
        if not engine_was_running:
            containers.timed("engine stop", containers.stop)


def test_the_stack_deploys_with_one_leading_scheduler_of_two(swarm: Swarm) -> None:
    replicas = swarm.replicas()
    assert replicas["scheduler"] == "2/2", replicas
    assert len(swarm.containers("scheduler")) == 2
    deadline = time.monotonic() + 90
    roles = ""
    while time.monotonic() < deadline:
        roles = swarm.metadata(
            "SELECT string_agg(role, ',' ORDER BY role) FROM heartbeats "
            "WHERE beat_at > now() - interval '2 minutes' AND role <> 'stopped'"
        )
        if roles == "leader,standby":
            break
        time.sleep(3)
    assert roles == "leader,standby"
    health = swarm.exec("monitor", "curl", "-fsS", "http://localhost:8090/health")
    assert json.loads(health)["status"] == "ok", health


def test_three_worker_replicas_run_each_queued_backup_once_and_a_killed_ones_elsewhere(
    swarm: Swarm,
) -> None:
    assert swarm.replicas()["worker"] == "3/3"
    for tier in ("standard", "compliance"):
        out = swarm.exec(
            "scheduler", "permafrost", "backup", "--all", "--queue", "--tier", tier, "--json"
        )
        assert sorted(q["database"] for q in json.loads(out)) == sorted(DATABASES + BILLING)
    tasks = swarm.tasks()
    assert len(tasks) == 16
    big = next(t for t in tasks if t["database"] == BIG and t["tier"] != "compliance")

    # Catch the big backup's worker mid-backup and kill its container, as a node's failure would.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        running = swarm.metadata(
            f"SELECT worker FROM tasks WHERE id = {big['id']} AND status = 'running'"
        )
        if running:
            break
        time.sleep(0.5)
    assert running, f"the big backup never ran: {swarm.tasks()}"
    # ... once its catalog row is there (a loaded machine may take a moment to get to it), so
    # that the killed attempt is one the catalog shows as interrupted.
    while time.monotonic() < deadline and not swarm.metadata(
        f"SELECT id FROM backups WHERE database = '{BIG}' AND status = 'running'"
    ):
        time.sleep(0.3)
    time.sleep(1.0)
    victim = swarm.container_of(running.rsplit(":", 1)[0])
    run("docker", "kill", victim)

    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        tasks = swarm.tasks()
        if all(t["status"] == "succeeded" for t in tasks):
            break
        time.sleep(3)
    assert all(t["status"] == "succeeded" for t in tasks), tasks
    # Only the killed one ran twice, and another worker finished it.
    assert [t["id"] for t in tasks if t["attempts"] != 1] == [big["id"]], tasks
    retried = next(t for t in tasks if t["id"] == big["id"])
    assert retried["worker"] != running
    # Swarm replaced the killed replica.
    deadline = time.monotonic() + 120
    while swarm.replicas()["worker"] != "3/3" and time.monotonic() < deadline:
        time.sleep(3)
    assert swarm.replicas()["worker"] == "3/3"
    assert victim not in swarm.containers("worker")

    # Each database once per tier in the catalog, the killed attempt interrupted, not completed.
    listed = json.loads(swarm.exec("restore", "permafrost", "list", "--json"))
    completed = sorted((b["database"], b["tier"]) for b in listed if b["status"] == "completed")
    tiers = ("standard", "compliance")
    assert completed == sorted((d, t) for d in DATABASES + BILLING for t in tiers)
    assert [(b["database"], b["status"]) for b in listed if b["status"] != "completed"] == [
        (BIG, "interrupted")
    ]
    # MAX_CONCURRENT_PER_SOURCE=1 across the three workers: no two backups of one source
    # overlapped (billing's ran beside orders-eu's, on the other workers).
    for source, where, count in (
        ("orders-eu", "NOT LIKE 'billing.%'", 12),
        ("billing", "LIKE 'billing.%'", 4),
    ):
        spans = swarm.metadata(
            "SELECT string_agg(extract(epoch FROM started_at) || ' '"
            " || extract(epoch FROM finished_at), ',' ORDER BY started_at) FROM job_runs"
            f" WHERE status = 'succeeded' AND database {where}"
        ).split(",")
        times = [tuple(map(float, span.split())) for span in spans]
        assert len(times) == count, source
        for (_, end), (start, _) in itertools.pairwise(times):
            assert end <= start, f"two backups of {source} overlapped: {times}"


def test_each_sources_backups_are_listed_and_labelled_with_their_source(swarm: Swarm) -> None:
    for source, databases in (("orders-eu", DATABASES), ("billing", BILLING)):
        listed = json.loads(
            swarm.exec("restore", "permafrost", "list", "--source", source, "--json")
        )
        completed = {b["database"] for b in listed if b["status"] == "completed"}
        assert completed == set(databases), (source, listed)
    metrics = swarm.exec("monitor", "curl", "-fsS", "http://localhost:8090/metrics")
    for source, database in (("orders-eu", "shop"), ("billing", "billing.ledger")):
        assert re.search(
            rf'permafrost_backup_last_success_timestamp_seconds{{database="{database}",'
            rf'kind="logical",source="{source}"}}',
            metrics,
        ), metrics[:3000]


def test_a_backup_in_the_swarm_restores_the_same_rows(swarm: Swarm) -> None:
    output = swarm.exec("scheduler", "permafrost", "backup", "--database", "shop")
    backup = re.search(r"backup (\S+) of shop completed", output)
    assert backup, output
    swarm.exec("restore", "permafrost", "restore", backup.group(1), "--target-db", "shop_swarm")
    query = "SELECT count(*), sum(total) FROM orders"
    assert swarm.source("shop_swarm", query) == swarm.source("shop", query) != ""
