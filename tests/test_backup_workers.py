"""Backup workers (BACKUP_WORKERS=queue): `permafrost worker` processes against one metadata store
claim queued backups, each exactly once, under the limits held across all of them; a worker
killed with -9 loses its task to another; the WAL stream moves to another worker with no gap."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from monitor.alerts.evaluator import Evaluator
from tests.conftest import PERMAFROST, run, unique
from tests.helpers import loads
from tests.services import Cluster
from tests.test_alerts import SMTPServer, make_settings, prepare

SOURCES = {"alpha": 3, "beta": 3}  # source label → how many databases


@pytest.fixture
def fleet(pg: Cluster) -> Iterator[dict[str, list[str]]]:
    """Six databases on two source labels; the first is big enough to be caught mid-backup."""
    made: dict[str, list[str]] = {}
    for label, count in SOURCES.items():
        made[label] = []
        for n in range(count):
            rows = 1_500_000 if (label, n) == ("alpha", 0) else 150_000
            db = pg.create_database(unique(f"{label}{n}"))
            pg.execute(
                "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v"
                f" FROM generate_series(1, {rows}) g",
                db,
            )
            made[label].append(db)
    yield made
    for dbs in made.values():
        for db in dbs:
            pg.drop_database(db)


def _env(env: dict[str, str], pg: Cluster, **extra: str) -> dict[str, str]:
    return {
        **env,
        "DATABASE_URL": pg.url(""),
        "BACKUP_WORKERS": "queue",
        "LOG_LEVEL": "info",
        **extra,
    }


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [PERMAFROST, "worker", "--poll", "1"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _tasks(pg: Cluster, meta: str) -> list[tuple]:
    return pg.execute(
        "SELECT id, status, worker, attempts, payload->>'database', source"
        " FROM permafrost.tasks ORDER BY id",
        meta,
    )


def _wait(what: str, check, timeout: float, logs: list[Path]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"{what} within {timeout} s\n{tails}")


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(timeout=60)
        except subprocess.TimeoutExpired:
            w.kill()


def test_it_runs_every_queued_backup_once_and_a_killed_workers_task_elsewhere(
    env: dict[str, str], pg: Cluster, metadata_db: str, fleet: dict[str, list[str]], tmp_path: Path
) -> None:
    for label, dbs in fleet.items():  # queued as the scheduler of each source would queue them
        queuer = _env(env, pg, CLUSTER_NAME=label, DB_NAME=",".join(dbs))
        for tier in ("standard", "compliance"):
            out = run(queuer, "backup", "--all", "--queue", "--tier", tier, "--json").stdout
            queued = loads(out)
            assert [q["database"] for q in queued] == dbs
            assert {q["source"] for q in queued} == {label}
    assert len(_tasks(pg, metadata_db)) == 12
    again = loads(run(queuer, "backup", "--all", "--queue", "--json").stdout)
    assert all(q["already_queued"] for q in again)  # still waiting: not queued twice

    big = fleet["alpha"][0]
    logs = [tmp_path / f"worker{n}.log" for n in range(3)]
    workers = [_worker(_env(env, pg), log) for log in logs]
    try:
        # The big database's standard backup is the first task: catch its worker mid-backup.
        first = _tasks(pg, metadata_db)[0]
        assert first[4] == big

        def dumping() -> bool:
            runs = pg.execute(
                "SELECT count(*) FROM permafrost.job_runs"
                f" WHERE database = '{big}' AND status = 'running'",
                metadata_db,
            )
            return runs == [(1,)]

        _wait("the big backup did not start", dumping, 120, logs)
        time.sleep(1.0)
        ((status, holder),) = pg.execute(
            f"SELECT status, worker FROM permafrost.tasks WHERE id = {first[0]}", metadata_db
        )
        assert status == "running", "the big backup finished before it could be killed"
        victim = int(holder.rsplit(":", 1)[1])
        os.kill(victim, signal.SIGKILL)
        killed = next(w for w in workers if w.pid == victim)
        killed.wait(timeout=10)

        def all_done() -> bool:
            return all(t[1] == "succeeded" for t in _tasks(pg, metadata_db))

        _wait("the queue was not drained", all_done, 400, logs)
    finally:
        _stop(workers)

    tasks = _tasks(pg, metadata_db)
    assert [t[0] for t in tasks if t[3] != 1] == [first[0]]  # only the killed one ran twice
    retried = next(t for t in tasks if t[0] == first[0])
    assert retried[2] != holder and int(retried[2].rsplit(":", 1)[1]) != victim

    # The catalog: exactly one completed backup of each database in each tier, and the killed
    # attempt listed as interrupted, not completed.
    listed = loads(run(_env(env, pg), "list", "--json").stdout)
    completed: dict[tuple[str, str], int] = defaultdict(int)
    for b in listed:
        if b["status"] == "completed":
            completed[(b["database"], b["tier"])] += 1
    every = [db for dbs in fleet.values() for db in dbs]
    assert completed == {(db, tier): 1 for db in every for tier in ("standard", "compliance")}
    others = [(b["database"], b["status"]) for b in listed if b["status"] != "completed"]
    assert others == [(big, "interrupted")], others

    # The per-source limit (MAX_CONCURRENT_PER_SOURCE=1): no two backups of one source ran at
    # once, by the job runs' own times; and the two sources did run side by side.
    runs = pg.execute(
        "SELECT database, started_at, finished_at FROM permafrost.job_runs"
        " WHERE status = 'succeeded' ORDER BY started_at",
        metadata_db,
    )
    assert len(runs) == 12
    label_of = {db: label for label, dbs in fleet.items() for db in dbs}
    spans: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for database, started, finished in runs:
        spans[label_of[database]].append((started, finished))
    for label, intervals in spans.items():
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert end <= start, f"two backups of {label} overlapped: {intervals}"
    assert any(
        a_start < b_end and b_start < a_end
        for a_start, a_end in spans["alpha"]
        for b_start, b_end in spans["beta"]
    ), "the two sources never ran side by side"


@pytest.fixture
def managed(pg: Cluster) -> Iterator[Cluster]:
    cluster = Cluster("streamed", {"wal_level": "replica", "archive_mode": "off"}).start()
    yield cluster
    cluster.destroy()


def _stream_holders(pg: Cluster, meta: str, alive: list[int], cluster: str = "main") -> list[int]:
    """The pids of the live workers whose heartbeat says they hold the cluster's WAL stream."""
    rows = pg.execute(
        "SELECT pid FROM permafrost.service_heartbeats"
        f" WHERE service = 'worker' AND details->'wal_streams' ? '{cluster}'",
        meta,
    )
    return [pid for (pid,) in rows if pid in alive]


def test_the_wal_stream_moves_to_another_worker_when_its_holder_is_killed(
    env: dict[str, str], pg: Cluster, managed: Cluster, metadata_db: str, tmp_path: Path
) -> None:
    env = {
        **env,
        "DATABASE_URL": managed.url("postgres"),
        "BACKUP_WORKERS": "queue",
        "WAL_ARCHIVING": "receive",
        "WAL_SPOOL_DIR": str(tmp_path / "spool"),  # one volume that the next holder sees
        "WAL_MAX_SEGMENT_AGE": "3",
        "LOG_LEVEL": "info",
    }
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]
    workers = [_worker(env, log) for log in logs]
    try:
        pids = [w.pid for w in workers]
        _wait(
            "no worker streamed",
            lambda: managed.execute("SELECT 1 FROM pg_stat_replication"),
            60,
            logs,
        )
        run(env, "backup", "--kind", "base")
        app = managed.create_database("app")
        managed.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)", app)
        managed.execute("SELECT pg_switch_wal()")
        _wait(
            "no worker says it holds the stream",
            lambda: _stream_holders(pg, metadata_db, pids),
            30,
            logs,
        )
        [holder] = _stream_holders(pg, metadata_db, pids)
        os.kill(holder, signal.SIGKILL)
        next(w for w in workers if w.pid == holder).wait(timeout=10)
        other = next(pid for pid in pids if pid != holder)

        _wait(
            "the other worker did not take the stream",
            lambda: _stream_holders(pg, metadata_db, [other]),
            60,
            logs,
        )
        managed.execute("INSERT INTO t VALUES (2)", app)
        last = managed.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]

        def archived() -> bool:
            status = loads(run(env, "wal", "status", "--json").stdout)
            return bool(status["last_segment"]) and status["last_segment"] >= last

        _wait(f"{last} was not archived", archived, 60, logs)
        shown = run(env, "status").stdout
        assert f"WAL stream: main on {socket.gethostname()}:{other}" in shown, shown
    finally:
        _stop(workers)
    verify = run(env, "wal", "verify", check=False)
    assert verify.returncode == 0 and "no gaps" in verify.stdout, verify.stdout + verify.stderr
    assert "holding the WAL stream of cluster main" in logs[pids.index(other)].read_text()


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.stop()


def test_a_stalled_queue_and_a_backup_waiting_too_long_page_by_email(
    env: dict[str, str], metadata_db: str, smtp: SMTPServer
) -> None:
    env = {**env, "BACKUP_WORKERS": "queue"}
    settings = make_settings(env, smtp.port)
    catalog = prepare(settings)
    [queued] = loads(run(env, "backup", "--queue", "--json").stdout)
    evaluator = Evaluator(settings)
    evaluator.run_once()
    assert not smtp.mailbox.about("queue_stalled"), "queued a moment ago: no alarm yet"

    catalog.conn.execute("UPDATE tasks SET created_at = now() - interval '6 minutes'")
    evaluator.run_once()
    [stalled] = smtp.mailbox.about("queue_stalled")
    subject = str(stalled["Subject"])
    assert subject.startswith(
        "[permafrost] CRITICAL: the task queue is stalled: 1 task(s) waiting, "
        f"{queued['task_id']} (backup of {queued['database']})"
    ), subject
    assert "no worker has ever run" in subject
    assert not smtp.mailbox.about("task_stuck"), "not yet TASK_MAX_WAIT"

    catalog.conn.execute("UPDATE tasks SET created_at = now() - interval '40 minutes'")
    evaluator.run_once()
    [stuck] = smtp.mailbox.about("task_stuck")
    assert str(stuck["Subject"]).startswith("[permafrost] CRITICAL: 1 task(s) queued for over")

    run(env, "worker", "--once")  # a worker takes it: both resolve
    outcome = evaluator.run_once()
    assert outcome is not None
    assert sorted(outcome.applied.resolved) == ["queue_stalled", "task_stuck"]
    assert len(loads(run(env, "list", "--json").stdout)) == 1


def test_the_scheduler_only_queues_backups_for_the_workers(
    env: dict[str, str], pg: Cluster, metadata_db: str, source_db: str, tmp_path: Path
) -> None:
    env = {
        **env,
        "BACKUP_WORKERS": "queue",
        "BACKUP_SCHEDULE": "*/2 * * * * *",  # every two seconds (seconds first)
        "BASE_BACKUP_SCHEDULE": "off",
        "INCREMENTAL_SCHEDULE": "off",
        "COMPLIANCE_SCHEDULE": "off",
        "VERIFY_SCHEDULE": "off",
        "CLEANUP_SCHEDULE": "off",
        "LIFECYCLE_SCHEDULE": "off",
        "PITR_DRILL_SCHEDULE": "off",
        "LIFECYCLE_APPLY": "false",
    }
    assert (
        "backups: queued for `permafrost worker` processes"
        in run(env, "scheduler", "--check").stdout
    )
    log = tmp_path / "scheduler.log"
    with log.open("wb") as out:
        scheduler = subprocess.Popen(
            [PERMAFROST, "scheduler"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait(
            "the scheduler queued nothing twice",
            lambda: log.read_text().count("already waiting in the queue") >= 2,
            60,
            [log],
        )
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(timeout=60)
    [(_, status, _, _, database, source)] = _tasks(pg, metadata_db)
    assert (status, database, source) == ("queued", source_db, "main")  # not run by the scheduler
    assert pg.execute("SELECT count(*) FROM permafrost.job_runs", metadata_db) == [(0,)]
    assert "task queue: 1 waiting, 0 running" in run(env, "status").stdout

    run(env, "worker", "--once")
    [(_, status, _, _, _, _)] = _tasks(pg, metadata_db)
    assert status == "succeeded"
    [backup] = loads(run(env, "list", "--json").stdout)
    assert (backup["database"], backup["status"]) == (source_db, "completed")
    [(trigger,)] = pg.execute(
        "SELECT details->>'trigger' FROM permafrost.job_runs WHERE job = 'backup'", metadata_db
    )
    assert trigger in ("schedule", "catch-up")  # the leader's first act may be its catch-up


def test_one_worker_runs_max_concurrent_backups_at_once_within_the_source_limit(
    env: dict[str, str], pg: Cluster, metadata_db: str, tmp_path: Path
) -> None:
    dbs = []
    for n in range(4):
        db = pg.create_database(unique(f"slot{n}"))
        pg.execute(
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 300000) g",
            db,
        )
        dbs.append(db)
    try:
        limits = {"MAX_CONCURRENT": "3", "MAX_CONCURRENT_PER_SOURCE": "2"}
        envs = _env(env, pg, DB_NAME=",".join(dbs), **limits)
        run(envs, "backup", "--all", "--queue")
        log = tmp_path / "worker.log"
        worker = _worker(envs, log)
        try:
            _wait(
                "the queue was not drained",
                lambda: all(t[1] == "succeeded" for t in _tasks(pg, metadata_db)),
                300,
                [log],
            )
        finally:
            _stop([worker])
        assert worker.returncode == 0, log.read_text()
        runs = pg.execute(
            "SELECT started_at, finished_at FROM permafrost.job_runs WHERE status = 'succeeded'",
            metadata_db,
        )
        assert len(runs) == 4
        # The most running at any one moment: two (the source's limit), never the three slots.
        most = max(sum(1 for s, e in runs if s <= start < e) for start, _ in runs)
        assert most == 2, runs
        assert {t[2] for t in _tasks(pg, metadata_db)} == {f"{socket.gethostname()}:{worker.pid}"}
    finally:
        for db in dbs:
            pg.drop_database(db)
