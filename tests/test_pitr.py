"""Point-in-time recovery end to end, with real clusters.

The source archives its WAL with `archive_command = permafrost wal-push` (run by PostgreSQL as
its own OS user, through an env file), and the recovered databases go to another server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from tests.conftest import KEY, PERMAFROST, run
from tests.helpers import loads, objects
from tests.services import PASSWORD, SUPERUSER, Cluster, S3Server, free_port, pg_bin


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    path.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres")
    return path


class Archiving:
    """A source cluster that archives through wal-push into its own bucket."""

    def __init__(self, s3: S3Server, metadata_url: str) -> None:
        self.bucket = f"pf-pitr-{uuid.uuid4().hex[:10]}"
        s3.client().create_bucket(Bucket=self.bucket)
        self.storage = {
            "STORAGE_URL": f"s3://{self.bucket}/backups",
            "S3_ENDPOINT_URL": s3.url,
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY_ID": "testing",
            "S3_SECRET_ACCESS_KEY": "testing",
            "S3_PROVIDER": "generic",
            "BACKUP_ENCRYPTION_KEY": KEY,
            "METADATA_DATABASE_URL": metadata_url,
        }
        self.cluster = Cluster("archiving", {"wal_level": "replica", "archive_mode": "on"})
        env_file = write_env_file(self.cluster.root / "permafrost.env", self.storage)
        command = f"'{PERMAFROST}' --env-file '{env_file}' wal-push %p"
        with (self.cluster.data / "postgresql.conf").open("a") as handle:
            handle.write(f"archive_command = '{command.replace(chr(39), chr(39) * 2)}'\n")
        self.cluster.start()

    def env(self, tmp: Path, **extra: str) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp),
            "DATABASE_URL": self.cluster.url("postgres"),
            **self.storage,
            **extra,
        }

    def switch_and_wait(self) -> str:
        """Complete the current segment and wait until PostgreSQL has archived it."""
        name = self.cluster.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = self.cluster.execute(
                "SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver"
            )[0]
            if row[0] is not None and row[0] >= name:
                return str(name)
            time.sleep(0.2)
        raise AssertionError(f"{name} was not archived: pg_stat_archiver says {row}")


@pytest.fixture(scope="module")
def archiving(s3: S3Server, pg: Cluster) -> Iterator[Archiving]:
    metadata = pg.create_database(f"meta_pitr_{uuid.uuid4().hex[:8]}")
    source = Archiving(s3, pg.url(metadata))
    yield source
    source.cluster.destroy()
    pg.drop_database(metadata)


def moment() -> str:
    time.sleep(1.1)
    stamp = datetime.now(UTC).isoformat()
    time.sleep(1.1)
    return stamp


def rows(cluster: Cluster, database: str) -> list[str]:
    return [r[0] for r in cluster.execute("SELECT v FROM t ORDER BY id", database)]


def test_pitr_to_two_moments_into_another_server(
    archiving: Archiving, pg: Cluster, s3: S3Server, tmp_path: Path
) -> None:
    src = archiving.cluster
    db = src.create_database("shop")
    src.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)", db)
    src.execute("INSERT INTO t (v) SELECT 'A' || g FROM generate_series(1, 100) g", db)
    env = archiving.env(tmp_path)

    out = run(env, "backup", "--kind", "base", "--json")
    base = loads(out.stdout)
    assert base["kind"] == "base"
    physical = base["physical"]
    assert physical["timeline"] == 1 and physical["start_lsn"] and physical["system_identifier"]
    keys = objects(s3, archiving.bucket, "backups/base/main/")
    assert any(k.endswith("/manifest.json") for k in keys), keys
    assert "verified" in run(env, "verify", base["id"]).stdout  # every byte and the tar's end
    refused = run(env, "restore", base["id"], "--target-db", "nope", check=False)
    assert refused.returncode == 2 and "permafrost pitr" in refused.stderr

    src.execute("INSERT INTO t (v) SELECT 'B' || g FROM generate_series(1, 50) g", db)
    # About 40 MB of WAL between the base backup and T1: several segments to replay.
    src.execute(
        "CREATE TABLE filler AS SELECT g, md5(g::text) AS m FROM generate_series(1, 400000) g", db
    )
    t1 = moment()
    src.execute("INSERT INTO t (v) SELECT 'C' || g FROM generate_series(1, 25) g", db)
    t2 = moment()
    after_c = src.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0]
    src.execute("SELECT pg_create_restore_point('before-the-delete')")
    src.execute("DELETE FROM t", db)
    src.execute("DROP TABLE t", db)
    archiving.switch_and_wait()

    out = run(env, "wal", "verify")
    assert "no gaps" in out.stdout
    status = loads(run(env, "wal", "status", "--json").stdout)
    assert status["last_segment"] and status["lag_seconds"] is not None
    assert status["method"] == "push"  # wal-push told the metadata store

    target_url = pg.url("postgres")
    at_t1 = f"pitr_t1_{uuid.uuid4().hex[:6]}"
    out = run(env, "pitr", "--target-time", t1, "--target-db", at_t1, "--target-url", target_url)
    assert "recovered" in out.stdout and "point-in-time recovery complete" in out.stdout
    got = rows(pg, at_t1)
    assert len(got) == 150 and got[0] == "A1" and got[-1] == "B50"

    at_t2 = f"pitr_t2_{uuid.uuid4().hex[:6]}"
    run(env, "pitr", "--target-time", t2, "--target-db", at_t2, "--target-url", target_url)
    got = rows(pg, at_t2)
    assert len(got) == 175 and got[-1] == "C25"

    by_name = f"pitr_name_{uuid.uuid4().hex[:6]}"
    run(
        env,
        "pitr",
        "--target-name",
        "before-the-delete",
        "--target-db",
        by_name,
        "--target-url",
        target_url,
    )
    assert len(rows(pg, by_name)) == 175
    by_lsn = f"pitr_lsn_{uuid.uuid4().hex[:6]}"
    run(env, "pitr", "--target-lsn", after_c, "--target-db", by_lsn, "--target-url", target_url)
    assert len(rows(pg, by_lsn)) == 175

    # The same target name again: refused before anything is downloaded, nothing touched.
    again = run(
        env,
        "pitr",
        "--target-time",
        t2,
        "--target-db",
        at_t2,
        "--target-url",
        target_url,
        "--database",
        db,
        check=False,
    )
    assert again.returncode == 9, again.stderr
    assert len(rows(pg, at_t2)) == 175

    # Before the base backup: refused, with the window.
    early = run(
        env,
        "pitr",
        "--target-time",
        "2020-01-01T00:00:00Z",
        "--target-db",
        "never",
        "--target-url",
        target_url,
        check=False,
    )
    assert early.returncode == 2, early.stderr
    assert "before the end of the oldest base backup" in early.stderr

    # A hole in the archive: pitr names the missing segment, wal verify reports the gap.
    names = [k.rsplit("/", 1)[-1].removesuffix(".pfe") for k in objects(s3, archiving.bucket)]
    segments = sorted(n for n in names if len(n) == 24 and n > physical["wal_stop"])
    assert len(segments) >= 3, names
    name = segments[1]
    key = f"backups/wal/main/00000001/{name}.pfe"
    kept = s3.client().get_object(Bucket=archiving.bucket, Key=key)["Body"].read()
    s3.client().delete_object(Bucket=archiving.bucket, Key=f"backups/wal/main/00000001/{name}.pfe")
    verify = run(env, "wal", "verify", check=False)
    assert verify.returncode == 5 and name in verify.stdout, verify.stdout + verify.stderr
    broken = run(
        env,
        "pitr",
        "--target-time",
        t2,
        "--target-db",
        "never2",
        "--target-url",
        target_url,
        check=False,
    )
    assert broken.returncode != 0 and name in broken.stderr, broken.stderr
    assert not pg.execute("SELECT 1 FROM pg_database WHERE datname LIKE 'never%'")
    s3.client().put_object(Bucket=archiving.bucket, Key=key, Body=kept)
    assert run(env, "wal", "verify").returncode == 0


def test_pitr_latest_into_a_directory_leaves_a_server_running(
    archiving: Archiving, tmp_path: Path
) -> None:
    src = archiving.cluster
    db = src.create_database(f"dir_{uuid.uuid4().hex[:6]}")
    src.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)", db)
    env = archiving.env(tmp_path)
    run(env, "backup", "--kind", "base")
    src.execute("INSERT INTO t (v) VALUES ('after the base backup')", db)
    archiving.switch_and_wait()

    # A directory the server's OS user cannot reach is refused before any download.
    if os.geteuid() == 0:
        private = run(env, "pitr", "--latest", "--target-dir", str(tmp_path / "x"), check=False)
        assert private.returncode == 7 and "cannot write" in private.stderr, private.stderr

    root = Path(tempfile.mkdtemp(prefix="pf-pitr-dir-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data = root / "recovered"
    port = free_port()
    try:
        out = run(env, "pitr", "--latest", "--target-dir", str(data), "--port", str(port))
        assert f"server running on port {port}" in out.stdout, out.stdout
        with psycopg.connect(
            f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{port}/{db}", autocommit=True
        ) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [("after the base backup",)]
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
            assert conn.execute("SHOW archive_mode").fetchone() == ("off",)
        assert not list(data.glob("**/permafrost.env"))
        assert not (data / "pg_wal" / ".permafrost-prefetch").exists()
        # An existing, non-empty directory is never written over.
        again = run(env, "pitr", "--latest", "--target-dir", str(data), check=False)
        assert again.returncode == 9 and "not empty" in again.stderr
    finally:
        subprocess.run(
            [*owner(), str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_wal_switch_completes_a_quiet_segment_only_when_it_is_old(
    archiving: Archiving, tmp_path: Path
) -> None:
    src = archiving.cluster
    env = archiving.env(tmp_path, WAL_MAX_SEGMENT_AGE="2")
    # After a switch the background writer may log one standby snapshot (a few bytes of WAL,
    # within 15 s): that is WAL written, so a switch then is right. Wait for a quiet moment.
    for _ in range(4):
        archiving.switch_and_wait()
        idle = run(env, "wal", "switch")
        if "no switch needed" in idle.stdout:
            break
    assert "no switch needed" in idle.stdout  # nothing written since the last segment
    src.execute("CREATE TABLE IF NOT EXISTS quiet (v int); INSERT INTO quiet VALUES (1)")
    segment = src.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")[0][0]
    time.sleep(2.2)
    switched = run(env, "wal", "switch")
    assert f"switched WAL: {segment}" in switched.stdout, switched.stdout
    deadline = time.monotonic() + 30
    while src.execute("SELECT last_archived_wal FROM pg_stat_archiver")[0][0] < segment:
        assert time.monotonic() < deadline, "the switched segment was not archived"
        time.sleep(0.2)


def owner() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def test_retention_deletes_wal_only_before_the_oldest_kept_base_backup(
    archiving: Archiving, s3: S3Server, tmp_path: Path
) -> None:
    env = archiving.env(tmp_path, RETENTION_MIN_KEEP="1", PITR_WINDOW_DAYS="0")
    run(env, "backup", "--kind", "base")
    archiving.switch_and_wait()
    newest = loads(run(env, "backup", "--kind", "base", "--json").stdout)
    archiving.switch_and_wait()
    run(env, "verify", newest["id"])  # so "newest verified" keeps no older one
    plan = loads(run(env, "retention", "--json").stdout)
    bases = {b["id"]: b for b in plan["backups"] if b["kind"] == "base"}
    assert len(bases) >= 2
    assert bases[newest["id"]]["keep"] is True
    assert all(not b["keep"] for i, b in bases.items() if i != newest["id"])
    [wal] = plan["wal"]
    assert wal["kept_base_backups"] == [newest["id"]]
    assert wal["delete"] > 0 and wal["last"] < newest["physical"]["wal_start"]
    run(env, "retention", "--apply")
    names = [k.rsplit("/", 1)[-1] for k in objects(s3, archiving.bucket, "backups/wal/")]
    segments = sorted(n.removesuffix(".pfe") for n in names if len(n) == 28)
    assert segments[0] >= newest["physical"]["wal_start"][:24]
    assert "no gaps" in run(env, "wal", "verify").stdout  # what is left still recovers
