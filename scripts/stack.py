"""The native stack behind `./setup.sh` on a machine without a Docker engine.

    python scripts/stack.py env       .env from .env.example, with generated secrets
    python scripts/stack.py up        a throwaway PostgreSQL with a sample database and the
                                      metadata store, a local bucket, the three services,
                                      a first backup and a test restore; with
                                      BACKUP_WORKERS=queue, WORKER_REPLICAS backup workers
                                      (`permafrost worker`, 2 by default) beside them
    python scripts/stack.py stop      stop the services and the throwaway PostgreSQL
    python scripts/stack.py status    what runs, since when, restarts, and `permafrost status`
    python scripts/stack.py supervise the supervisor `up` starts (scripts/stack_supervisor.py)

Everything lives under PERMAFROST_HOME (default .permafrost/): the cluster (pg/), the bucket
(bucket/), logs (logs/), pid and state files (run/), caught mail (mail/) and the resolved
settings the services read (permafrost.env). Running `up` twice changes nothing: what runs is
left running, what exists is reused, and the first backup and test restore are taken only once;
what changed in .env is applied by restarting the services that read it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the env-file reader, also when run by a Python without the venv

import stack_supervisor as supervisor  # noqa: E402  (beside this file)

from permafrost.config.envfile import load_env_file  # noqa: E402
from permafrost.errors import ConfigError  # noqa: E402

HOME = Path(os.environ.get("PERMAFROST_HOME", ROOT / ".permafrost")).resolve()
ENV_FILE = Path(os.environ.get("PERMAFROST_DOTENV", ROOT / ".env"))
VENV_BIN = Path(sys.executable).parent
PERMAFROST = str(VENV_BIN / "permafrost")
SERVICES = {
    "scheduler": ["scheduler"],
    "monitor": ["monitor", "--workers", "2"],
    "restore": ["restore-worker"],
}
WORKER = ["worker"]  # worker-1 ... worker-N with BACKUP_WORKERS=queue
DEFAULT_WORKERS = 2  # as docker-compose.yml's worker service
# Read by this script, not by the services: kept out of permafrost.env, so that scaling the
# workers restarts none of the services already running.
STACK_ONLY = ("WORKER_REPLICAS",)
GENERATED = {
    "BACKUP_ENCRYPTION_KEY": lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
    "MONITOR_API_TOKEN": lambda: secrets.token_urlsafe(32),
    "METADATA_PASSWORD": lambda: secrets.token_urlsafe(18),
    "DB_PASSWORD": lambda: secrets.token_urlsafe(18),
    "DASHBOARD_PASSWORD": lambda: secrets.token_urlsafe(12),
}


def say(text: str) -> None:
    print(f"setup: {text}", file=sys.stderr, flush=True)


def die(text: str, code: int = 1) -> None:
    print(f"setup: error: {text}", file=sys.stderr)
    sys.exit(code)


# --- .env ---------------------------------------------------------------------------------------


def read_env(path: Path) -> dict[str, str]:
    """.env as `--env-file` reads it: a malformed line stops set-up (exit 2, as a bad setting)."""
    if not path.exists():
        return {}
    try:
        return load_env_file(str(path))
    except ConfigError as exc:
        die(f"{exc}; fix or remove that line and run ./setup.sh again", 2)
        raise


def set_env_values(
    path: Path, values: dict[str, str], overwrite: frozenset[str] = frozenset()
) -> None:
    """Fill NAME= lines in place (or append them), keeping every comment and order; a name in
    `overwrite` replaces the value its line has."""
    lines = path.read_text().splitlines()
    done = set()
    for i, line in enumerate(lines):
        match = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line)
        name = match.group(1) if match else ""
        if match and name in values and (name in overwrite or not match.group(2).strip()):
            lines[i] = f"{match.group(1)}={values[match.group(1)]}"
            done.add(match.group(1))
    lines += [f"{k}={v}" for k, v in values.items() if k not in done and k not in read_env(path)]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


# `docker compose --profile local`: the sample database, MinIO and Mailpit, as the services see
# them on the compose network. Filled in only where .env leaves them empty.
DOCKER_LOCAL = {
    "DB_HOST": "db",
    "DB_PORT": "5432",
    "DB_NAME": "shop",
    "DB_USER": "backup",
    "STORAGE_URL": "s3://permafrost/backups",
    "S3_BUCKET": "permafrost",
    "S3_ENDPOINT_URL": "http://minio:9000",
    "S3_PROVIDER": "minio",
    "S3_ACCESS_KEY_ID": "permafrost",
    "ALERT_EMAIL": "oncall@example.com",
    "SMTP_HOST": "mailpit",
    "SMTP_PORT": "1025",
    "SMTP_TLS": "none",
    # So that a bare `docker compose up -d` (or `down`) takes the local profile too, as setup.sh
    # does with --profile local.
    "COMPOSE_PROFILES": "local",
}


def docker_local_env() -> None:
    """Point an unconfigured .env at the local profile's services."""
    current = ensure_env()
    if current.get("DATABASE_URL") or current.get("DB_HOST"):
        return  # the operator's own database: leave .env alone
    values = {k: v for k, v in DOCKER_LOCAL.items() if not current.get(k)}
    if "SMTP_HOST" in values:
        # .env.example's SMTP_PORT=587 and SMTP_TLS=starttls are for a real relay; Mailpit
        # listens on 1025 without TLS, so with them no alert email reached it.
        values["SMTP_PORT"], values["SMTP_TLS"] = DOCKER_LOCAL["SMTP_PORT"], "none"
    if not current.get("S3_SECRET_ACCESS_KEY"):
        values["S3_SECRET_ACCESS_KEY"] = secrets.token_urlsafe(24)
    set_env_values(ENV_FILE, values, overwrite=frozenset({"SMTP_PORT", "SMTP_TLS"}))
    say("pointed .env at the local profile's sample database, MinIO and Mailpit")


def ensure_env() -> dict[str, str]:
    if not ENV_FILE.exists():
        shutil.copyfile(ROOT / ".env.example", ENV_FILE)
        ENV_FILE.chmod(0o600)
        say(f"created {ENV_FILE.name} from .env.example")
    current = read_env(ENV_FILE)
    fresh = {name: make() for name, make in GENERATED.items() if not current.get(name)}
    if fresh.get("DASHBOARD_PASSWORD") and not current.get("DASHBOARD_USER"):
        fresh["DASHBOARD_USER"] = "admin"
    if fresh:
        set_env_values(ENV_FILE, fresh)
        say(f"generated {', '.join(sorted(fresh))} in {ENV_FILE.name}")
    if "BACKUP_ENCRYPTION_KEY" in fresh:
        say(
            "IMPORTANT: BACKUP_ENCRYPTION_KEY in .env encrypts every backup. A lost key means "
            "lost backups: copy it now to a password manager or a vault, somewhere other than "
            "this server and the bucket."
        )
    return read_env(ENV_FILE)


# --- the throwaway PostgreSQL -------------------------------------------------------------------


def pg_bin() -> Path:
    root = Path("/usr/lib/postgresql")
    found = sorted(
        (p for p in root.glob("*") if (p / "bin" / "initdb").exists()),
        key=lambda p: int(p.name),
        reverse=True,
    )
    if not found:
        die("PostgreSQL server binaries are missing: apt-get install postgresql")
    return found[0] / "bin"


def as_owner() -> dict[str, object]:
    """subprocess's arguments that run a PostgreSQL program as postgres when we are root (initdb
    and postgres refuse root); no runuser, which is not on every PATH."""
    if os.geteuid() != 0:
        return {}
    owner = pwd.getpwnam("postgres")
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def cluster_port(env: dict[str, str]) -> int:
    return int(os.environ.get("NATIVE_PG_PORT") or env.get("NATIVE_PG_PORT") or 54329)


def start_cluster(env: dict[str, str]) -> None:
    data = HOME / "pg" / "data"
    port = cluster_port(env)
    password = env["METADATA_PASSWORD"]
    if not (data / "PG_VERSION").exists():
        (HOME / "pg").mkdir(parents=True, exist_ok=True)
        pwfile = HOME / "pg" / "pwfile"
        pwfile.write_text(password)
        if os.geteuid() == 0:  # initdb and postgres refuse root: the cluster is postgres's
            owner = pwd.getpwnam("postgres")
            for path in (HOME / "pg", pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        say(f"creating a throwaway PostgreSQL cluster in {data}")
        initdb = subprocess.run(
            [
                str(pg_bin() / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            cwd="/",
            **as_owner(),
        )
        if initdb.returncode != 0:
            last = (initdb.stderr.strip().splitlines() or ["no output"])[-1]
            hint = f" (the postgres user must be able to reach {HOME})" if os.geteuid() == 0 else ""
            die(f"initdb failed: {last}{hint}")
        pwfile.unlink()
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "wal_level = replica\nmax_wal_senders = 5\n"
            )
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 scram-sha-256\n")
    if running_cluster(data):
        return
    log = HOME / "logs" / "postgresql.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        log.touch()
        shutil.chown(log, "postgres")
        shutil.chown(log.parent, "postgres")
    subprocess.run(
        [str(pg_bin() / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "start"],
        check=True,
        capture_output=True,
        cwd="/",
        **as_owner(),
    )
    say(f"PostgreSQL is running on 127.0.0.1:{port}")


def running_cluster(data: Path) -> bool:
    if not (data / "PG_VERSION").exists():
        return False
    result = subprocess.run(
        [str(pg_bin() / "pg_ctl"), "-D", str(data), "status"],
        capture_output=True,
        cwd="/",
        **as_owner(),
    )
    return result.returncode == 0


def stop_cluster() -> None:
    data = HOME / "pg" / "data"
    if running_cluster(data):
        subprocess.run(
            [str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
            cwd="/",
            **as_owner(),
        )
        say("PostgreSQL stopped")


def sql(env: dict[str, str], database: str, statement: str) -> str:
    import psycopg

    url = (
        f"postgresql://postgres:{env['METADATA_PASSWORD']}@127.0.0.1:{cluster_port(env)}/{database}"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement)  # type: ignore[arg-type]
        row = cur.fetchone() if cur.description else None
        return "" if row is None or row[0] is None else str(row[0])


SAMPLE = """
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email text UNIQUE,
                        created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO customers (name, email)
SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 5000) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers,
                     total numeric(12, 2), placed_at timestamptz NOT NULL DEFAULT now());
INSERT INTO orders (customer_id, total)
SELECT 1 + g % 5000, (g * 1.37)::numeric(12, 2) FROM generate_series(1, 20000) g;
"""


def prepare_databases(env: dict[str, str], own_source: bool, own_metadata: bool) -> None:
    for name, wanted in (("shop", own_source), ("permafrost", own_metadata)):
        exists = sql(env, "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if wanted and not exists:
            sql(env, "postgres", f"CREATE DATABASE {name}")
    if own_source and not sql(env, "shop", "SELECT to_regclass('public.customers')::text"):
        sql(env, "shop", SAMPLE)
        say("created the sample database shop (5,000 customers, 20,000 orders)")


# --- the services -------------------------------------------------------------------------------


def resolved_settings(env: dict[str, str]) -> tuple[dict[str, str], bool, bool]:
    """The settings the services run with: .env, with the throwaway parts filled in."""
    # As with docker compose, a variable set in the shell wins over .env.
    values = {k: os.environ.get(k, v) for k, v in env.items()}
    values |= {k: os.environ[k] for k in STACK_ONLY if os.environ.get(k)}
    values = {k: v for k, v in values.items() if v}
    values.pop("PERMAFROST_ENV_FILE", None)  # the services read this file: it is theirs
    port = cluster_port(values)
    local = f"postgresql://postgres:{env['METADATA_PASSWORD']}@127.0.0.1:{port}"
    # A sources file names the servers itself: no sample database beside it (its DB_NAME
    # would be refused with SOURCES_FILE).
    own_source = not (
        values.get("DATABASE_URL") or values.get("DB_HOST") or values.get("SOURCES_FILE")
    )
    own_metadata = not values.get("METADATA_DATABASE_URL")
    if own_source:
        values["DATABASE_URL"] = f"{local}/shop"
        values["DB_NAME"] = "shop"
        for name in ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD"):
            values.pop(name, None)  # DATABASE_URL says them: no second opinion
    if own_metadata:
        values["METADATA_DATABASE_URL"] = f"{local}/permafrost"
    if not (values.get("STORAGE_URL") or values.get("DO_SPACES_BUCKET") or values.get("S3_BUCKET")):
        values["STORAGE_URL"] = f"file://{HOME / 'bucket'}"
    if not values.get("SMTP_HOST"):  # the local catcher, so that alert emails can be read
        values.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(mail_port()), SMTP_TLS="none")
        values.setdefault("ALERT_EMAIL", "oncall@localhost")
        for name in ("SMTP_USER", "SMTP_PASSWORD"):
            values.pop(name, None)
    values["PERMAFROST_MODE"] = "native"  # the monitor's pages give native commands
    values.setdefault("RESTORE_TMPDIR", str(HOME / "tmp"))
    values.setdefault("WAL_SPOOL_DIR", str(HOME / "wal-spool"))
    values.setdefault("MONITOR_STATE_DIR", str(HOME / "monitor-state"))
    return values, own_source, own_metadata


def mail_port() -> int:
    """The catcher's port: chosen free once, then kept (a new one would restart every service)."""
    path = HOME / "run" / "mail.port"
    if path.exists():
        return int(path.read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{port}\n")
    return port


def write_settings(values: dict[str, str]) -> tuple[Path, list[str]]:
    """permafrost.env, and the names of the variables that differ from what it held."""
    path = HOME / "permafrost.env"
    before = load_env_file(str(path)) if path.exists() else {}
    values = {k: v for k, v in values.items() if k not in STACK_ONLY}
    path.write_text("".join(f"{k}={v}\n" for k, v in sorted(values.items())))
    path.chmod(0o600)
    changed = sorted(k for k in {*before, *values} if before.get(k) != values.get(k))
    return path, changed if before else []


def service_env(settings_file: Path) -> dict[str, str]:
    return {
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", str(HOME)),
        "PERMAFROST_ENV_FILE": str(settings_file),
        "PERMAFROST_STACK": str(HOME),  # marks every process of this stack, children included
        "LANG": "C.UTF-8",
    }


def worker_count(values: dict[str, str]) -> int:
    """How many `permafrost worker` processes run: WORKER_REPLICAS with BACKUP_WORKERS=queue,
    none with inline (the scheduler backs up itself)."""
    if values.get("BACKUP_WORKERS", "inline").strip().lower() != "queue":
        return 0
    raw = values.get("WORKER_REPLICAS", "").strip() or str(DEFAULT_WORKERS)
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        die(
            f"WORKER_REPLICAS={raw} is not a number of backup workers: give 1 to 64 "
            "(or BACKUP_WORKERS=inline for none)",
            2,
        )
    return int(raw)


def service_commands(values: dict[str, str]) -> dict[str, list[str]]:
    """Each service's name and `permafrost` arguments: the three, then the backup workers."""
    workers = {f"worker-{n}": WORKER for n in range(1, worker_count(values) + 1)}
    return {**SERVICES, **workers}


def service_specs(settings_file: Path, values: dict[str, str]) -> dict[str, dict[str, object]]:
    """What the supervisor runs; `digest` changes when what a service reads changes."""
    settings_digest = hashlib.sha256(settings_file.read_bytes()).hexdigest()
    env = service_env(settings_file)
    specs: dict[str, dict[str, object]] = {
        name: {"argv": [PERMAFROST, *args], "env": env, "cwd": str(HOME), "digest": settings_digest}
        for name, args in service_commands(values).items()
    }
    if values.get("SMTP_HOST") == "127.0.0.1" and (HOME / "run" / "mail.port").exists():
        argv = [sys.executable, str(ROOT / "scripts" / "mailcatcher.py")]
        argv += [values["SMTP_PORT"], str(HOME / "mail")]
        specs["mail"] = {"argv": argv, "env": env, "cwd": str(HOME), "digest": " ".join(argv)}
    return specs


def supervisor_pid() -> int | None:
    return pid_of("supervisor")


def supervised() -> list[str]:
    """The services the supervisor was last asked to run (run/services.json), in its order."""
    try:
        specs: dict[str, object] = json.loads((HOME / "run" / "services.json").read_text())
    except (OSError, ValueError):
        return list(SERVICES)
    return list(specs)


def known_services() -> list[str]:
    """Every service that may have a pid file: those asked for, and any left from before."""
    names = [*supervised()]
    names += ["mail"] if "mail" not in names else []
    left = sorted(p.stem for p in (HOME / "run").glob("*.pid") if p.stem != "supervisor")
    return names + [name for name in left if name not in names]


def pid_of(name: str) -> int | None:
    path = HOME / "run" / f"{name}.pid"
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def service_state(name: str) -> dict[str, object]:
    try:
        state: dict[str, object] = json.loads((HOME / "run" / f"{name}.state").read_text())
    except (OSError, ValueError):
        return {}
    return state


def start_services(settings_file: Path, values: dict[str, str], changed: list[str]) -> None:
    for directory in ("run", "logs", "tmp", "mail"):
        (HOME / directory).mkdir(parents=True, exist_ok=True)
    specs = service_specs(settings_file, values)
    before = {name: service_state(name) for name in specs}
    for name in sorted(set(supervised()) - set(specs)):  # the supervisor stops it on SIGHUP
        say(f"stopping {name}: no longer asked for (BACKUP_WORKERS, WORKER_REPLICAS, SMTP_HOST)")
    spec_file = HOME / "run" / "services.json"
    spec_file.with_suffix(".tmp").write_text(json.dumps(specs, indent=1))
    spec_file.with_suffix(".tmp").rename(spec_file)
    pid = supervisor_pid()
    if pid is None:
        start_supervisor()
    else:
        new = [n for n in specs if not before[n]]
        stale = [n for n in specs if before[n] and before[n].get("digest") != specs[n]["digest"]]
        failed = [n for n in specs if before[n].get("state") == "failed"]
        if changed and stale:
            say(f".env changed ({', '.join(changed)}): restarting {', '.join(stale)}")
        if new:
            say(f"starting {', '.join(new)}")
        for name in failed:
            say(f"{name} had been given up on: starting it again")
        for name in [n for n in specs if n not in new + stale + failed]:
            say(f"{name} is already running (pid {pid_of(name)})")
        os.kill(pid, signal.SIGHUP)
    wait_for_services(specs)


def start_supervisor() -> None:
    log = (HOME / "logs" / "supervisor.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "supervise"],
        env={**os.environ, "PERMAFROST_HOME": str(HOME), "PERMAFROST_STACK": str(HOME)},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=HOME,
    )
    say(f"started the supervisor (pid {proc.pid}, log {HOME / 'logs' / 'supervisor.log'})")


def wait_for_services(specs: dict[str, dict[str, object]]) -> None:
    """Until the supervisor runs each service as its spec says (and has stopped those no longer
    asked for), or says it gave up."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        states = {name: service_state(name) for name in specs}
        gone = [n for n in known_services() if n not in specs and n != "mail" and service_state(n)]
        if not gone and all(
            s.get("digest") == specs[n]["digest"] and s.get("pid") for n, s in states.items()
        ):
            for name, state in states.items():
                if state.get("restarts") == 0 and state.get("state") == "running":
                    say(f"{name} is running (pid {state['pid']}, log {HOME / 'logs' / name}.log)")
            return
        for name, state in states.items():
            if state.get("state") == "failed":
                die(f"{name} does not stay up: {state.get('note')}")
        time.sleep(0.3)
    die(f"the services did not start: see {HOME / 'logs' / 'supervisor.log'}")


def permafrost(
    settings_file: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PERMAFROST, *args], env=service_env(settings_file), capture_output=True, text=True
    )
    if check and result.returncode != 0:
        die(
            f"permafrost {' '.join(args)} failed: {result.stderr.strip()}",
            2 if result.returncode == 2 else 1,
        )
    return result


def wait_for_monitor(port: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if service_state("monitor").get("state") == "failed":
            die(f"the monitor does not stay up: see {HOME / 'logs' / 'monitor.log'}")
        time.sleep(0.5)
    die(f"the monitor did not answer on port {port}: see {HOME / 'logs' / 'monitor.log'}")


def up() -> None:
    env = ensure_env()
    values, own_source, own_metadata = resolved_settings(env)
    worker_count(values)  # a bad WORKER_REPLICAS stops set-up before anything changes
    HOME.mkdir(parents=True, exist_ok=True)
    if own_source or own_metadata:
        start_cluster(env)
        prepare_databases(env, own_source, own_metadata)
    settings_file, changed = write_settings(values)
    permafrost(settings_file, "init")
    start_services(settings_file, values, changed)
    port = values.get("MONITOR_PORT", "8090")
    wait_for_monitor(port)
    first = HOME / "first-backup.done"
    if not first.exists():
        say("taking a first backup, then proving it restores (a test restore)")
        print(permafrost(settings_file, "backup").stdout.strip(), file=sys.stderr)
        print(
            permafrost(settings_file, "verify", "latest", "--test-restore").stdout.strip(),
            file=sys.stderr,
        )
        first.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    user = values.get("DASHBOARD_USER", "")
    workers = worker_count(values)
    logs = "scheduler.log, monitor.log, restore.log"
    if workers:
        logs += f", worker-1.log{f' ... worker-{workers}.log' if workers > 1 else ''}"
    mail = (
        f"{HOME / 'mail'}/ (one .eml file per email: SMTP_HOST is not set)"
        if "mail" in service_specs(settings_file, values)
        else f"sent through {values.get('SMTP_HOST')}"
    )
    print(
        f"""
Permafrost is running (native mode: no Docker engine here).
  dashboard   http://localhost:{port}/   (user {user or "-"}, password: DASHBOARD_PASSWORD in .env)
  alert mail  {mail}
  settings    {settings_file}
  logs        {HOME / "logs"}/{logs}, supervisor.log

Next:
  export PERMAFROST_ENV_FILE={settings_file}
  .venv/bin/permafrost status
  .venv/bin/permafrost list
  .venv/bin/permafrost restore latest --target-db shop_restored
  ./setup.sh status
  ./setup.sh stop""",
        flush=True,
    )


def stop() -> None:
    """The supervisor stops each service's process group; then whatever is left is stopped."""
    names = known_services()
    ran = [name for name in names if (HOME / "run" / f"{name}.pid").exists()]
    pid = supervisor_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 150
        while pid_of("supervisor") and time.monotonic() < deadline:
            time.sleep(0.3)
        if pid_of("supervisor"):
            os.kill(pid, signal.SIGKILL)
        (HOME / "run" / "supervisor.pid").unlink(missing_ok=True)
        say("stopped the supervisor")
    for name in names:  # a service's group, even when its leader is gone (kill -9)
        path = HOME / "run" / f"{name}.pid"
        try:
            pgid = int(path.read_text())
        except (OSError, ValueError):
            continue
        if supervisor.group_alive(pgid):
            supervisor.stop_group(pgid)
        path.unlink(missing_ok=True)
        (HOME / "run" / f"{name}.state").unlink(missing_ok=True)
    for name in ran:
        say(f"stopped {name}")
    for stray, command in strays():
        say(f"killed a left-over process of this stack: pid {stray} ({command})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(stray, signal.SIGKILL)
    stop_cluster()


def strays() -> list[tuple[int, str]]:
    """Processes that carry this stack's mark (PERMAFROST_STACK) but left their group."""
    mark = f"PERMAFROST_STACK={HOME}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append((int(entry.name), command.strip()[:80]))
        except OSError:
            continue
    return found


def status() -> int:
    ok = True
    pid = supervisor_pid()
    print(
        f"{'supervisor':10} running (pid {pid}): restarts a service that exits"
        if pid
        else f"{'supervisor':10} stopped: nothing restarts a service that exits (run ./setup.sh)"
    )
    for name in known_services():
        state = service_state(name)
        if name not in supervised() and not state:
            continue  # the mail catcher when SMTP_HOST is set; a worker stopped on purpose
        alive = bool(state.get("pid")) and pid_of(name) is not None
        ok = ok and alive and state.get("state") == "running"
        print(f"{name:10} {describe(state, alive)}")
    settings_file = HOME / "permafrost.env"
    if settings_file.exists():
        result = permafrost(settings_file, "status", check=False)
        print(result.stdout.strip() or result.stderr.strip())
    return 0 if ok and pid else 1


def describe(state: dict[str, object], alive: bool) -> str:
    restarts = int(str(state.get("restarts") or 0))
    count = f"{restarts} restart{'s' if restarts != 1 else ''}"
    if state.get("state") == "failed":
        return f"failed: {state.get('note')}"
    if state.get("state") == "restarting":
        return f"restarting ({state.get('note')}; {count})"
    if not alive:
        return "stopped"
    last = f"; last: {state.get('note')}" if state.get("note") else ""
    return f"running (pid {state.get('pid')}) since {state.get('since')}, {count}{last}"


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    if command == "env":
        if "--docker-local" in sys.argv:
            docker_local_env()
        else:
            ensure_env()
    elif command == "up":
        up()
    elif command == "stop":
        stop()
    elif command == "status":
        return status()
    elif command == "supervise":
        return supervisor.Supervisor(HOME).run()
    else:
        die(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    sys.exit(main())
