"""Logical backups dumped in parallel (LOGICAL_JOBS=4): 50 tables of varied sizes, with foreign
keys, indexes and sequences, come back identical (table by table) with 1 and with 4 restore
jobs; a backup killed mid-way leaves no listed backup; a damaged part is refused with nothing
renamed and the staging database dropped; the parts open by hand with decrypt and pg_restore.

One backup serves the module; each refusal damages a part and puts the original back after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import KEY, PERMAFROST, bucket_env, run, unique
from tests.helpers import (
    flip_byte,
    get_object,
    loads,
    objects,
    pending_uploads,
    put_object,
    table_digest,
)
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


def _refused(pg: Cluster, stored: Stored, existing: str) -> str:
    """Restore over an existing database; refused, with everything left as it was."""
    result = run(
        stored.env,
        "restore",
        stored.backup_id,
        "--target-db",
        existing,
        "--drop-existing",
        "--yes",
        "--no-safety-backup",
        "--jobs",
        "4",
        check=False,
    )
    assert result.returncode == 5, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert pg.execute("SELECT v FROM keep_me", existing) == [("precious",)]
    assert not [d for d in databases(pg) if "_pfrestore_" in d]  # the staging database dropped
    return result.stderr


@pytest.mark.parametrize(
    ("part", "damage"), [("data-2", "flip"), ("data-1", "cut"), ("data", "flip")]
)
def test_a_damaged_part_is_refused_and_nothing_is_renamed(
    pg: Cluster, s3: S3Server, stored: Stored, part: str, damage: str
) -> None:
    existing = pg.create_database(unique("existing"))
    pg.execute("CREATE TABLE keep_me (v text); INSERT INTO keep_me VALUES ('precious')", existing)
    objects_ = stored.manifest["objects"]
    assert isinstance(objects_, dict)
    key = objects_[part]
    original = get_object(s3, stored.bucket, key)
    broken = (
        flip_byte(original, len(original) // 2)
        if damage == "flip"
        else original[: len(original) // 2]
    )
    put_object(s3, stored.bucket, key, broken)
    try:
        stderr = _refused(pg, stored, existing)
    finally:
        put_object(s3, stored.bucket, key, original)
        pg.drop_database(existing)
    assert ("truncated" if damage == "cut" else "failed authentication") in stderr


# About 100 MB of rows in four tables: the dump lasts long enough to be killed in the middle.
BIG = "\n".join(
    f"CREATE TABLE big{n} AS SELECT g, md5(g::text) || md5((g * {n + 7})::text) AS m"
    f" FROM generate_series(1, 400000) g;"
    for n in range(4)
)


def test_a_backup_killed_mid_way_leaves_no_backup_and_retention_removes_its_parts(
    pg: Cluster, metadata_db: str, tmp_path: Path
) -> None:
    source = pg.create_database(unique("killed"))
    pg.execute(BIG, source)
    bucket = tmp_path / "bucket"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DATABASE_URL": pg.url(source),
        "METADATA_DATABASE_URL": pg.url(metadata_db),
        "STORAGE_URL": f"file://{bucket}",
        "BACKUP_ENCRYPTION_KEY": KEY,
        "UPLOAD_PART_SIZE_MB": "5",
        "LOGICAL_JOBS": "4",
        "LOGICAL_JOBS_MIN_SIZE_MB": "0",
    }
    run(env, "init")
    try:
        proc = subprocess.Popen([PERMAFROST, "backup"], env=env, stderr=subprocess.PIPE)
        folder = _wait_for_parts(bucket, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (folder / "manifest.json").exists()
        listed = loads(run(env, "list", "--json").stdout)
        assert not [b for b in listed if b["status"] == "completed"]
        assert run(env, "restore", "latest", "--target-db", unique("none"), check=False).returncode
        _wait_for_no_dump(pg, source)  # every pg_dump died with its parent

        two_days_ago = time.time() - 2 * 86400
        for path in bucket.rglob("*"):
            os.utime(path, (two_days_ago, two_days_ago))
        result = run(env, "retention", "--apply")
        assert "retention applied" in result.stdout
        assert not folder.exists()
        staged = bucket / ".multipart"
        assert not staged.exists() or not any(staged.iterdir())
    finally:
        pg.drop_database(source)


def _wait_for_parts(bucket: Path, proc: subprocess.Popen[bytes]) -> Path:
    """The backup's folder once its schema part is stored and data parts are being uploaded."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the backup ended before it could be killed"
        folders = list((bucket / "standard").glob("*/*/"))
        staged = [k.read_text() for k in (bucket / ".multipart").glob("*/key")]
        if folders and (folders[0] / "data.pfe").exists() and any("/data-" in k for k in staged):
            return folders[0]
        time.sleep(0.05)
    raise AssertionError("no data part was being uploaded within two minutes")


def _wait_for_no_dump(pg: Cluster, database: str) -> None:
    deadline = time.monotonic() + 30
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    while pg.execute(query.replace("%s", f"'{database}'"))[0][0] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pg.execute(query.replace("%s", f"'{database}'"))[0][0] == 0


def test_the_manual_commands_of_format_md_restore_it_with_pg_restore_alone(
    pg: Cluster, stored: Stored, tmp_path: Path
) -> None:
    """docs/FORMAT.md, "A backup in parts": decrypt --part and plain pg_restore, step by step."""
    target = pg.create_database(unique("byhand"))
    restore = [str(pg.bin / "pg_restore"), "--exit-on-error", "--no-owner", "-d", pg.url(target)]
    schema = tmp_path / "schema.dump"
    decrypt = [PERMAFROST, "decrypt", "--backup", stored.backup_id]
    try:
        run(
            stored.env, "decrypt", "--backup", stored.backup_id, "--part", "data", "-o", str(schema)
        )
        subprocess.run([*restore, "--section=pre-data", str(schema)], check=True)
        subprocess.run([*restore, "--section=data", str(schema)], check=True)
        for part in ("data-1", "data-2", "data-3", "data-4"):
            opened = subprocess.Popen(
                [*decrypt, "--part", part], env=stored.env, stdout=subprocess.PIPE
            )
            subprocess.run(restore, stdin=opened.stdout, check=True)
            assert opened.wait() == 0
        subprocess.run([*restore, "--section=post-data", "--jobs=4", str(schema)], check=True)
        assert table_digest(pg, target) == table_digest(pg, stored.source)
        assert schema_facts(pg, target) == schema_facts(pg, stored.source)
    finally:
        pg.drop_database(target)


def test_decrypt_names_the_parts_when_asked_for_one_that_is_not_there(stored: Stored) -> None:
    result = run(
        stored.env, "decrypt", "--backup", stored.backup_id, "--part", "data-9", check=False
    )
    assert result.returncode == 2
    assert "has no part 'data-9' (its parts: data, data-1, data-2, data-3, data-4)" in result.stderr


def test_a_schema_only_restore_of_parts_brings_back_empty_tables_with_their_indexes(
    pg: Cluster, stored: Stored
) -> None:
    target = unique("schemaonly")
    run(stored.env, "restore", stored.backup_id, "--target-db", target, "--schema-only")
    try:
        assert {count for count, _ in table_digest(pg, target).values()} == {0}
        facts, source = schema_facts(pg, target), schema_facts(pg, stored.source)
        assert facts["constraints"] == source["constraints"]
        assert facts["indexes"] == source["indexes"]
    finally:
        pg.drop_database(target)


def test_a_selection_of_a_backup_in_parts_is_refused_before_anything_runs(stored: Stored) -> None:
    result = run(
        stored.env, "restore", stored.backup_id, "--target-db", unique("sel"), "--table", "t01",
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "parallel parts, which are restored whole" in result.stderr


def test_a_part_that_fails_stops_the_others_and_leaves_nothing(
    pg: Cluster, s3: S3Server, metadata_db: str, tmp_path: Path
) -> None:
    """One table the backup user cannot dump (row-level security it may not bypass): its part
    fails, the other pg_dump processes are stopped, the finished parts are deleted, and the
    backup is recorded as failed with the reason in one line."""
    source = pg.create_database(unique("onefails"))
    role = unique("reader")
    pg.execute(
        fifty_tables()
        + f"""
        CREATE ROLE {role} LOGIN PASSWORD 'reader-password';
        GRANT USAGE ON SCHEMA public, ledger TO {role};
        GRANT SELECT ON ALL TABLES IN SCHEMA public, ledger TO {role};
        GRANT SELECT ON ALL SEQUENCES IN SCHEMA public, ledger TO {role};
        ALTER TABLE public.t02 ENABLE ROW LEVEL SECURITY;
        """,
        source,
    )
    bucket = unique("pf-fails").replace("_", "-")
    s3.client().create_bucket(Bucket=bucket)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DATABASE_URL": f"postgresql://{role}:reader-password@127.0.0.1:{pg.port}/{source}",
        "METADATA_DATABASE_URL": pg.url(metadata_db),
        **bucket_env(s3, bucket),
        "UPLOAD_PART_SIZE_MB": "5",
        "LOGICAL_JOBS": "4",
        "LOGICAL_JOBS_MIN_SIZE_MB": "0",
    }
    try:
        result = run(env, "backup", check=False)
        assert result.returncode != 0
        assert "row-level security" in result.stderr, result.stderr
        stored = [k for k in objects(s3, bucket) if "/standard/" in k]
        assert stored == [], stored
        assert not [u for u in pending_uploads(s3, bucket) if "/standard/" in u]
        listed = loads(run(env, "list", "--json").stdout)
        assert [b["status"] for b in listed] in ([], ["failed"])
    finally:
        pg.drop_database(source)
        pg.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
