"""The look-ahead pusher: archive_command's segments stored in parallel before wal-push asks.

A real server archives through `archive_command = permafrost wal-push %p` (as the postgres
user, through an env file) into the moto S3 server; a burst of WAL is written, the pusher is
killed with SIGKILL in the middle, and the archive must still be whole: `wal verify` clean,
every stored segment the one its name says, PITR to the end of the burst gives every row.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.alerts.evaluator import Evaluator
from monitor.app import create_app
from permafrost.catalog.store import connect
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.wal import ahead, quick
from permafrost.wal import segment as wal
from permafrost.wal.identity import LONG_HEADER
from permafrost.wal.names import Segment, parse_segment
from tests.conftest import KEY, PERMAFROST, run
from tests.faults.proxy import FaultProxy, Plan
from tests.helpers import loads
from tests.services import Cluster, S3Server
from tests.test_alerts import SMTPServer, make_settings, parts, until
from tests.test_pitr import write_env_file

SEGMENT = 16 * 1024 * 1024


class Pushing:
    """A server whose archive_command is wal-push with the look-ahead pusher on."""

    def __init__(self, s3: S3Server, metadata_url: str, **extra: str) -> None:
        self.bucket = f"pf-ahead-{uuid.uuid4().hex[:10]}"
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
            "WAL_PUSH_IDLE": "5",
            "WAL_PUSH_THREADS": "3",
            **extra,
        }
        self.cluster = Cluster("ahead", {"wal_level": "replica", "archive_mode": "on"})
        self.env_file = write_env_file(self.cluster.root / "permafrost.env", self.storage)
        command = f"'{PERMAFROST}' --env-file '{self.env_file}' wal-push %p"
        with (self.cluster.data / "postgresql.conf").open("a") as handle:
            handle.write(f"archive_command = '{command.replace(chr(39), chr(39) * 2)}'\n")
        self.cluster.start()
        self.folder = self.cluster.data / "pg_wal" / quick.FOLDER

    def env(self, tmp: Path) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp),
            "DATABASE_URL": self.cluster.url("postgres"),
            **self.storage,
        }

    def pusher(self) -> int | None:
        return ahead.pid_of(self.folder) if self.folder.is_dir() else None

    def wait_archived(self, name: str, seconds: float = 240) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            row = self.cluster.execute("SELECT last_archived_wal FROM pg_stat_archiver")[0]
            if row[0] is not None and row[0] >= name:
                return
            time.sleep(0.2)
        raise AssertionError(f"{name} was not archived: pg_stat_archiver says {row}")

    def destroy(self) -> None:
        pid = self.pusher()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.cluster.destroy()


@pytest.fixture
def pushing(s3: S3Server, pg: Cluster) -> Iterator[Pushing]:
    metadata = pg.create_database(f"meta_ahead_{uuid.uuid4().hex[:8]}")
    source = Pushing(s3, pg.url(metadata))
    yield source
    source.destroy()
    pg.drop_database(metadata)


def wait_for(check, seconds: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


BATCH = (
    "INSERT INTO burst (batch, v)"
    " SELECT {b}, repeat(md5(g::text), 6) FROM generate_series(1, 60000) g"
)


def test_a_burst_survives_the_pusher_killed_mid_way(
    pushing: Pushing, pg: Cluster, tmp_path: Path
) -> None:
    src = pushing.cluster
    db = src.create_database("shop")
    src.execute("CREATE TABLE burst (id bigserial PRIMARY KEY, batch int, v text)", db)
    env = pushing.env(tmp_path)
    run(env, "backup", "--kind", "base")
    first = parse_segment(src.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])
    batches, killed, killed_at = 16, None, 0.0
    for b in range(batches):
        src.execute(BATCH.format(b=b), db)
        src.execute("SELECT pg_switch_wal()")
        if b == 5:
            wait_for(lambda: pushing.pusher() is not None)  # the first wal-push started it
            wait_for(lambda: any((pushing.folder / ahead.DONE).glob(f"*{quick.RECORD}")))
            killed = pushing.pusher()
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            killed_at = time.time()
    last = src.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    pushing.wait_archived(last)
    # A later wal-push started another pusher, which went on storing ahead.
    markers = (pushing.folder / ahead.DONE).glob(f"*{quick.RECORD}")
    assert any(marker.stat().st_mtime > killed_at for marker in markers)

    assert "no gaps" in run(env, "wal", "verify").stdout
    # Every stored segment of the burst is the segment its name says, and whole.
    repo = Context(Settings.from_env(env)).repository()
    end = parse_segment(last)
    assert first is not None and end is not None and end.number - first.number >= batches
    for number in range(first.number, end.number + 1):
        name = Segment(1, number).name()
        data = wal.fetch(repo, "main", name)
        assert data is not None and len(data) == SEGMENT, name
        header = LONG_HEADER.unpack(data[: LONG_HEADER.size])
        assert header[3] == number * SEGMENT, f"{name} holds another segment's bytes"

    target = f"ahead_{uuid.uuid4().hex[:6]}"
    out = run(
        env,
        "pitr",
        "--latest",
        "--database",
        db,
        "--target-db",
        target,
        "--target-url",
        pg.url("postgres"),
    )
    assert "point-in-time recovery complete" in out.stdout
    got = pg.execute("SELECT count(*), count(DISTINCT batch) FROM burst", target)
    assert got == [(batches * 60000, batches)]
    status = loads(run(env, "wal", "status", "--json").stdout)
    assert status["method"] == "push" and status["last_segment"] >= last
    pg.drop_database(target)


def seg(number: int) -> str:
    return Segment(1, number).name()


def test_the_pusher_works_ahead_and_answers_wal_push(tmp_path: Path) -> None:
    pg_wal = tmp_path / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    for n in range(1, 7):
        (pg_wal / seg(n)).write_bytes(f"segment {n}".encode() * 1000)
        (pg_wal / "archive_status" / f"{seg(n)}.ready").touch()
    # wal-push's settings point at a bucket that does not answer: only the pusher can say yes.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "STORAGE_URL": "s3://none/x"}
    env |= {"S3_ENDPOINT_URL": "http://127.0.0.1:9", "S3_MAX_ATTEMPTS": "1"}
    env |= {"BACKUP_ENCRYPTION_KEY": KEY, "S3_ACCESS_KEY_ID": "x", "S3_SECRET_ACCESS_KEY": "y"}
    fingerprint = quick.fingerprint(None, None, env)
    stored: dict[str, bytes] = {}

    def store(path: Path) -> ahead.Marker:
        data = path.read_bytes()
        stored[path.name] = data
        digest = hashlib.sha256(data).hexdigest()
        return ahead.Marker(path.name, digest, len(data), f"k/{path.name}", len(data), fingerprint)

    folder = pg_wal / quick.FOLDER
    folder.mkdir()
    tuning = ahead.Tuning(window=4, threads=2, idle=30)
    pusher = ahead.Pusher(folder, tuning, fingerprint, store, lambda m: m.name in stored)
    thread = threading.Thread(target=pusher.run)
    with ahead.locked(folder) as mine:
        assert mine and ahead.running(folder)
        thread.start()
        wait_for(lambda: len(list((folder / ahead.DONE).glob(f"*{quick.RECORD}"))) == 4)
        time.sleep(0.5)
        assert sorted(stored) == [seg(n) for n in range(1, 5)]  # the window: the oldest four
        assert pusher.backlog == (6, 6 * 9000)

        assert run(env, "wal-push", str(pg_wal / seg(1))).returncode == 0  # answered at once
        assert run(env, "wal-push", str(pg_wal / seg(6))).returncode == 0  # stored when asked
        assert seg(6) in stored and seg(5) not in stored
        # Other bytes than the pusher stored: not acknowledged by it; the full wal-push then
        # tries the bucket itself and fails, so PostgreSQL keeps the file and retries.
        (pg_wal / seg(2)).write_bytes(b"other bytes")
        refused = run(env, "wal-push", str(pg_wal / seg(2)), check=False)
        assert refused.returncode == 6, refused.stderr
        # A wal-push with other settings: told so, and the pusher exits for a new one.
        answer = quick.ask(folder, {"name": seg(3), "fingerprint": "another"}, wait=5)
        assert answer["status"] == quick.OTHER
        thread.join(10)
        assert not thread.is_alive() and not (folder / quick.SOCKET).exists()
    # Markers outlive the pusher: the slow path and the next pusher read them.
    marker = ahead.read_marker(folder, seg(1), fingerprint)
    assert marker is not None and marker.sha256 == quick.file_sha256(pg_wal / seg(1))
    assert ahead.read_marker(folder, seg(1), "another") is None


def test_only_a_wal_push_command_line_takes_the_fast_path() -> None:
    assert quick.parse(["--env-file", "/e", "wal-push", "pg_wal/X", "--cluster", "c"]) == (
        quick.Call("pg_wal/X", "/e", "c")
    )
    assert quick.parse(["wal-push", "--cluster=c", "X"]) == quick.Call("X", None, "c")
    assert quick.parse(["wal-fetch", "X", "Y"]) is None
    assert quick.parse(["wal-push", "X", "Y"]) is None
    assert quick.parse(["--cluster", "c", "wal-push", "X"]) is None
    assert quick.parse(["wal-push"]) is None


def test_wal_receive_uploads_the_spool_in_parallel(env: dict[str, str], tmp_path: Path) -> None:
    from permafrost.wal import receive

    spool = tmp_path / "spool"
    spool.mkdir()
    names = [seg(n) for n in range(0x20, 0x2A)]
    for name in names:
        (spool / name).write_bytes(name.encode() * 5000)
    (spool / f"{seg(0x2A)}.partial").write_bytes(b"still being written")
    ctx = Context(Settings.from_env({**env, "WAL_PUSH_THREADS": "4"}))
    position = receive.Position()
    assert receive.upload_completed(ctx, "main", spool, position) == len(names)
    assert sorted(p.name for p in spool.iterdir()) == [f"{seg(0x2A)}.partial"]
    assert position.segment == names[-1]
    repo = ctx.repository()
    assert all(wal.fetch(repo, "main", n) == n.encode() * 5000 for n in names)
    assert ctx.catalog().wal_status("main")[0]["segments"] == len(names)
    ctx.close()


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.stop()


def test_a_growing_queue_raises_wal_queue_by_email_and_resolves_when_the_bucket_is_back(
    s3: S3Server, pg: Cluster, smtp: SMTPServer, tmp_path: Path
) -> None:
    proxy = FaultProxy(s3.url)
    metadata = pg.create_database(f"meta_ahead_{uuid.uuid4().hex[:8]}")
    pushing = Pushing(s3, pg.url(metadata), S3_ENDPOINT_URL=proxy.url, S3_MAX_ATTEMPTS="1")
    try:
        src = pushing.cluster
        src.execute("CREATE TABLE q (v int)")
        pushing.wait_archived(src.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0])
        settings = make_settings(
            pushing.env(tmp_path), smtp.port, WAL_ARCHIVING="push", WAL_QUEUE_ALERT_SEGMENTS="3"
        )
        catalog = connect(settings.metadata_url)

        def queue() -> int:
            row = catalog.wal_status("main")[0]
            return int(row["ready_segments"] or 0) if row["ready_at"] else 0

        proxy.set(Plan(fault="error500", rate=1.0))  # the bucket answers nothing but errors
        for n in range(4):
            src.execute(f"INSERT INTO q VALUES ({n}); SELECT pg_switch_wal()")
        until(lambda: queue() >= 3, timeout=90)
        evaluator = Evaluator(settings)
        outcome = evaluator.run_once()
        assert outcome is not None and "wal_queue:main" in outcome.applied.opened
        [message] = until(lambda: smtp.mailbox.about("wal_queue:main"))
        assert "wait in pg_wal to be archived" in str(message["Subject"])
        assert "permafrost wal status" in parts(message)[0]
        client = create_app(settings, evaluate=False).test_client()
        metrics = client.get("/metrics").get_data(as_text=True)
        assert any(
            line.startswith('permafrost_wal_ready_segments{cluster="main"}')
            and float(line.split()[-1]) >= 3
            for line in metrics.splitlines()
        ), metrics
        page = client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
        assert "WAL waiting in pg_wal to be archived" in page

        proxy.clear()  # the bucket is back: the queue drains, the alert resolves
        src.execute("INSERT INTO q VALUES (9)")
        last = src.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        pushing.wait_archived(last, seconds=180)
        until(lambda: queue() < 3, timeout=60)
        outcome = evaluator.run_once()
        assert outcome is not None and "wal_queue:main" in outcome.applied.resolved
        evaluator.run_once()
        until(lambda: len(smtp.mailbox.about("wal_queue:main")) == 2)
        assert str(smtp.mailbox.about("wal_queue:main")[1]["Subject"]).startswith(
            "[permafrost] RESOLVED"
        )
        evaluator.stop()
        catalog.close()
    finally:
        pushing.destroy()
        proxy.stop()
        pg.drop_database(metadata)
