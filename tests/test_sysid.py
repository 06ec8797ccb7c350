"""A source upgraded or replaced under the same CLUSTER_NAME: a new system identifier.

The upgrade is simulated by a second initdb cluster (a new system identifier) archiving with
the same env file, so the same CLUSTER_NAME, as the first: its WAL and its base backups are
refused until `permafrost wal reset`, logical backups carry on, and after the reset both the
new system and the old one's base backup recover.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from monitor.alerts.rules.wal import archive_behind
from permafrost.wal import identity
from tests.conftest import PERMAFROST, bucket_env, run
from tests.helpers import get_object, objects
from tests.services import PASSWORD, SUPERUSER, Cluster, S3Server, free_port, pg_bin


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    path.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres")
    return path


def archiving_cluster(name: str, storage: dict[str, str]) -> Cluster:
    """A cluster whose archive_command is wal-push into `storage`, under CLUSTER_NAME main."""
    cluster = Cluster(name, {"wal_level": "replica", "archive_mode": "on"})
    env_file = write_env_file(cluster.root / "permafrost.env", storage)
    command = f"'{PERMAFROST}' --env-file '{env_file}' wal-push %p"
    with (cluster.data / "postgresql.conf").open("a") as handle:
        handle.write(f"archive_command = '{command.replace(chr(39), chr(39) * 2)}'\n")
    return cluster.start()


def switch(cluster: Cluster) -> str:
    return str(cluster.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0])


def wait_archived(cluster: Cluster, name: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        row = cluster.execute("SELECT last_archived_wal, failed_count FROM pg_stat_archiver")[0]
        if row[0] is not None and row[0] >= name:
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} was not archived: pg_stat_archiver says {row}")


def wait_refused(cluster: Cluster, name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = cluster.execute("SELECT failed_count, last_failed_wal FROM pg_stat_archiver")[0]
        if row[0] and row[1] == name:
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} was not refused: pg_stat_archiver says {row}")


def system_of(cluster: Cluster) -> str:
    return str(cluster.execute("SELECT system_identifier FROM pg_control_system()")[0][0])


def owner() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def recovered_rows(env: dict[str, str], database: str, *extra: str) -> list[str]:
    """pitr --latest into a directory; the rows of table t in the recovered server."""
    root = Path(tempfile.mkdtemp(prefix="pf-sysid-pitr-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "recovered", free_port()
    try:
        run(env, "pitr", "--latest", *extra, "--target-dir", str(data), "--port", str(port))
        url = f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{port}/{database}"
        with psycopg.connect(url, autocommit=True) as conn:
            return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY id").fetchall()]
    finally:
        subprocess.run(
            [*owner(), str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def storage(s3: S3Server, pg: Cluster) -> Iterator[dict[str, str]]:
    bucket = f"pf-sysid-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    metadata = pg.create_database(f"meta_sysid_{uuid.uuid4().hex[:8]}")
    yield {
        **bucket_env(s3, bucket),
        "METADATA_DATABASE_URL": pg.url(metadata),
        "BUCKET": bucket,  # for the test; permafrost ignores it
    }
    pg.drop_database(metadata)


def env_for(cluster: Cluster, storage: dict[str, str], tmp: Path, db: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp),
        "DATABASE_URL": cluster.url(db),
        **storage,
    }


def test_it_refuses_a_new_system_under_the_same_cluster_name_until_the_archive_is_reset(
    s3: S3Server, pg: Cluster, storage: dict[str, str], tmp_path: Path
) -> None:
    bucket = storage["BUCKET"]
    a = archiving_cluster("sysid-a", storage)
    b: Cluster | None = None
    try:
        a.create_database("shop")
        a.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)", "shop")
        env_a = env_for(a, storage, tmp_path, "shop")
        run(env_a, "backup", "--kind", "base")
        a.execute("INSERT INTO t (v) VALUES ('A after its base backup')", "shop")
        wait_archived(a, switch(a))
        old_base = json.loads(run(env_a, "list", "--json").stdout)[0]["id"]
        recorded = json.loads(get_object(s3, bucket, "backups/clusters/main.json"))
        assert recorded["system_identifier"] == system_of(a) and recorded["major"] == 15
        sys_a = system_of(a)
        a.stop()
        old_wal = objects(s3, bucket, "backups/wal/main/")
        # As an archive from before identities were kept: the base backup's system is taken.
        s3.client().delete_object(Bucket=bucket, Key="backups/clusters/main.json")

        # The upgrade: a new initdb under the same CLUSTER_NAME, the same archive_command.
        b = archiving_cluster("sysid-b", storage)
        sys_b = system_of(b)
        assert sys_b != sys_a
        before = objects(s3, bucket)
        refused = switch(b)
        wait_refused(b, refused)  # PostgreSQL keeps the segment and retries
        push = run(env_a, "wal-push", str(b.data / "pg_wal" / refused), check=False)
        line = (
            f"permafrost: error: the archive for cluster main belongs to system {sys_a} "
            f"(PostgreSQL 15), this server is system {sys_b} (PostgreSQL 15): it was upgraded "
            "or replaced; use a new CLUSTER_NAME, or run `permafrost wal reset --cluster main "
            "--apply` and then take a base backup (`permafrost backup --kind base --cluster main`)"
        )
        assert push.returncode == 13 and push.stderr.splitlines() == [line], push.stderr
        b.create_database("shop")
        b.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)", "shop")
        env_b = env_for(b, storage, tmp_path, "shop")
        base = run(env_b, "backup", "--kind", "base", check=False)
        assert base.returncode == 13 and base.stderr.splitlines()[-1] == line, base.stderr
        receive = subprocess.run(
            [PERMAFROST, "wal-receive"],
            env={**env_b, "WAL_SPOOL_DIR": str(tmp_path / "spool")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert receive.returncode == 13 and receive.stderr.splitlines()[-1] == line
        recorded = json.loads(get_object(s3, bucket, "backups/clusters/main.json"))
        assert recorded["system_identifier"] == sys_a  # from A's base backup's manifest
        assert objects(s3, bucket) == sorted([*before, "backups/clusters/main.json"])  # no B
        error = pg.execute(
            "SELECT last_error FROM permafrost.wal_archive WHERE cluster = 'main'",
            storage["METADATA_DATABASE_URL"].rsplit("/", 1)[1],
        )[0][0]
        assert identity.is_mismatch(error) and sys_b in error

        # Logical backups do not depend on the system: they carry on.
        run(env_b, "backup")
        assert any("/standard/shop/" in key for key in objects(s3, bucket))
        before = objects(s3, bucket)

        dry = run(env_b, "wal", "reset")
        assert f"would move {len(old_wal)} WAL file(s) from wal/main/ to wal/main.{sys_a}/" in (
            dry.stdout
        ), dry.stdout
        assert "dry run: nothing changed" in dry.stdout
        assert objects(s3, bucket) == before

        applied = run(env_b, "wal", "reset", "--apply")
        assert "now take a base backup: permafrost backup --kind base" in applied.stdout
        moved = objects(s3, bucket, f"backups/wal/main.{sys_a}/")
        assert [k.split("/", 3)[3] for k in moved] == [k.split("/", 3)[3] for k in old_wal]
        assert not set(old_wal) & set(objects(s3, bucket, "backups/wal/main/"))
        recorded = json.loads(get_object(s3, bucket, "backups/clusters/main.json"))
        assert recorded["system_identifier"] == sys_b
        assert recorded["previous"][0]["system_identifier"] == sys_a
        audit = pg.execute(
            "SELECT action, target FROM permafrost.audit_log",
            storage["METADATA_DATABASE_URL"].rsplit("/", 1)[1],
        )
        assert ("wal-reset", "main") in audit
        assert "nothing to reset" in run(env_b, "wal", "reset").stdout
        status = json.loads(run(env_b, "wal", "status", "--json").stdout)
        assert (status["system_identifier"], status["major"]) == (sys_b, 15)

        # The new system archives (the refused segment first) and backs up, and recovers to
        # its latest commit.
        run(env_b, "backup", "--kind", "base")
        b.execute("INSERT INTO t (v) VALUES ('B after its base backup')", "shop")
        wait_archived(b, switch(b))
        assert refused in {
            k.rsplit("/", 1)[1][:24] for k in objects(s3, bucket, "backups/wal/main/")
        }
        run(env_b, "wal", "verify")  # the old system's base backup is no gap in the new WAL
        assert recovered_rows(env_b, "shop") == ["B after its base backup"]
        # The old system's base backup still recovers, from the WAL the reset moved aside.
        assert recovered_rows(env_b, "shop", "--base", old_base) == ["A after its base backup"]
    finally:
        a.destroy()
        if b is not None:
            b.destroy()


def test_it_reads_the_system_identifier_and_major_from_a_wal_segment(pg: Cluster) -> None:
    name = switch(pg)
    system = identity.of_segment(pg.data / "pg_wal" / name)
    major = int(pg.execute("SHOW server_version_num")[0][0]) // 10000
    assert system == identity.System(system_of(pg), major)


def test_it_says_a_history_file_has_no_system(tmp_path: Path) -> None:
    history = tmp_path / "00000002.history"
    history.write_text("1\t0/3000000\tno recovery target specified\n")
    assert identity.of_segment(history) is None


def test_it_alerts_that_the_server_was_replaced_and_what_to_run() -> None:
    message = str(identity.mismatch("main", identity.System("1", 15), identity.System("2", 17)))
    row = {
        "last_segment": "000000010000000000000009",
        "last_archived_at": datetime_at(0),
        "last_error": message,
        "last_error_at": datetime_at(60),
    }
    [finding] = archive_behind("main", 300, row, 3600)
    assert "another PostgreSQL system than the archive's (upgraded or replaced)" in (
        finding.summary
    )
    assert finding.runbook.splitlines()[1] == "permafrost wal reset --cluster main --apply"
    assert finding.details["last_error"] == message  # the whole line, in the email's details


def datetime_at(seconds: int) -> datetime:
    return datetime(2026, 12, 3, tzinfo=UTC) + timedelta(seconds=seconds)


def test_it_takes_the_system_of_an_archive_from_before_identities_from_its_newest_segment(
    env: dict[str, str], pg: Cluster, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    name = switch(pg)
    run(env, "wal-push", str(pg.data / "pg_wal" / name))
    s3.client().delete_object(Bucket=bucket, Key="backups/clusters/main.json")
    before = objects(s3, bucket)
    # Another system's segment: the same bytes with another xlp_sysid (byte 24 of the header).
    data = bytearray((pg.data / "pg_wal" / name).read_bytes())
    data[24:32] = (12345).to_bytes(8, "little")
    other = tmp_path / (name[:8] + f"{int(name[8:16], 16) + 1:08X}" + name[16:])
    other.write_bytes(bytes(data))

    push = run(env, "wal-push", str(other), check=False)
    assert push.returncode == 13, push.stderr
    assert f"belongs to system {system_of(pg)} (PostgreSQL 15), this server is system 12345" in (
        push.stderr
    )
    assert objects(s3, bucket) == sorted([*before, "backups/clusters/main.json"])
    run(env, "wal-push", str(pg.data / "pg_wal" / name))  # its own system's still goes in
