"""`permafrost plan` and `recovery-time` tell the truth: every database, the trusted backup,
durations with units, PITR when the WAL archive reaches further, no compliance backup said so."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.app import create_app
from permafrost.config.settings import Settings
from permafrost.text import plain_duration
from tests.conftest import make_sample_database, run
from tests.helpers import flip_byte, get_object, loads, put_object
from tests.services import Cluster, S3Server
from tests.test_pitr import Archiving

TOKEN = "t0ken-for-plans-tests-0123456789"


@pytest.fixture
def other_db(pg: Cluster) -> Iterator[str]:
    database = make_sample_database(pg)
    yield database
    pg.drop_database(database)


def test_durations_carry_units() -> None:
    assert [plain_duration(s) for s in (0.4, 45, 125, 3900, 7200, 90000, 86400 * 3)] == [
        "0 s",
        "45 s",
        "2 min 5 s",
        "1 h 5 min",
        "2 h",
        "1 day 1 h",
        "3 days",
    ]


def configured(env: dict[str, str], *databases: str) -> dict[str, str]:
    """env with DB_NAME naming these databases, over a server URL that names none."""
    server = env["DATABASE_URL"].rsplit("/", 1)[0] + "/"
    return {**env, "DATABASE_URL": server, "DB_NAME": ",".join(databases)}


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(start))


def test_disaster_and_recovery_time_cover_every_database(env, source_db, other_db) -> None:
    first = loads(run(env, "backup", "--json").stdout)
    second = loads(run(configured(env, other_db), "backup", "--json").stdout)

    text = run(env, "plan", "disaster").stdout
    steps = [line.strip() for line in text.split("Steps:")[1].splitlines() if line.strip()]
    globals_step = next(n for n, s in enumerate(steps) if "restore --globals" in s)
    restores = [n for n, s in enumerate(steps) if "--target-db" in s]
    assert any(f"{first['id']} --target-db {source_db}" in steps[n] for n in restores)
    assert any(f"{second['id']} --target-db {other_db}" in steps[n] for n in restores)
    assert len(restores) == 2 and globals_step < min(restores)
    assert "Estimated recovery time of all 2 databases" in text

    times = run(env, "recovery-time").stdout
    assert source_db in times and other_db in times and "all 2 databases: about" in times
    estimates = loads(run(env, "recovery-time", "--json").stdout)["estimates"]
    assert {e["database"] for e in estimates} == {source_db, other_db}


def test_the_recovery_point_is_the_newest_verified_backup_with_units(
    env, s3: S3Server, bucket: str, source_db
) -> None:
    good = loads(run(env, "backup", "--json").stdout)
    run(env, "verify", good["id"])
    bad = loads(run(env, "backup", "--json").stdout)
    key = loads(run(env, "show", bad["id"], "--json").stdout)["manifest"]["objects"]["data"]
    put_object(s3, bucket, key, flip_byte(get_object(s3, bucket, key), 200))
    assert run(env, "verify", bad["id"], check=False).returncode == 5

    text = run(env, "plan", "corruption").stdout
    point = _line(text, "Recovery point achieved now:")
    assert good["id"] in point and bad["id"] not in point
    assert re.match(r"Recovery point achieved now: \d+ (s|min)", point), point
    assert "without WAL archiving" in point
    assert re.search(r"Estimated recovery time: \d+ s for", text), text
    assert f"{bad['id']}" in text and "VERIFICATION FAILED" in text  # listed, last, marked
    assert f"permafrost restore {good['id']} --target-db" in text
    assert re.search(r"about \d+ s to restore", run(env, "recovery-time").stdout)


def test_plan_compliance_says_there_is_no_compliance_backup(env, source_db) -> None:
    standard = loads(run(env, "backup", "--json").stdout)
    text = run(env, "plan", "compliance").stdout
    assert f"No compliance backup of {source_db} exists" in text
    assert "--tier compliance" in text and standard["id"] in text
    compliance = loads(run(env, "backup", "--tier", "compliance", "--json").stdout)
    text = run(env, "plan", "compliance").stdout
    assert "No compliance backup" not in text
    assert f"permafrost restore {compliance['id']} --target-db {source_db}_audit" in text


@pytest.fixture
def archiving(s3: S3Server, pg: Cluster, metadata_db: str) -> Iterator[Archiving]:
    source = Archiving(s3, pg.url(metadata_db))
    yield source
    source.cluster.destroy()


def test_disaster_with_a_wal_archive_recovers_with_pitr_latest(
    archiving: Archiving, tmp_path: Path
) -> None:
    src = archiving.cluster
    db = src.create_database("shop")
    src.execute(
        "CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) VALUES ('a')", db
    )
    env = archiving.env(tmp_path, DATABASE_URL=src.url(db))
    run(env, "backup")
    base = loads(run(env, "backup", "--kind", "base", "--json").stdout)
    src.execute("INSERT INTO t (v) VALUES ('after the backups')", db)
    archiving.switch_and_wait()

    text = run(env, "plan", "disaster").stdout
    assert "permafrost pitr --latest" in text and base["id"] in text
    point = _line(text, "Recovery point achieved now:")
    assert "WAL archive" in point and "changes since it are lost" not in point
    assert "restore --globals" in text  # the logical way stays, roles first


def test_a_restore_test_with_no_body_follows_db_name(env, source_db, other_db) -> None:
    mine = loads(run(env, "backup", "--json").stdout)
    run(configured(env, other_db), "backup")  # newer, of a database DB_NAME does not name
    settings = Settings.from_env({**env, "DB_NAME": source_db, "MONITOR_API_TOKEN": TOKEN})
    app = create_app(settings, evaluate=False)
    app.testing = True
    with app.test_client() as client:
        queued = client.post("/restore-test", headers={"Authorization": f"Bearer {TOKEN}"})
    assert queued.status_code == 202 and queued.json["backup_id"] == mine["id"]
