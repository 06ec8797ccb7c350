#!/bin/sh
# Stand-in for the postgres image's entrypoint, for docker-compose.test.yml only: PostgreSQL from
# the project's own image (no registry to pull postgres from). Like the official image it reads
# POSTGRES_USER, POSTGRES_PASSWORD (or _FILE) and POSTGRES_DB, initialises PGDATA once, runs
# /docker-entrypoint-initdb.d/*.sh, then runs the server: `postgres [-c name=value ...]`.
# UTF8, as the official image (LANG=en_US.utf8): an initdb with no locale makes SQL_ASCII
# databases, where psycopg returns text as bytes.
set -eu
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
export PATH="$bin:$PATH"
[ "${1:-}" = postgres ] && shift
# POSTGRES_PASSWORD_FILE (Docker secrets), as the official image reads it.
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE"); fi
install -d -o postgres -g postgres -m 700 "$PGDATA"
install -d -o postgres -g postgres /var/run/postgresql
as_postgres() { runuser -u postgres -- "$@"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password=$(mktemp); printf '%s\n' "$POSTGRES_PASSWORD" > "$password"; chown postgres "$password"
  as_postgres initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$password" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$password"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [ "$POSTGRES_DB" != postgres ]; then
    as_postgres psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -q \
      -c "CREATE DATABASE \"$POSTGRES_DB\""
  fi
  for script in /docker-entrypoint-initdb.d/*.sh; do
    [ -e "$script" ] && as_postgres sh "$script"
  done
  as_postgres pg_ctl -D "$PGDATA" -w stop >/dev/null
fi
exec runuser -u postgres -- postgres -D "$PGDATA" -c listen_addresses='*' "$@"
