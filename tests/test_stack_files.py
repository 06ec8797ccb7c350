"""docker-compose.yml, the Dockerfile and .env.example, held in agreement with the code.

There is no Docker engine on the machines that run these tests, so the files are checked for
what `docker compose` and an operator rely on: every service, command, healthcheck and
dependency, pinned images, no secret written in the file, every variable known.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from permafrost.cli import build_parser
from permafrost.config.settings import Env, _parse
from tests.test_docs import STACK_ONLY

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKER_ONLY = {  # variables the images of the local profile read, not Permafrost
    "POSTGRES_DB",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "S3_BUCKET",
}


def settings_names() -> set[str]:
    names: set[str] = set()
    for values in ({}, {"DO_SPACES_BUCKET": "b"}, {"DATABASE_URL": "postgresql://h/d"}):
        env = Env(values)
        _parse(env)
        names |= env.asked
    return names


def documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


def test_the_three_services_run_the_commands_the_code_has() -> None:
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert SERVICES["scheduler"]["command"][:2] == ["permafrost", "scheduler"]
    assert SERVICES["restore"]["command"][:2] == ["permafrost", "restore-worker"]
    assert {"scheduler", "restore-worker", "monitor"} <= commands
    monitor = SERVICES["monitor"]["command"]
    assert monitor[0] == "gunicorn" and monitor[-1] == "monitor.wsgi:app"
    assert "0.0.0.0:8090" in monitor
    assert (ROOT / "monitor" / "wsgi.py").exists()
    assert any("/health" in part for part in SERVICES["monitor"]["healthcheck"]["test"])


def test_each_service_has_a_restart_policy_health_and_ordered_dependencies() -> None:
    for name, service in SERVICES.items():
        assert "restart" in service, name
        if name != "createbucket":
            assert "healthcheck" in service or name == "restore", name
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES
            assert condition["condition"] in ("service_healthy", "service_completed_successfully")
    for name in ("scheduler", "monitor", "restore"):
        assert SERVICES[name]["depends_on"]["metadata"]["condition"] == "service_healthy"
        env_files = SERVICES[name]["env_file"]
        assert (env_files if isinstance(env_files, str) else env_files[0]) == ".env"
    # A running backup gets STOP_GRACE_PERIOD (10m) before Docker kills the scheduler.
    assert SERVICES["scheduler"]["stop_grace_period"] == "11m"
    assert set(COMPOSE["volumes"]) >= {"metadata-data", "wal-spool"}
    assert "metadata-data:/var/lib/postgresql/data" in SERVICES["metadata"]["volumes"]


def test_the_local_profile_is_self_contained() -> None:
    local = {n for n, s in SERVICES.items() if "local" in (s.get("profiles") or [])}
    assert local == {"db", "minio", "createbucket", "mailpit"}
    assert "wal_level=replica" in SERVICES["db"]["command"]
    assert "${MAILPIT_PORT:-8025}:8025" in SERVICES["mailpit"]["ports"]
    init = (ROOT / "docker" / "db-init.sh").read_text()
    assert "REPLICATION" in init and "host replication" in init


def test_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        if "image" in service and "build" not in service:
            image = service["image"]
            tag = image.rsplit(":", 1)[-1] if ":" in image else ""
            assert tag and tag != "latest", f"{name}: pin {image}"


def test_no_secret_is_written_in_the_compose_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for key in ("PASSWORD", "SECRET", "KEY", "TOKEN"):
        for line in text.splitlines():
            if key in line and ":" in line and not line.strip().startswith("#"):
                value = line.split(":", 1)[1].strip()
                assert value == "" or "${" in value or "$$" in value, line


def test_env_example_the_settings_and_compose_agree() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert interpolated - documented() == set(), "add these to .env.example"
    environment: set[str] = set()
    for service in SERVICES.values():
        environment |= set(service.get("environment") or {})
    known = settings_names() | DOCKER_ONLY
    assert environment - known == set(), "compose sets variables nothing reads"
    assert documented() - settings_names() - {"PERMAFROST_ENV_FILE"} == STACK_ONLY
    assert interpolated | {"NATIVE_PG_PORT"} >= STACK_ONLY


def test_the_dockerfile_builds_one_non_root_image_with_the_postgresql_binaries() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+) AS (\w+)", text, re.MULTILINE)
    assert [stage for _, stage in stages] == ["build", "runtime"]
    # Both stages start from BASE_IMAGE (debian:bookworm-slim for an offline build), a slim one.
    assert all(image == "${BASE_IMAGE}" for image, _ in stages)
    assert re.search(r"^ARG BASE_IMAGE=\S*slim\S*$", text, re.MULTILINE)
    assert re.search(r"^ARG PG_SOURCE=pgdg$", text, re.MULTILINE)
    assert "--no-index --find-links /wheelhouse" in text  # the air-gapped wheelhouse
    assert "org.opencontainers.image.revision" in text and "HEALTHCHECK" in text
    assert re.search(r'^ARG PG_MAJORS="13 14 15 16 17 18"$', text, re.MULTILINE)
    assert "postgresql-${major} postgresql-client-${major}" in text
    assert "PG_BIN_DIR" not in text  # every major's bin directory is searched, none is pinned
    assert re.search(r"^USER permafrost$", text, re.MULTILINE)
    assert "curl" in text  # the monitor's healthcheck uses it


def test_setup_fills_env_so_the_local_profile_has_everything_it_requires(tmp_path: Path) -> None:
    import subprocess
    import sys

    dotenv = tmp_path / ".env"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stack.py"), "env", "--docker-local"],
        env={"PATH": "/usr/bin:/bin", "PERMAFROST_DOTENV": str(dotenv)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "lost key means lost backups" in result.stderr
    values = dict(
        line.split("=", 1)
        for line in dotenv.read_text().splitlines()
        if "=" in line and line[0] != "#"
    )
    required = set(re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert required and all(values.get(name) for name in required), required
    assert values["DB_HOST"] == "db" and values["S3_ENDPOINT_URL"] == "http://minio:9000"
    assert values["SMTP_HOST"] == "mailpit" and values["MONITOR_API_TOKEN"]
    # Mailpit's port, not .env.example's 587 for a relay (the alert emails never arrived).
    assert values["SMTP_PORT"] == "1025" and values["SMTP_TLS"] == "none"
    assert oct(dotenv.stat().st_mode & 0o777) == "0o600"
    before = dotenv.read_text()
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stack.py"), "env", "--docker-local"],
        env={"PATH": "/usr/bin:/bin", "PERMAFROST_DOTENV": str(dotenv)},
        check=True,
        capture_output=True,
    )
    assert dotenv.read_text() == before  # twice changes nothing


def test_links_in_emails_follow_monitor_port_when_env_example_is_copied(tmp_path: Path) -> None:
    from permafrost.config.envfile import load_env_file
    from permafrost.config.settings import Settings

    values = load_env_file(str(ROOT / ".env.example"))
    settings = Settings.from_env({**values, "MONITOR_PORT": "9123"})
    assert settings.monitor.public_url == "http://localhost:9123"
    chosen = Settings.from_env({**values, "MONITOR_PUBLIC_URL": "https://backups.example.com/"})
    assert chosen.monitor.public_url == "https://backups.example.com"


def test_only_the_restore_service_reads_the_private_key_file() -> None:
    readers = [n for n, s in SERVICES.items() if "restore.env" in str(s.get("env_file"))]
    assert readers == ["restore"]
    assert "restore.env" in SERVICES["restore"]["env_file"]
    assert all("BACKUP_PRIVATE_KEY" not in str(s.get("environment")) for s in SERVICES.values())


FLEET_SERVICES = {"scheduler", "worker", "monitor", "restore"}


def overlay(name: str) -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return found


def test_the_sources_overlays_give_every_service_the_file_and_each_password() -> None:
    compose, stack = overlay("docker-compose.sources.yml"), overlay("docker-stack.sources.yml")
    base_stack = overlay("docker-stack.yml")["services"]
    for files, services, base in (
        ("compose", compose["services"], SERVICES),
        ("stack", stack["services"], base_stack),
    ):
        assert set(services) == FLEET_SERVICES <= set(base), files
        for name, service in services.items():
            path = service["environment"]["SOURCES_FILE"]
            if files == "compose":  # a bind mount: one machine
                assert f"./sources.yaml:{path}:ro" in service["volumes"], name
            else:  # a Swarm config: on every node
                assert {"source": "sources", "target": path} in service["configs"], name
            assert {"orders-eu", "billing"} <= set(service["secrets"]), name
    assert stack["configs"]["sources"] == {"file": "./sources.yaml"}
    for secrets in (compose["secrets"], stack["secrets"]):
        assert secrets == {name: {"file": f"./secrets/{name}"} for name in ("orders-eu", "billing")}
    # The stack's own secret is kept: a service's secrets list is replaced, not merged, by
    # some versions of `docker stack deploy`.
    assert "metadata_url" in stack["services"]["scheduler"]["secrets"]


def test_the_example_sources_file_is_one_the_services_accept(tmp_path: Path) -> None:
    from permafrost.config.fleet import read_sources_file
    from permafrost.config.settings import Settings

    secrets = set(overlay("docker-compose.sources.yml")["secrets"])
    for example in (ROOT / "sources.example.yaml", ROOT / "deploy/kubernetes/sources.example.yaml"):
        text = example.read_text()
        named = {
            Path(s["password_file"])
            for s in yaml.safe_load(text)["sources"]
            if "password_file" in s
        }
        assert {p.parent for p in named} == {Path("/run/secrets")}, example
        assert {p.name for p in named} == secrets, example  # the overlays' secrets, by name
        for name in secrets:
            (tmp_path / name).write_text("a password")
        (tmp_path / "sources.yaml").write_text(text.replace("/run/secrets/", f"{tmp_path}/"))
        fleet = read_sources_file(str(tmp_path / "sources.yaml"), Settings.from_env({}))
        assert fleet.names == ("orders-eu", "billing"), example


def test_compose_reads_the_stack_with_the_sources_overlay(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (v1, Debian's) is not installed: the YAML checks above stand")
    for name in ("docker-compose.yml", "docker-compose.sources.yml", ".env.example"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".env").write_text(
        "METADATA_PASSWORD=x\nDB_PASSWORD=y\nS3_ACCESS_KEY_ID=a\nS3_SECRET_ACCESS_KEY=b\n"
    )
    (tmp_path / "sources.yaml").touch()
    (tmp_path / "restore.env").touch()
    for name in ("orders-eu", "billing"):
        (tmp_path / "secrets").mkdir(exist_ok=True)
        (tmp_path / "secrets" / name).touch()
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.sources.yml"]
    done = subprocess.run(
        ["docker-compose", *files, "--profile", "workers", "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)["services"]
    for name in FLEET_SERVICES:
        service = merged[name]
        assert service["environment"]["SOURCES_FILE"] == "/etc/permafrost/sources.yaml", name
        assert service["environment"]["METADATA_DATABASE_URL"].startswith("postgresql://"), name
        targets = {
            v["target"] if isinstance(v, dict) else v.split(":")[1] for v in service["volumes"]
        }
        assert "/etc/permafrost/sources.yaml" in targets, name
    assert "/var/lib/permafrost/wal-spool" in {
        v["target"] if isinstance(v, dict) else v.split(":")[1] for v in merged["worker"]["volumes"]
    }  # the base's volumes are kept beside the overlay's
