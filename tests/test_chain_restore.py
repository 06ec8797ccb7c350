"""Restoring base backups as chains: `verify --test-restore` of base backups, and pitr.

Real servers from the `servers` fixture (one per major for the session): PostgreSQL 15 (no
incremental backups, a chain of one) and 18 (summarize_wal turned on for the chain: incremental
backups, pg_combinebackup, pg_amcheck). Each archives its WAL into a bucket of its own through
wal-push. The chain (a full and three incrementals, with changes between them) is built once
for the module; its tests run in order, the damaging ones last.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.logs import sayer
from scheduler.jobs import Jobs
from tests.conftest import PERMAFROST, bucket_env, run, unique
from tests.helpers import flip_byte, get_object, loads, objects, put_object
from tests.majors import Servers, client_bin
from tests.services import Cluster, S3Server


def _env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    path.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres")
    return path


@dataclass
class Archived:
    """A server archiving its WAL into the test's bucket, and the environment to run with."""

    server: Cluster
    database: str
    env: dict[str, str]
    bucket: str
    scratch: Path  # RESTORE_TMPDIR: must be empty again after every command

    def switch_and_wait(self) -> None:
        """Complete the current segment (with a record in it: an empty one does not switch)
        and wait until it is archived."""
        self.server.execute("SELECT pg_logical_emit_message(false, 'test', 'switch')")
        name = self.server.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        for _ in range(300):
            done = self.server.execute("SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
            if done is not None and done >= name:
                return
            time.sleep(0.2)
        said = self.server.execute("SELECT * FROM pg_stat_archiver")
        log = self.server._log()[-3000:]
        raise AssertionError(f"{name} was not archived: {said}\n{log}")


@contextmanager
def archiving(
    server: Cluster, major: int, s3: S3Server, pg: Cluster, home: Path
) -> Iterator[Archived]:
    """A database of its own on the server, which archives into a new bucket meanwhile."""
    database = server.create_database(unique(f"chain{major}"))
    bucket = f"pf-chain-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    metadata = pg.create_database(unique("meta_chain"))
    storage = {**bucket_env(s3, bucket), "METADATA_DATABASE_URL": pg.url(metadata)}
    scratch = Path(tempfile.mkdtemp(prefix="pf-chain-"))
    scratch.chmod(0o755)  # the servers' OS user reaches its files through it
    env_file = _env_file(scratch.parent / f"{scratch.name}.env", storage)
    command = f"'{PERMAFROST}' --env-file '{env_file}' wal-push %p".replace("'", "''")
    server.execute(f"ALTER SYSTEM SET archive_command = '{command}'")
    server.execute("SELECT pg_reload_conf()")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        **storage,
        "DATABASE_URL": server.url("postgres"),
        "PG_BIN_DIRS": str(client_bin(major)),
        "RESTORE_TMPDIR": str(scratch),
    }
    try:
        yield Archived(server, database, env, bucket, scratch)
    finally:
        server.execute("ALTER SYSTEM RESET archive_command")
        server.execute("SELECT pg_reload_conf()")
        server.drop_database(database)
        pg.drop_database(metadata)
        shutil.rmtree(scratch, ignore_errors=True)
        env_file.unlink()


@pytest.fixture
def archived(
    request: pytest.FixtureRequest, servers: Servers, s3: S3Server, pg: Cluster, tmp_path: Path
) -> Iterator[Archived]:
    with archiving(servers(request.param), request.param, s3, pg, tmp_path) as made:
        yield made


SAMPLE = """
CREATE TABLE t (id serial PRIMARY KEY, v text, n int);
INSERT INTO t (v, n) SELECT 'A' || g, g FROM generate_series(1, 500) g;
CREATE INDEX t_n ON t (n);
CREATE TABLE wide (id int PRIMARY KEY, body text);
INSERT INTO wide SELECT g, repeat(md5(g::text), 200) FROM generate_series(1, 50) g;
"""


# PostgreSQL 15: a major without incrementals, its own (Debian's) binaries; 18's full is
# test-restored with the chain below.
@pytest.mark.parametrize("archived", [15], indirect=True, ids=lambda m: f"pg{m}")
def test_it_verifies_a_full_base_backup_by_restoring_it(archived: Archived) -> None:
    archived.server.execute(SAMPLE, archived.database)
    env = archived.env
    base = loads(run(env, "backup", "--kind", "base", "--json").stdout)
    archived.switch_and_wait()

    out = run(env, "verify", base["id"], "--test-restore")
    assert f"base backup {base['id']} verified by restoring {base['id']}" in out.stdout, out.stdout
    assert "pg_amcheck passed" in out.stdout and "pg_verifybackup" in out.stdout
    shown = loads(run(env, "show", base["id"], "--json").stdout)
    assert shown["verification"] == "verified"
    [trial] = [v for v in shown["verifications"] if v["kind"] == "test_restore"]
    details = trial["details"]
    assert details["chain"] == [base["id"]] and details["amcheck"] == "passed"
    assert details["rows"] >= 550 and details["tables"] >= 2  # t and wide, at least
    assert details["data_bytes"] > 0 and details["bytes_per_second"] > 0
    assert list(archived.scratch.iterdir()) == []  # the scratch data directory is gone


# --- a chain: a full and three incrementals (PostgreSQL 18) ----------------------------------


@dataclass
class Built:
    archived: Archived
    ids: list[str]  # full, incremental 1, 2, 3
    moments: list[str]  # a moment after each member, and after the changes that followed it
    contents: list[dict[str, dict[str, list[str]]]]  # every database's rows at each moment


def content(server: Cluster, databases: list[str]) -> dict[str, dict[str, list[str]]]:
    """Every row of every user table of each database, as text, in order."""
    seen = {}
    for database in databases:
        tables = server.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            database,
        )
        seen[database] = {
            name: [
                row[0]
                for row in server.execute(f"SELECT r::text FROM {name} r ORDER BY 1", database)
            ]
            for (name,) in tables
        }
    return seen


def moment() -> str:
    """A time between the commits before and after it."""
    time.sleep(0.3)
    stamp = datetime.now(UTC).isoformat()
    time.sleep(0.3)
    return stamp


CHANGES = [
    "INSERT INTO t (v, n) SELECT 'B' || g, g FROM generate_series(501, 800) g",
    "UPDATE t SET v = v || '-updated' WHERE n % 7 = 0; UPDATE wide SET body = 'x' WHERE id < 5",
    "DROP TABLE wide; CREATE TABLE fresh (k text PRIMARY KEY); INSERT INTO fresh VALUES ('x')",
    None,  # a new database: created outside a transaction block, below
]


@pytest.fixture(scope="module")
def chain18(servers: Servers, s3: S3Server, pg: Cluster) -> Iterator[Built]:
    server = servers(18)
    home = Path(tempfile.mkdtemp(prefix="pf-chain-home-"))
    server.execute("ALTER SYSTEM SET summarize_wal = on")
    server.execute("SELECT pg_reload_conf()")
    try:
        with archiving(server, 18, s3, pg, home) as made:
            yield _build(made)
    finally:
        server.execute("ALTER SYSTEM RESET summarize_wal")
        server.execute("SELECT pg_reload_conf()")
        shutil.rmtree(home, ignore_errors=True)


def _build(made: Archived) -> Built:
    server, database, env = made.server, made.database, made.env
    server.execute(SAMPLE, database)
    databases = [database]
    ids, moments, contents = [], [], []
    for step, change in enumerate(CHANGES):
        kind = "base" if step == 0 else "incremental"
        ids.append(loads(run(env, "backup", "--kind", kind, "--json").stdout)["id"])
        if change is None:
            databases.append(server.create_database(f"{database}_new"))
            server.execute(
                "CREATE TABLE n (id int PRIMARY KEY); INSERT INTO n VALUES (1), (2)", databases[-1]
            )
        else:
            server.execute(change, database)
        contents.append(content(server, databases))
        moments.append(moment())
    server.execute("DELETE FROM t", database)  # after the last moment: never recovered
    made.switch_and_wait()
    return Built(made, ids, moments, contents)


def test_pitr_recovers_a_moment_after_each_member_of_a_chain(chain18: Built) -> None:
    made = chain18.archived
    for step, at in enumerate(chain18.moments):
        target = f"{made.database}_at{step}"
        out = run(
            made.env,
            "pitr",
            "--target-time",
            at,
            "--target-db",
            target,
            "--target-url",
            made.server.url(),
        )
        full, *incrementals = chain18.ids[: step + 1]
        said = f"chain: full {full}"
        if incrementals:
            said += (
                f" + incremental{'s' if len(incrementals) > 1 else ''} {', '.join(incrementals)}"
            )
        assert said in out.stdout, out.stdout
        expected = chain18.contents[step]
        names = {db: target if len(expected) == 1 else f"{target}_{db}" for db in expected}
        try:
            got = {db: content(made.server, [name])[name] for db, name in names.items()}
        finally:
            for name in names.values():
                made.server.drop_database(name)
        assert got == expected, f"at moment {step}"
        assert list(made.scratch.iterdir()) == []


def test_verify_restores_a_full_and_an_incremental(chain18: Built) -> None:
    made = chain18.archived
    for backup_id, chain in ((chain18.ids[0], chain18.ids[:1]), (chain18.ids[3], chain18.ids)):
        out = run(made.env, "verify", backup_id, "--test-restore", "--json")
        trial = loads(out.stdout)
        assert trial["status"] == "verified" and trial["chain"] == chain
        assert trial["amcheck"] == "passed" and trial["tables"] >= 2 and trial["rows"] > 500
        shown = loads(run(made.env, "show", backup_id, "--json").stdout)
        assert shown["verification"] == "verified"
    assert list(made.scratch.iterdir()) == []


def test_the_weekly_verify_job_queues_a_test_restore_of_the_newest_chain_member(
    chain18: Built,
) -> None:
    settings = Settings.from_env(chain18.archived.env)
    ctx = Context(settings)
    try:
        queued = Jobs(settings, say=sayer("scheduler"), abort=threading.Event()).verify(ctx)
        catalog = ctx.catalog()
        newest, *older = reversed(chain18.ids)
        assert catalog.tasks_on_backup(newest, ("test_restore",)), queued
        assert not any(catalog.tasks_on_backup(i, ("test_restore",)) for i in older)
    finally:
        ctx.close()


def test_a_corrupted_member_is_caught_by_its_hash_before_anything_is_unpacked(
    chain18: Built, s3: S3Server
) -> None:
    made = chain18.archived
    damaged = chain18.ids[2]
    key = loads(run(made.env, "show", damaged, "--json").stdout)["manifest"]["objects"]["data"]
    data = get_object(s3, made.bucket, key)
    put_object(s3, made.bucket, key, flip_byte(data, len(data) // 2))
    try:
        result = run(made.env, "verify", chain18.ids[3], "--test-restore", check=False)
    finally:
        put_object(s3, made.bucket, key, data)
    assert result.returncode == 5, result.stderr
    assert f"base backup {damaged} do not match its manifest's SHA-256" in result.stderr
    assert "nothing was unpacked" in result.stderr and "unpack" not in result.stdout
    shown = loads(run(made.env, "show", chain18.ids[3], "--json").stdout)
    assert shown["verification"] == "failed"
    assert list(made.scratch.iterdir()) == []


def test_a_parent_deleted_behind_the_catalogs_back_is_named(chain18: Built, s3: S3Server) -> None:
    made = chain18.archived
    gone = chain18.ids[1]
    for key in objects(s3, made.bucket, f"backups/base/main/{gone}/"):
        s3.client().delete_object(Bucket=made.bucket, Key=key)

    result = run(
        made.env,
        "pitr",
        "--target-time",
        chain18.moments[2],
        "--target-db",
        f"{made.database}_never",
        "--target-url",
        made.server.url(),
        check=False,
    )
    assert result.returncode == 5, result.stderr
    assert f"base backup {gone}, the parent of {chain18.ids[2]}" in result.stderr
    assert "pitr --base" in result.stderr and "download" not in result.stdout

    result = run(made.env, "verify", chain18.ids[3], "--test-restore", check=False)
    assert result.returncode == 5, result.stderr
    assert f"base backup {gone}" in result.stderr and "is missing from the bucket" in result.stderr
    # The full before it still recovers alone.
    assert "verified" in run(made.env, "verify", chain18.ids[0], "--test-restore").stdout
