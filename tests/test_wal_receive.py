"""wal-receive: PITR for a server whose archive_command we cannot set (archive_mode = off)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import KEY, PERMAFROST, run
from tests.helpers import objects
from tests.services import Cluster, S3Server


@pytest.fixture
def managed(s3: S3Server) -> Iterator[Cluster]:
    cluster = Cluster("managed", {"wal_level": "replica", "archive_mode": "off"}).start()
    yield cluster
    cluster.destroy()


def archived_segments(s3: S3Server, bucket: str) -> list[str]:
    names = [k.rsplit("/", 1)[-1].removesuffix(".pfe") for k in objects(s3, bucket, "wal/")]
    return sorted(n for n in names if len(n) == 24)


def wait_for_segment(s3: S3Server, bucket: str, name: str, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if any(seg >= name for seg in archived_segments(s3, bucket)):
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{name} not archived within {limit} s: {archived_segments(s3, bucket)}")


def test_wal_receive_archives_a_server_without_archive_command(
    managed: Cluster, pg: Cluster, s3: S3Server, tmp_path: Path
) -> None:
    bucket = f"pf-recv-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    metadata = pg.create_database(f"meta_recv_{uuid.uuid4().hex[:8]}")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DATABASE_URL": managed.url("postgres"),
        "METADATA_DATABASE_URL": pg.url(metadata),
        "STORAGE_URL": f"s3://{bucket}",
        "S3_ENDPOINT_URL": s3.url,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "BACKUP_ENCRYPTION_KEY": KEY,
        "WAL_SPOOL_DIR": str(tmp_path / "spool"),
        "WAL_MAX_SEGMENT_AGE": "3",
        "LOG_LEVEL": "info",
    }
    db = managed.create_database("app")
    managed.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)", db)
    receiver = subprocess.Popen(
        [PERMAFROST, "wal-receive"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        assert "streaming cluster main through slot permafrost_main" in receiver.stdout.readline()
        run(env, "backup", "--kind", "base")

        # A quiet server: one small commit, then nothing. The switch check completes the
        # segment, so the commit is in the bucket within WAL_MAX_SEGMENT_AGE (plus an upload).
        managed.execute("INSERT INTO t (v) VALUES ('quiet commit')", db)
        segment = managed.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")[0][0]
        waited = wait_for_segment(s3, bucket, segment, 3 + 15)
        assert waited < 3 + 15

        # pg_receivewal dies: it is restarted, and archiving goes on.
        child = subprocess.run(
            ["pgrep", "-f", f"pg_receivewal --directory={tmp_path}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert child, "pg_receivewal is not running"
        os.kill(int(child[0]), signal.SIGKILL)
        managed.execute("INSERT INTO t (v) VALUES ('after a restart')", db)
        segment = managed.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")[0][0]
        wait_for_segment(s3, bucket, segment, 3 + 30)

        status = run(env, "wal", "status", "--json").stdout
        assert '"method": "receive"' in status
        target = f"recv_{uuid.uuid4().hex[:6]}"
        out = run(
            env, "pitr", "--latest", "--target-db", target, "--target-url", pg.url("postgres")
        )
        got = pg.execute("SELECT v FROM t ORDER BY id", target)
        listing = archived_segments(s3, bucket)
        assert got == [("quiet commit",), ("after a restart",)], (out.stdout, listing, segment)
    finally:
        receiver.send_signal(signal.SIGTERM)
        out, err = receiver.communicate(timeout=60)
        pg.drop_database(metadata)
    assert receiver.returncode == 0, err
    assert "every completed segment is archived" in out


def test_the_scheduler_supervises_wal_receive(
    managed: Cluster, pg: Cluster, s3: S3Server, tmp_path: Path
) -> None:
    bucket = f"pf-recv-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    metadata = pg.create_database(f"meta_recv_{uuid.uuid4().hex[:8]}")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DATABASE_URL": managed.url("postgres"),
        "METADATA_DATABASE_URL": pg.url(metadata),
        "STORAGE_URL": f"s3://{bucket}",
        "S3_ENDPOINT_URL": s3.url,
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "BACKUP_ENCRYPTION_KEY": KEY,
        "WAL_SPOOL_DIR": str(tmp_path / "spool"),
        "WAL_ARCHIVING": "receive",
        "BASE_BACKUP_SCHEDULE": "off",
        "BACKUP_SCHEDULE": "off",
        "COMPLIANCE_SCHEDULE": "off",
        "VERIFY_SCHEDULE": "off",
        "CLEANUP_SCHEDULE": "off",
        "LIFECYCLE_SCHEDULE": "off",
        "LIFECYCLE_APPLY": "false",
    }
    log = tmp_path / "scheduler.log"
    with log.open("wb") as handle:
        scheduler = subprocess.Popen(
            [PERMAFROST, "scheduler"], env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while not managed.execute("SELECT 1 FROM pg_stat_replication"):
            assert time.monotonic() < deadline, f"wal-receive did not connect: {log.read_text()}"
            time.sleep(0.3)
        managed.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        segment = managed.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        try:
            wait_for_segment(s3, bucket, segment, 30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()}") from None
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(timeout=90)
        pg.drop_database(metadata)
    assert scheduler.returncode == 0
    assert "starting wal-receive" in log.read_text()
    assert managed.execute("SELECT count(*) FROM pg_stat_replication") == [(0,)]


def _receive_env(managed: Cluster, pg: Cluster, s3: S3Server, tmp_path: Path) -> dict[str, str]:
    bucket = f"pf-recv-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DATABASE_URL": managed.url("postgres"),
        "METADATA_DATABASE_URL": pg.url(pg.create_database(f"meta_recv_{uuid.uuid4().hex[:8]}")),
        "STORAGE_URL": f"s3://{bucket}",
        "S3_ENDPOINT_URL": s3.url,
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "BACKUP_ENCRYPTION_KEY": KEY,
        "WAL_SPOOL_DIR": str(tmp_path / "spool"),
        "WAL_ARCHIVING": "receive",
        "BASE_BACKUP_SCHEDULE": "off",
        "BACKUP_SCHEDULE": "off",
        "COMPLIANCE_SCHEDULE": "off",
        "VERIFY_SCHEDULE": "off",
        "CLEANUP_SCHEDULE": "off",
        "LIFECYCLE_SCHEDULE": "off",
        "LIFECYCLE_APPLY": "false",
    }


def _pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(pid) for pid in out.stdout.split()]


def _gone(pids: list[int], seconds: float) -> list[int]:
    """The pids of `pids` still alive after waiting up to `seconds` for them to go."""
    deadline = time.monotonic() + seconds
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.3)
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    return alive


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def test_kill_9_of_the_scheduler_takes_its_wal_receive_and_pg_receivewal_with_it(
    managed: Cluster, pg: Cluster, s3: S3Server, tmp_path: Path
) -> None:
    env = _receive_env(managed, pg, s3, tmp_path)
    log = tmp_path / "scheduler.log"
    with log.open("wb") as handle:
        scheduler = subprocess.Popen(
            [PERMAFROST, "scheduler"], env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not managed.execute("SELECT 1 FROM pg_stat_replication"):
            assert time.monotonic() < deadline, f"wal-receive did not connect: {log.read_text()}"
            time.sleep(0.3)
        # pg_stat_replication also shows the short-lived `--create-slot` connection.
        deadline = time.monotonic() + 30
        while len(children) < 2:
            assert time.monotonic() < deadline, f"no stream: {children} {log.read_text()}"
            time.sleep(0.3)
            children = _pids(f"pg_receivewal --directory={tmp_path}") + _pids(
                f"{PERMAFROST.rsplit('/', 1)[0]}.*permafrost wal-receive"
            )
        scheduler.send_signal(signal.SIGKILL)
        scheduler.wait(timeout=30)
        assert _gone(children, 60) == [], log.read_text()
        deadline = time.monotonic() + 30
        while managed.execute("SELECT 1 FROM pg_replication_slots WHERE active"):
            assert time.monotonic() < deadline, "the slot is still active"
            time.sleep(0.3)
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_stale_stream_of_ours_is_named_and_ended_and_the_new_one_takes_the_slot(
    managed: Cluster, pg: Cluster, s3: S3Server, tmp_path: Path
) -> None:
    env = _receive_env(managed, pg, s3, tmp_path)
    tool = str(managed.bin / "pg_receivewal")
    conninfo = f"{managed.url('postgres')}?application_name="
    subprocess.run(
        [tool, "--create-slot", "--slot=permafrost_main", f"--dbname={managed.url('postgres')}"],
        check=True,
        capture_output=True,
    )
    # What an old leader's pg_receivewal looks like once its wal-receive is gone: a stream
    # named after a wal-receive process that no longer exists.
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale_name = f"permafrost-wal-receive/{socket.gethostname()}:{dead.pid}"
    (tmp_path / "stale").mkdir()
    stale = subprocess.Popen(
        [
            tool,
            f"--directory={tmp_path / 'stale'}",
            "--slot=permafrost_main",
            "--no-loop",
            f"--dbname={conninfo}{stale_name}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    receiver = None
    try:
        deadline = time.monotonic() + 30
        while not managed.execute("SELECT 1 FROM pg_replication_slots WHERE active"):
            assert time.monotonic() < deadline, "the stale stream did not take the slot"
            time.sleep(0.2)
        ((stale_backend,),) = managed.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'permafrost_main'"
        )
        receiver = subprocess.Popen(
            [PERMAFROST, "wal-receive"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while True:
            names = managed.execute(
                "SELECT application_name FROM pg_stat_replication"
                f" WHERE application_name LIKE 'permafrost-wal-receive/%:{receiver.pid}'"
            )
            if names:
                break
            assert time.monotonic() < deadline, "the new stream did not take the slot"
            time.sleep(0.3)
        stale.wait(timeout=30)  # its connection was terminated: pg_receivewal exits
    finally:
        with contextlib.suppress(ProcessLookupError):
            stale.kill()
        err = ""
        if receiver is not None:
            receiver.send_signal(signal.SIGTERM)
            err = receiver.communicate(timeout=60)[1]
    held = f"replication slot permafrost_main is held by PID {stale_backend} ({stale_name}"
    assert held in err, err
    assert f"ended the stale stream (PID {stale_backend})" in err, err


def test_wal_receive_records_the_archive_again_after_a_metadata_store_restart(
    managed: Cluster, pg: Cluster, s3: S3Server, tmp_path: Path
) -> None:
    store = Cluster("recv-store").start()
    meta = store.create_database("meta")
    env = {**_receive_env(managed, pg, s3, tmp_path), "METADATA_DATABASE_URL": store.url(meta)}
    receiver = subprocess.Popen(
        [PERMAFROST, "wal-receive"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    managed.execute("CREATE TABLE IF NOT EXISTS t (v int)")

    def recorded() -> str | None:
        try:
            rows = store.execute("SELECT last_segment FROM permafrost.wal_archive", meta)
        except psycopg.errors.UndefinedTable:
            return None  # wal-receive has not connected yet
        return rows[0][0] if rows else None

    def archived_past(segment: str | None) -> bool:
        managed.execute("INSERT INTO t VALUES (1)")
        managed.execute("SELECT pg_switch_wal()")
        time.sleep(1)
        now = recorded()
        return now is not None and (segment is None or now > segment)

    try:
        deadline = time.monotonic() + 60
        while not archived_past(None):
            assert time.monotonic() < deadline, "no segment recorded"
        before = recorded()
        store.stop()  # the metadata store restarts, as `pg_ctl restart` does
        time.sleep(2)
        store.start()
        deadline = time.monotonic() + 90
        while not archived_past(before):
            assert time.monotonic() < deadline, f"nothing recorded after {before}"
        assert receiver.poll() is None
    finally:
        receiver.send_signal(signal.SIGTERM)
        err = receiver.communicate(timeout=60)[1]
        store.destroy()
    assert receiver.returncode == 0, err
    assert b"Traceback" not in err, err


def test_a_slot_held_by_someone_else_is_named_and_left_alone(
    managed: Cluster, pg: Cluster, s3: S3Server, tmp_path: Path
) -> None:
    env = _receive_env(managed, pg, s3, tmp_path)
    tool = str(managed.bin / "pg_receivewal")
    subprocess.run(
        [tool, "--create-slot", "--slot=permafrost_main", f"--dbname={managed.url('postgres')}"],
        check=True,
        capture_output=True,
    )
    (tmp_path / "other").mkdir()
    other = subprocess.Popen(
        [
            tool,
            f"--directory={tmp_path / 'other'}",
            "--slot=permafrost_main",
            "--no-loop",
            f"--dbname={managed.url('postgres')}?application_name=someone-else",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    receiver = None
    log = tmp_path / "receiver.log"
    try:
        deadline = time.monotonic() + 30
        while not managed.execute("SELECT 1 FROM pg_replication_slots WHERE active"):
            assert time.monotonic() < deadline, "the other client did not take the slot"
            time.sleep(0.2)
        ((holder,),) = managed.execute("SELECT active_pid FROM pg_replication_slots")
        with log.open("wb") as handle:
            receiver = subprocess.Popen(
                [PERMAFROST, "wal-receive"], env=env, stdout=subprocess.DEVNULL, stderr=handle
            )
        deadline = time.monotonic() + 60
        while "not a stale stream of ours" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert other.poll() is None, "the other client's stream was ended"
        assert managed.execute("SELECT active_pid FROM pg_replication_slots") == [(holder,)]
    finally:
        other.kill()
        if receiver is not None:
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(timeout=60)
    err = log.read_text()
    assert f"replication slot permafrost_main is held by PID {holder} (someone-else" in err, err
