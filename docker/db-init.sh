#!/bin/sh
# The local profile's sample source database: a replication user for base backups and
# wal-receive, and a few tables with rows to back up and restore.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email text UNIQUE,
                        created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO customers (name, email)
SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 5000) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers,
                     total numeric(12, 2), placed_at timestamptz NOT NULL DEFAULT now());
INSERT INTO orders (customer_id, total)
SELECT 1 + g % 5000, (g * 1.37)::numeric(12, 2) FROM generate_series(1, 20000) g;
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "ALTER ROLE \"$POSTGRES_USER\" WITH REPLICATION"
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
