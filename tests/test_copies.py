"""Copies (issue 18): a backup copied to a second place, checked there, restored from it alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from permafrost.catalog.jobs import JobName
from permafrost.config.settings import Settings
from permafrost.logs import sayer
from scheduler.jobs import Jobs, JobSpec
from tests.conftest import run
from tests.helpers import loads, table_digest
from tests.services import Cluster, S3Server, free_port


class Outage:
    """moto's S3 server on a port of its own, stopped and started again there: a copy
    destination that goes away for a while (and comes back empty, as after losing it)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, bucket: str) -> None:
        moto = Path(sys.executable).parent / "moto_server"
        self.proc = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client().create_bucket(Bucket=bucket)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def outage():
    server = Outage()
    yield server
    server.stop()


def new_bucket(s3: S3Server) -> str:
    name = f"pf-copy-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=name)
    return name


def s3_copy(index: int, s3: S3Server, key_id: str = "testing") -> dict[str, str]:
    """COPY_<index>_* for an S3 copy at the test server (another key id: another account, so
    no server-side copy; the same: server-side)."""
    return {
        f"COPY_{index}_S3_ENDPOINT_URL": s3.url,
        f"COPY_{index}_S3_REGION": "us-east-1",
        f"COPY_{index}_S3_ACCESS_KEY_ID": key_id,
        f"COPY_{index}_S3_SECRET_ACCESS_KEY": "testing",
        f"COPY_{index}_S3_PROVIDER": "generic",
    }


def alone(env: dict[str, str], storage: dict[str, str]) -> dict[str, str]:
    """The environment of a site that has only the copy: its STORAGE_URL and credentials, the
    primary's key, and no metadata store (it went with the primary)."""
    kept = {k: env[k] for k in ("PATH", "HOME", "DATABASE_URL", "BACKUP_ENCRYPTION_KEY")}
    return {**kept, **storage}


def empty_bucket(s3: S3Server, bucket: str) -> None:
    client = s3.client()
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=item["Key"])


@pytest.fixture
def target(pg: Cluster, source_db: str):
    names: list[str] = []
    yield lambda suffix: names.append(f"{source_db}_{suffix}") or names[-1]
    for name in names:
        pg.drop_database(name)


def test_it_copies_a_backup_to_s3_and_restores_from_the_copy_alone(
    env, s3, pg, source_db, bucket, target
):
    far, near = new_bucket(s3), new_bucket(s3)
    env = {
        **env,
        "COPY_STORAGE_URLS": f"far=s3://{far}/elsewhere near=s3://{near}/backups",
        **s3_copy(1, s3, key_id="another-account"),
        **s3_copy(2, s3),
    }
    backup = loads(run(env, "backup", "--json").stdout)

    copied = run(env, "copy", backup["id"])
    assert "far: 1 backups copied and verified" in copied.stdout
    assert "near: 1 backups copied and verified" in copied.stdout
    assert "bytes, stream," in copied.stdout and "bytes, server-side," in copied.stdout

    shown = loads(run(env, "show", backup["id"], "--json").stdout)
    assert sorted(c["destination"] for c in shown["copies"]) == ["far", "near"]
    listed = run(env, "list").stdout
    assert "far, near" in listed

    again = loads(run(env, "copy", backup["id"], "--to", "far", "--json").stdout)
    assert again == [
        {
            "destination": "far",
            "copied": [backup["id"]],
            "failed": {},
            "wal_files": 0,
            "error": None,
            "busy": False,
        }
    ]

    empty_bucket(s3, bucket)  # the primary is gone: only the copies are left
    expected = table_digest(pg, source_db)
    for name, url, key_id in (
        ("far", f"s3://{far}/elsewhere", "another-account"),
        ("near", f"s3://{near}/backups", "testing"),
    ):
        site = alone(
            env,
            {
                "STORAGE_URL": url,
                "S3_ENDPOINT_URL": s3.url,
                "S3_REGION": "us-east-1",
                "S3_ACCESS_KEY_ID": key_id,
                "S3_SECRET_ACCESS_KEY": "testing",
                "S3_PROVIDER": "generic",
            },
        )
        restored = target(name)
        run(site, "restore", backup["id"], "--target-db", restored)
        assert table_digest(pg, restored) == expected


def test_it_refuses_a_copy_without_destinations_or_without_a_choice(env):
    none = run(env, "copy", "--all-missing", check=False)
    assert none.returncode == 2
    assert "COPY_STORAGE_URLS" in none.stderr
    env = {**env, "COPY_STORAGE_URLS": "file:///nonexistent/copy"}
    neither = run(env, "copy", check=False)
    assert neither.returncode == 2
    assert "--all-missing" in neither.stderr
    unknown = run(env, "copy", "--all-missing", "--to", "nowhere", check=False)
    assert unknown.returncode == 2
    assert "no copy destination named 'nowhere'" in unknown.stderr


def push_a_segment(env: dict[str, str], pg: Cluster, tmp_path: Path) -> tuple[str, bytes]:
    """A real WAL segment of the test server, archived to the primary with wal-push."""
    ((segment,),) = pg.execute("SELECT pg_walfile_name(pg_switch_wal())")
    original = tmp_path / segment
    shutil.copy(pg.data / "pg_wal" / segment, original)
    run(env, "wal-push", str(original))
    return segment, original.read_bytes()


def test_a_destination_down_fails_no_backup_and_copy_catches_up_with_backups_and_wal(
    env, pg, source_db, outage, tmp_path
):
    env = {
        **env,
        "COPY_STORAGE_URLS": "far=s3://far/copies",
        **s3_copy(1, outage),  # type: ignore[arg-type]
        "COPY_1_S3_MAX_ATTEMPTS": "1",
    }
    jobs = Jobs(Settings.from_env(env), say=sayer("scheduler"), abort=threading.Event())
    spec = JobSpec(f"backup:{source_db}", JobName.BACKUP, source_db, "critical")

    down = jobs.backup(spec, "schedule")  # the destination does not answer
    assert "backup_id" in down
    listed = loads(run(env, "list", "--json").stdout)
    assert [(b["id"], b["status"], b["copies"]) for b in listed] == [
        (down["backup_id"], "completed", [])
    ]
    segment, wal = push_a_segment(env, pg, tmp_path)
    still_down = run(env, "copy", "--all-missing", check=False)
    assert still_down.returncode == 6, still_down.stderr
    assert "far: not reached" in still_down.stdout

    outage.start("far")
    caught_up = run(env, "copy", "--all-missing")
    assert "far: 1 backups copied and verified, 1 WAL files" in caught_up.stdout, caught_up.stdout
    up = jobs.backup(spec, "schedule")  # copied right after it is taken
    listed = loads(run(env, "list", "--json").stdout)
    assert {b["id"]: [c["destination"] for c in b["copies"]] for b in listed} == {
        down["backup_id"]: ["far"],
        up["backup_id"]: ["far"],
    }
    again = run(env, "copy", "--all-missing")
    assert "far: 0 backups copied and verified" in again.stdout  # nothing was missing

    site = alone(
        env,
        {
            "STORAGE_URL": "s3://far/copies",
            "S3_ENDPOINT_URL": outage.url,
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY_ID": "testing",
            "S3_SECRET_ACCESS_KEY": "testing",
            "S3_PROVIDER": "generic",
        },
    )
    fetched = tmp_path / "RECOVERYXLOG"
    run(site, "wal-fetch", segment, str(fetched))
    assert fetched.read_bytes() == wal


def test_the_minute_job_copies_new_wal_and_a_backup_the_copy_missed(
    env, pg, source_db, s3, tmp_path
):
    far = new_bucket(s3)
    env = {**env, "COPY_STORAGE_URLS": f"far=s3://{far}/c", **s3_copy(1, s3, "other")}
    backup = loads(run(env, "backup", "--json").stdout)  # by hand: no copy yet
    segment, _ = push_a_segment(env, pg, tmp_path)
    jobs = Jobs(Settings.from_env(env), say=sayer("scheduler"), abort=threading.Event())
    jobs.copy_pending()
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket=far).get("Contents", [])}
    assert f"c/wal/main/00000001/{segment}.pfe" in keys
    assert any(k.endswith(f"/{backup['id']}/manifest.json") for k in keys)
    assert "c/clusters/main.json" in keys and "c/permafrost.json" in keys


def synthetic_backup(bucket: Path, moment: datetime) -> str:
    """A backup folder as retention sees it (its listing: a manifest and a data object)."""
    backup = f"{moment:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    folder = bucket / "standard" / "app" / backup
    folder.mkdir(parents=True)
    (folder / "data.pfe").write_bytes(b"x" * 1000)
    (folder / "manifest.json").write_bytes(b"{}")
    return backup


def test_each_copy_keeps_by_its_own_retention_and_deletes_only_there(env, tmp_path):
    primary, copy = tmp_path / "primary", tmp_path / "copy"
    env = {
        **env,
        "STORAGE_URL": f"file://{primary}",
        "COPY_STORAGE_URLS": f"short=file://{copy}",
        "COPY_1_RETENTION_DAYS": "3",
    }
    run(env, "init")
    today = datetime.now(UTC).replace(hour=0, minute=30, second=0, microsecond=0)
    ids = [synthetic_backup(primary, today - timedelta(days=d)) for d in range(40)]
    shutil.copytree(primary / "standard", copy / "standard")

    dry = loads(run(env, "retention", "--json").stdout)
    kept_here = {b["id"] for b in dry["backups"] if b["keep"]}
    kept_there = {b["id"] for b in dry["copies"]["short"]["backups"] if b["keep"]}
    assert kept_there < kept_here  # 3 days there, 30 here: fewer kept, none kept only there

    applied = run(env, "retention", "--apply").stdout
    assert "copy short: retention applied" in applied, applied
    assert {p.name for p in (primary / "standard" / "app").iterdir()} == kept_here
    # min-keep's, older than the copy's lifecycle expiry, are held in its keep/ (as anywhere)
    there = [*(copy / "standard" / "app").iterdir(), *(copy / "keep" / "app").iterdir()]
    assert {p.name for p in there} == kept_there, applied
    assert set(ids) >= kept_here
    assert (copy / "permafrost.json").exists()  # the copy is a repository of its own


def test_lifecycle_apply_and_check_cover_each_copy_with_its_own_days(env, s3, bucket):
    far = new_bucket(s3)
    env = {
        **env,
        "COPY_STORAGE_URLS": f"far=s3://{far}/c",
        **s3_copy(1, s3, "other"),
        "COPY_1_RETENTION_DAYS": "5",
    }
    applied = run(env, "lifecycle", "apply")
    assert "copy far:" in applied.stdout
    checked = loads(run(env, "lifecycle", "check", "--json").stdout)
    assert "far" in checked["copies"]

    def expiries(name: str) -> set[int]:
        rules = s3.client().get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
        return {r["Expiration"]["Days"] for r in rules if "Days" in r.get("Expiration", {})}

    assert expiries(far) != expiries(bucket)  # the copy's standard tier: its own 5 days
    text = run(env, "lifecycle", "check").stdout
    assert "copy far:" in text
