"""Incremental base backups (PostgreSQL 17+): chains of a full and its incrementals.

One PostgreSQL 18 server for the module, with summarize_wal on (a refusal test turns it off and
back on); PostgreSQL 15 (the session's) for the refusal of servers before 17.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.alerts.evaluator import Evaluator
from monitor.app import create_app
from permafrost.backup.lookup import chain_from
from permafrost.catalog.jobs import JobName
from permafrost.catalog.records import BackupRecord
from permafrost.catalog.store import connect
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.errors import BackupNotFound
from permafrost.logs import sayer
from permafrost.repo.manifest import Kind, Manifest
from scheduler.jobs import Jobs, JobSpec
from tests.conftest import bucket_env, run, unique
from tests.helpers import flip_byte, get_object, loads, objects, put_object
from tests.majors import SETTINGS, Servers, client_bin, server_bin
from tests.services import Cluster, S3Server
from tests.test_alerts import SMTPServer, alert, make_settings, prepare
from tests.test_metrics import scrape, value
from tests.test_overview import HTML


@pytest.fixture(scope="module")
def pg18() -> Iterator[Cluster]:
    cluster = Cluster("pg18inc", {**SETTINGS, "summarize_wal": "on"}, bin_dir=server_bin(18))
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def source18(pg18: Cluster) -> Iterator[str]:
    name = pg18.create_database(unique("inc"))
    pg18.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);"
        "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g",
        name,
    )
    yield name
    pg18.drop_database(name)


@pytest.fixture
def env18(
    s3: S3Server,
    bucket: str,
    pg: Cluster,
    pg18: Cluster,
    source18: str,
    metadata_db: str,
    tmp_path: Path,
) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "METADATA_DATABASE_URL": pg.url(metadata_db),
        "DATABASE_URL": pg18.url(source18),
        "PG_BIN_DIRS": str(client_bin(18)),
        "CLUSTER_NAME": "inc",
        **bucket_env(s3, bucket),
    }


BIG = (
    "CREATE TABLE big (id int PRIMARY KEY, v text);"
    "INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, {n}) g;"
    "CHECKPOINT"
)


def base(env: dict[str, str], kind: str = "base") -> dict:
    return loads(run(env, "backup", "--kind", kind, "--json").stdout)


def restore_chain(env: dict[str, str], ids: list[str], into: Path) -> Path:
    """What pg_combinebackup makes of the chain's tars (decrypted with `permafrost decrypt`),
    checked file by file against its backup_manifest by pg_verifybackup."""
    dirs = []
    for backup_id in ids:
        tar = into / f"{backup_id}.tar"
        run(env, "decrypt", "--backup", backup_id, "-o", str(tar))
        folder = into / backup_id
        folder.mkdir()
        subprocess.run(["tar", "-xf", str(tar), "-C", str(folder)], check=True)
        dirs.append(str(folder))
    bin_dir = client_bin(18)
    out = into / "combined"
    subprocess.run(
        [str(bin_dir / "pg_combinebackup"), *dirs, "-o", str(out)], check=True, capture_output=True
    )
    verified = subprocess.run(
        [str(bin_dir / "pg_verifybackup"), "--no-parse-wal", str(out)],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stderr
    return out


def test_a_chain_of_incrementals_carries_only_the_changes_and_combines_whole(
    env18: dict[str, str],
    pg18: Cluster,
    source18: str,
    tmp_path: Path,
    s3: S3Server,
    bucket: str,
) -> None:
    pg18.execute(BIG.format(n=300_000), source18)  # about 30 MB of rows in 40 MB of cluster
    full = base(env18)
    assert (full["incremental"], full["parent_id"], full["chain_full_id"]) == (
        False,
        None,
        full["id"],
    )
    stored = objects(s3, bucket, f"backups/base/inc/{full['id']}/")
    assert f"backups/base/inc/{full['id']}/backup_manifest.pfe" in stored

    pg18.execute("UPDATE big SET v = upper(v) WHERE id <= 3000", source18)  # 1% of the rows
    first = base(env18, "incremental")
    assert (first["incremental"], first["parent_id"]) == (True, full["id"])
    assert first["chain_full_id"] == full["id"]
    assert first["size_bytes"] < full["size_bytes"] * 0.1, (first["size_bytes"], full)
    changed = first["physical"]["changed_bytes"]
    assert changed < full["physical"]["changed_bytes"] * 0.1

    pg18.execute(
        "INSERT INTO t SELECT g, 'new' FROM generate_series(20001, 20100) g;"
        "DROP TABLE big; CREATE TABLE fresh AS SELECT 1 AS one",
        source18,
    )
    pg18.create_database(f"{source18}_new")
    second = base(env18, "incremental")
    assert (second["parent_id"], second["chain_full_id"]) == (first["id"], full["id"])

    combined = restore_chain(env18, [full["id"], first["id"], second["id"]], tmp_path)
    assert (combined / "backup_manifest").is_file()
    listed = {b["id"]: b for b in loads(run(env18, "list", "--json").stdout)}
    assert listed[second["id"]]["parent_id"] == first["id"]
    pg18.drop_database(f"{source18}_new")
    shows_the_chain(env18, [full, first, second])


def shows_the_chain(env: dict[str, str], chain: list[dict]) -> None:
    """`status`, /metrics and the dashboard show the chain: its full, incrementals, bytes."""
    full, newest = chain[0], chain[-1]
    stored = sum(m["size_bytes"] for m in chain)
    changed = sum(m["physical"]["changed_bytes"] for m in chain)
    [shown] = loads(run(env, "status", "--json").stdout)["chains"]
    assert (shown["cluster"], shown["full_id"], shown["newest_id"]) == (
        "inc",
        full["id"],
        newest["id"],
    )
    assert (shown["members"], shown["incrementals"]) == (len(chain), len(chain) - 1)
    assert (shown["stored_bytes"], shown["changed_bytes"]) == (stored, changed)
    assert re.search(
        rf"inc +{full['id']} +{len(chain) - 1} +{newest['id']}", run(env, "status").stdout
    )

    settings = Settings.from_env(env)
    ctx = Context(settings)
    samples = scrape(ctx.catalog(), settings)
    ctx.close()
    assert value(samples, "permafrost_base_chain_members", cluster="inc") == len(chain)
    assert value(samples, "permafrost_base_chain_bytes", cluster="inc") == stored
    assert value(samples, "permafrost_base_chain_changed_bytes", cluster="inc") == changed

    client = create_app(settings, evaluate=False).test_client()
    page = client.get("/", headers=HTML).get_data(as_text=True)
    row = re.search(r'<tr data-cluster="inc">(.*?)</tr>', page)
    assert row is not None and full["id"] in row[1] and newest["id"] in row[1], page
    assert f"<td>{len(chain) - 1}</td>" in row[1]
    page = client.get(f"/backup/{newest['id']}", headers=HTML).get_data(as_text=True)
    assert f'incremental of <a href="/backup/{chain[-2]["id"]}">' in page
    table = page.split('<table class="chain">')[1].split("</table>")[0]
    assert [m["id"] for m in chain] == re.findall(r">(\d{8}T\d{6}Z-\w{6})</a>", table)


def summarize_wal(cluster: Cluster, value: str) -> None:
    cluster.execute(f"ALTER SYSTEM SET summarize_wal = {value}")
    cluster.execute("SELECT pg_reload_conf()")
    for _ in range(100):
        if cluster.execute("SHOW summarize_wal") == [(value,)]:
            return
        time.sleep(0.05)
    raise AssertionError(f"summarize_wal did not become {value}")


def refused_with(env: dict[str, str], code: int) -> str:
    """`backup --kind incremental` refused: its exit code, and its one line on stderr."""
    result = run(env, "backup", "--kind", "incremental", check=False)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def manifests(s3: S3Server, bucket: str) -> list[str]:
    return [k for k in objects(s3, bucket, "backups/base/") if k.endswith("manifest.json")]


def test_it_refuses_an_incremental_before_postgresql_17(
    servers: Servers, s3: S3Server, bucket: str, pg: Cluster, metadata_db: str, tmp_path: Path
) -> None:
    old = servers(15)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "METADATA_DATABASE_URL": pg.url(metadata_db),
        "DATABASE_URL": old.url("postgres"),
        "PG_BIN_DIRS": str(client_bin(15)),
        **bucket_env(s3, bucket),
    }
    line = refused_with(env, 7)
    assert "PostgreSQL 15" in line and "17 or newer" in line
    assert objects(s3, bucket, "backups/base/") == []

    settings = make_settings(env, None)  # the scheduled job: nothing to do, and it says why
    jobs = Jobs(settings, say=sayer("scheduler"), abort=threading.Event())
    spec = JobSpec("incremental_backup:main", JobName.INCREMENTAL_BACKUP, "main", "critical")
    assert "PostgreSQL 15" in jobs.backup(spec, "schedule")["skipped"]
    catalog = connect(settings.metadata_url)
    [skipped] = catalog.job_runs("incremental_backup")
    assert skipped["status"] == "succeeded" and "17 or newer" in skipped["details"]["skipped"]
    assert catalog.alerts(active=True) == [] and objects(s3, bucket, "backups/base/") == []
    catalog.close()


def test_it_refuses_without_a_full_or_with_summarize_wal_off_saying_what_to_do(
    env18: dict[str, str], pg18: Cluster, s3: S3Server, bucket: str
) -> None:
    assert "no full base backup of cluster inc" in refused_with(env18, 3)
    summarize_wal(pg18, "off")
    try:
        line = refused_with(env18, 7)
        assert objects(s3, bucket, "backups/base/") == []
        full = base(env18)  # taken while the server summarizes nothing
        pg18.execute("CHECKPOINT")
    finally:
        summarize_wal(pg18, "on")
    assert "ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf()" in line
    line = refused_with(env18, 7)  # on now, but its summaries begin after the full
    assert f"do not reach back to the parent {full['id']}" in line
    assert len(manifests(s3, bucket)) == 1


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.stop()


def test_a_damaged_or_missing_parent_is_refused_and_the_scheduler_takes_a_full_and_alerts(
    env18: dict[str, str], s3: S3Server, bucket: str, smtp: SMTPServer
) -> None:
    settings = make_settings(env18, smtp.port)
    catalog = prepare(settings)
    full = base(env18)
    key = f"backups/base/inc/{full['id']}/backup_manifest.pfe"
    put_object(s3, bucket, key, flip_byte(get_object(s3, bucket, key), 200))
    assert "backup_manifest of base backup" in refused_with(env18, 5)
    assert len(manifests(s3, bucket)) == 1  # nothing committed

    jobs = Jobs(settings, say=sayer("scheduler"), abort=threading.Event())
    spec = JobSpec("incremental_backup:inc", JobName.INCREMENTAL_BACKUP, "inc", "critical")
    fell_back = jobs.backup(spec, "schedule")
    assert "damaged" in fell_back["refused"] and "backup_id" in fell_back
    listed = {b["id"]: b for b in loads(run(env18, "list", "--json").stdout)}
    assert listed[fell_back["backup_id"]]["incremental"] is False  # a new chain's full
    raised = alert(catalog, "job_failed:incremental_backup:inc")
    assert (raised["status"], raised["severity"]) == ("active", "warning")
    Evaluator(settings).run_once()
    [mail] = smtp.mailbox.about("job_failed:incremental_backup:inc")
    assert "incremental base backup of inc refused" in str(mail["Subject"])
    assert "full base backup" in str(mail["Subject"])

    taken = jobs.backup(spec, "schedule")  # against the new full: the alert resolves
    assert (
        listed[fell_back["backup_id"]]["id"]
        == (loads(run(env18, "list", "--json").stdout)[0]["parent_id"])
    )
    assert "backup_id" in taken
    assert alert(catalog, "job_failed:incremental_backup:inc")["status"] == "resolved"

    for name in ("data.pfe", "manifest.json"):  # the parent deleted behind the catalog's back
        s3.client().delete_object(
            Bucket=bucket, Key=f"backups/base/inc/{taken['backup_id']}/{name}"
        )
    assert "missing from the bucket" in refused_with(env18, 3)
    again = jobs.backup(spec, "schedule")
    assert "missing from the bucket" in again["refused"] and "backup_id" in again
    assert "missing" in alert(catalog, "job_failed:incremental_backup:inc")["summary"]


def record(backup_id: str, parent: str | None, full: str) -> BackupRecord:
    now = datetime.now(UTC)
    return BackupRecord(
        backup_id, "inc", "base", "base", "completed", now, now, 1, 1, "", [], None, None,
        None, None, None, None, now, parent_id=parent, chain_full_id=full,
    )  # fmt: skip


def test_a_chain_is_walked_from_a_member_to_its_full_and_a_gap_is_named() -> None:
    full, one, two = record("F", None, "F"), record("I1", "F", "F"), record("I2", "I1", "F")
    assert [r.id for r in chain_from([two, one, full], two)] == ["F", "I1", "I2"]
    assert chain_from([full], full) == [full]
    with pytest.raises(BackupNotFound, match="I2 is an incremental of I1, which is not in"):
        chain_from([two, full], two)


def test_a_manifest_from_before_chains_reads_as_a_full_of_its_own_chain() -> None:
    old = Manifest(
        "20260101T000000Z-abcdef", "main", Kind.BASE, "base", "", "", "18", "18", 500, 100,
        120, "", "", "", {}, {}, {"data": "k"}, physical={"timeline": 1},
    )  # fmt: skip
    assert (old.incremental, old.parent_id, old.chain_full_id) == (False, None, old.id)
    assert old.changed_bytes == 500  # the whole tar
    assert replace(old, kind=Kind.LOGICAL, physical={}).chain_full_id is None
