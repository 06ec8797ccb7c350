"""WAL and base backups per source of a SOURCES_FILE fleet: two servers, each its own cluster,
streamed by two `permafrost worker` processes (one wal-receive per cluster, on whichever worker
holds that cluster's lock); kill -9 of the holder moves the stream with no segment lost; each
source's base backup runs from the queue; pitr of one source's cluster to a time gives its rows."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.alerts.evaluator import Evaluator
from monitor.alerts.rules import evaluate
from monitor.app import create_app
from permafrost.config.fleet import forget_cached
from permafrost.config.settings import Settings
from permafrost.context import Context
from tests.conftest import PERMAFROST, bucket_env, run
from tests.helpers import loads, objects
from tests.services import PASSWORD, Cluster, S3Server
from tests.test_alerts import SMTPServer, make_settings, prepare
from tests.test_backup_workers import _stop, _stream_holders, _tasks, _wait, _worker

CLUSTERS = ("east", "west")


@pytest.fixture
def sources_pg() -> Iterator[dict[str, Cluster]]:
    """Two servers whose archive_command we cannot set: their WAL is streamed."""
    made = {}
    try:
        for name in CLUSTERS:
            made[name] = Cluster(name, {"wal_level": "replica", "archive_mode": "off"}).start()
            app = made[name].create_database("app")
            made[name].execute(f"CREATE TABLE t (v text); INSERT INTO t VALUES ('{name} 0')", app)
        yield made
    finally:
        for cluster in made.values():
            cluster.destroy()
        forget_cached()


def _sources_file(tmp_path: Path, sources_pg: dict[str, Cluster]) -> Path:
    """east's password from a password_file, west's in its URL."""
    (tmp_path / "east-password").write_text(PASSWORD + "\n")
    east = sources_pg["east"].url("postgres").replace(f":{PASSWORD}@", "@")
    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n"
        f"  - name: east\n    url: {east}\n    password_file: east-password\n"
        "    databases: [app]\n    cluster: east\n"
        f"  - name: west\n    url: {sources_pg['west'].url('postgres')}\n"
        "    databases: [app]\n    cluster: west\n"
    )
    return path


@pytest.fixture
def fleet_env(
    sources_pg: dict[str, Cluster],
    pg: Cluster,
    s3: S3Server,
    bucket: str,
    metadata_db: str,
    tmp_path: Path,
) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SOURCES_FILE": str(_sources_file(tmp_path, sources_pg)),
        "METADATA_DATABASE_URL": pg.url(metadata_db),
        **bucket_env(s3, bucket),
        "BACKUP_WORKERS": "queue",
        "WAL_ARCHIVING": "receive",
        "WAL_SPOOL_DIR": str(tmp_path / "spool"),  # one volume that the next holder sees
        "WAL_MAX_SEGMENT_AGE": "3",
        "LOG_LEVEL": "info",
    }


def _archived_past(env: dict[str, str], cluster: str, segment: str) -> bool:
    status = loads(run(env, "wal", "status", "--cluster", cluster, "--json").stdout)
    return bool(status["last_segment"]) and status["last_segment"] >= segment


def test_each_sources_wal_is_streamed_and_moves_when_its_worker_dies(
    fleet_env: dict[str, str],
    sources_pg: dict[str, Cluster],
    pg: Cluster,
    s3: S3Server,
    bucket: str,
    metadata_db: str,
    tmp_path: Path,
) -> None:
    env = fleet_env
    checked = run(env, "scheduler", "--check").stdout.splitlines()
    for name in CLUSTERS:
        assert f"wal-receive:{name}: streamed by the worker holding its WAL stream lock" in checked
        assert any(line.startswith(f"pitr_drill:{name}: ") for line in checked), checked
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]
    workers = [_worker(env, log) for log in logs]
    pids = [w.pid for w in workers]
    try:
        for name, server in sources_pg.items():
            _wait(
                f"no worker streamed {name}",
                lambda s=server: s.execute("SELECT 1 FROM pg_stat_replication"),
                60,
                logs,
            )
        # A base backup of each source's cluster, from the queue, on that source's server.
        queued = loads(run(env, "backup", "--kind", "base", "--all", "--queue", "--json").stdout)
        assert sorted((q["database"], q["source"]) for q in queued) == [
            ("east", "east"),
            ("west", "west"),
        ]
        _wait(
            "the base backups did not run",
            lambda: all(t[1] == "succeeded" for t in _tasks(pg, metadata_db)),
            180,
            logs,
        )
        east, west = sources_pg["east"], sources_pg["west"]
        east.execute("INSERT INTO t VALUES ('east 1')", "app")
        ((moment,),) = east.execute("SELECT clock_timestamp()")
        west.execute("INSERT INTO t VALUES ('west 1')", "app")
        time.sleep(1)
        east.execute("INSERT INTO t VALUES ('east 2, after the moment')", "app")

        _wait(
            "no worker says it holds east's stream",
            lambda: _stream_holders(pg, metadata_db, pids, "east"),
            30,
            logs,
        )
        [holder] = _stream_holders(pg, metadata_db, pids, "east")
        os.kill(holder, signal.SIGKILL)
        next(w for w in workers if w.pid == holder).wait(timeout=10)
        other = next(pid for pid in pids if pid != holder)
        for name in CLUSTERS:  # the survivor streams both now, whoever held west
            _wait(
                f"the other worker did not take {name}'s stream",
                lambda n=name: _stream_holders(pg, metadata_db, [other], n),
                60,
                logs,
            )
        ends = {}
        for name, server in sources_pg.items():
            server.execute(f"INSERT INTO t VALUES ('{name} after the kill')", "app")
            ends[name] = server.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        for name in CLUSTERS:
            _wait(
                f"{ends[name]} of {name} was not archived",
                lambda n=name: _archived_past(env, n, ends[n]),
                60,
                logs,
            )
        # --source reaches that source's own server: its position, and the switch check there.
        position = loads(run(env, "wal", "status", "--source", "west", "--json").stdout)
        assert position["server_segment"] >= ends["west"], position
        switched = run(env, "wal", "switch", "--source", "east").stdout
        assert "switched WAL" in switched or "no switch needed" in switched
        shown = run(env, "status").stdout
        assert f"east on {socket.gethostname()}:{other}" in shown, shown
    finally:
        _stop(workers)

    # Each cluster's segments under its own wal/ prefix, and no gap in either archive.
    for name in CLUSTERS:
        keys = objects(s3, bucket, f"backups/wal/{name}/")
        assert [k for k in keys if k.endswith(f"{ends[name]}.pfe")], keys[-3:]
    for how in (("--cluster", "east"), ("--source", "west")):
        verify = run(env, "wal", "verify", *how, check=False)
        assert verify.returncode == 0 and "no gaps" in verify.stdout, verify.stdout + verify.stderr
    # The dashboard: each source's database has its recovery point from its cluster's WAL.
    page = (
        create_app(Settings.from_env(env), evaluate=False)
        .test_client()
        .get("/?source=east", headers={"Accept": "text/html"})
        .get_data(as_text=True)
    )
    assert "east.app" in page and "(WAL archive)" in page, page
    taken = "holding the WAL stream of cluster east"
    assert taken in logs[pids.index(other)].read_text()

    # pitr of east (by its source's name) to the moment: the row before it, none after.
    target = f"east_{uuid.uuid4().hex[:6]}"
    run(
        env,
        "pitr",
        "--source",
        "east",
        "--target-time",
        moment.isoformat(),
        "--target-db",
        target,
        "--target-url",
        pg.url("postgres"),
        "--database",
        "app",
    )
    try:
        assert pg.execute("SELECT v FROM t ORDER BY v", target) == [("east 0",), ("east 1",)]
    finally:
        pg.drop_database(target)
    estimate = loads(run(env, "recovery-time", "--json").stdout)
    assert sorted(p["cluster"] for p in estimate["pitrs"]) == ["east", "west"]
    only = loads(run(env, "recovery-time", "--source", "west", "--json").stdout)
    assert [p["cluster"] for p in only["pitrs"]] == ["west"]

    # Tonight's forecast of one source: its own backups only.
    night = loads(run(env, "plan", "window", "--source", "west", "--json").stdout)
    assert night["unmeasured"] == [{"source": "west", "database": "west.app", "kind": "logical"}]
    assert {b["source"] for b in night["backups"]} <= {"west"}
    unknown = run(env, "plan", "window", "--source", "north", check=False)
    assert unknown.returncode == 2 and "the sources are: east, west" in unknown.stderr

    # A base backup of one source's cluster taken here, on that source's server (last: no
    # stream archives its WAL now).
    done = loads(run(env, "backup", "--kind", "base", "--source", "west", "--json").stdout)
    assert (done["database"], done["status"]) == ("west", "completed")


def test_the_leading_scheduler_streams_each_sources_cluster_inline(
    fleet_env: dict[str, str],
    sources_pg: dict[str, Cluster],
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    env = {**fleet_env, "BACKUP_WORKERS": "inline", "LIFECYCLE_APPLY": "false"}
    for schedule in ("BACKUP", "COMPLIANCE", "BASE_BACKUP", "VERIFY", "CLEANUP", "LIFECYCLE"):
        env[f"{schedule}_SCHEDULE"] = "off"
    log = tmp_path / "scheduler.log"
    with log.open("wb") as out:
        scheduler = subprocess.Popen(
            [PERMAFROST, "scheduler"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        for name, server in sources_pg.items():
            _wait(
                f"the scheduler did not stream {name}",
                lambda s=server: s.execute("SELECT 1 FROM pg_stat_replication"),
                60,
                [log],
            )
        for name, server in sources_pg.items():
            server.execute(f"INSERT INTO t VALUES ('{name} inline')", "app")
            last = server.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
            _wait(
                f"{last} of {name} was not archived",
                lambda n=name, seg=last: any(
                    k.endswith(f"{seg}.pfe") for k in objects(s3, bucket, f"backups/wal/{n}/")
                ),
                60,
                [log],
            )
        _wait(  # by the leader's next heartbeat (every 30 s)
            "status did not name the leader's streams",
            lambda: "WAL stream: east, west on the leader " in run(env, "status").stdout,
            45,
            [log],
        )
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(timeout=90)
    assert scheduler.returncode == 0, log.read_text()
    text = log.read_text()
    for name, server in sources_pg.items():
        assert f"starting wal-receive of cluster {name}" in text
        _wait(  # the server's walsender ends once it notices its client gone
            f"{name}'s stream outlived the scheduler",
            lambda s=server: s.execute("SELECT count(*) FROM pg_stat_replication") == [(0,)],
            15,
            [log],
        )


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.stop()


def test_each_sources_wal_and_drills_are_watched_and_a_lag_is_emailed(
    pg: Cluster, s3: S3Server, bucket: str, metadata_db: str, tmp_path: Path, smtp: SMTPServer
) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n"
        "  - name: east\n    url: postgresql://u@127.0.0.1:1/postgres\n    databases: [app]\n"
        "    cluster: east\n"
        "  - name: west\n    url: postgresql://u@127.0.0.1:1/postgres\n    databases: [app]\n"
        "    cluster: west\n    wal: off\n"  # not archived: its old row alerts nobody
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SOURCES_FILE": str(path),
        "METADATA_DATABASE_URL": pg.url(metadata_db),
        **bucket_env(s3, bucket),
        "WAL_ARCHIVING": "receive",
    }
    forget_cached()
    settings = make_settings(env, smtp.port, WAL_MAX_LAG="15m")
    catalog = prepare(settings)
    for cluster in CLUSTERS:
        catalog.conn.execute(
            "INSERT INTO wal_archive (cluster, last_segment, last_archived_at)"
            " VALUES (%s, '000000010000000000000005', now() - interval '20 minutes')",
            (cluster,),
        )
        catalog.conn.execute(  # base backups for 30 days, never drilled: overdue (weekly)
            "INSERT INTO backups (id, database, kind, tier, status, started_at, finished_at)"
            " VALUES (%s, %s, 'base', 'base', 'completed', now() - interval '30 days', now())",
            (f"20260101T000000Z-{cluster}0", cluster),
        )
    Evaluator(settings).run_once()
    [mail] = smtp.mailbox.about("wal_lag:east")
    assert re.search(r"the WAL archive of cluster east is \d+ minutes behind", str(mail["Subject"]))
    assert not smtp.mailbox.about("wal_lag:west")
    # east's drills are scheduled (and overdue); west has no WAL, so no drills to miss.
    found = evaluate(Context(settings), datetime.now(UTC)).alert_keys()
    assert "pitr_drill:east" in found and "pitr_drill:west" not in found, found
    forget_cached()
