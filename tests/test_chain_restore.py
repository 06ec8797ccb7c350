"""Restoring base backups as chains: `verify --test-restore` of base backups, and pitr.

Real servers from the `servers` fixture (one per major for the session): PostgreSQL 15 (no
incremental backups, a chain of one) and 18 (pg_combinebackup, pg_amcheck). Each test archives
the server's WAL into a bucket of its own through wal-push.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PERMAFROST, bucket_env, run, unique
from tests.helpers import flip_byte, get_object, loads, put_object
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


@pytest.fixture
def archived(
    request: pytest.FixtureRequest,
    servers: Servers,
    s3: S3Server,
    bucket: str,
    pg: Cluster,
    metadata_db: str,
    tmp_path: Path,
) -> Iterator[Archived]:
    major = request.param
    server = servers(major)
    database = server.create_database(unique(f"chain{major}"))
    storage = {**bucket_env(s3, bucket), "METADATA_DATABASE_URL": pg.url(metadata_db)}
    scratch = Path(tempfile.mkdtemp(prefix="pf-chain-"))
    scratch.chmod(0o755)  # the servers' OS user reaches its files through it
    env_file = _env_file(scratch.parent / f"{scratch.name}.env", storage)
    command = f"'{PERMAFROST}' --env-file '{env_file}' wal-push %p".replace("'", "''")
    server.execute(f"ALTER SYSTEM SET archive_command = '{command}'")
    server.execute("SELECT pg_reload_conf()")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
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
        shutil.rmtree(scratch, ignore_errors=True)
        env_file.unlink()


SAMPLE = """
CREATE TABLE t (id serial PRIMARY KEY, v text, n int);
INSERT INTO t (v, n) SELECT 'A' || g, g FROM generate_series(1, 500) g;
CREATE INDEX t_n ON t (n);
CREATE TABLE wide (id int PRIMARY KEY, body text);
INSERT INTO wide SELECT g, repeat(md5(g::text), 200) FROM generate_series(1, 50) g;
"""


@pytest.mark.parametrize("archived", [15, 18], indirect=True, ids=lambda m: f"pg{m}")
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


@pytest.mark.parametrize("archived", [18], indirect=True, ids=lambda m: f"pg{m}")
def test_a_corrupted_stored_base_backup_is_caught_by_its_hash(
    archived: Archived, s3: S3Server
) -> None:
    archived.server.execute(SAMPLE, archived.database)
    env = archived.env
    base = loads(run(env, "backup", "--kind", "base", "--json").stdout)
    archived.switch_and_wait()
    key = base["objects"]["data"] if "objects" in base else None
    if key is None:
        key = loads(run(env, "show", base["id"], "--json").stdout)["manifest"]["objects"]["data"]
    data = get_object(s3, archived.bucket, key)
    put_object(s3, archived.bucket, key, flip_byte(data, len(data) // 2))

    result = run(env, "verify", base["id"], "--test-restore", check=False)
    assert result.returncode == 5, result.stderr
    assert "do not match its manifest's SHA-256" in result.stderr
    assert "nothing was unpacked" in result.stderr
    assert "unpack" not in result.stdout  # it stopped before any member was opened
    shown = loads(run(env, "show", base["id"], "--json").stdout)
    assert shown["verification"] == "failed"
    assert list(archived.scratch.iterdir()) == []
