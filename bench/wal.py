"""WAL benchmark: wal-push of real 16 MiB segments; WAL replay in pitr with or without prefetch.

    python bench/wal.py [--quick]
    python bench/wal.py --burst [--segments N]   (the look-ahead pusher: bench/walburst.py)

Starts one moto S3 server on a loopback port and throwaway PostgreSQL clusters, then measures:

  wal-push   `permafrost wal-push SEGMENT`, the whole command as archive_command runs it (process
             start included), over distinct real segments: a wal_level=replica cluster is loaded
             with INSERTs, and each completed segment is copied out of pg_wal. Two variants, on
             different segments: the bucket only, and with METADATA_DATABASE_URL set (wal-push
             then also records the segment in the catalog). Baselines from the same run, on the
             same segments, interleaved with the pushes:
               python start     `python -c pass` with the same interpreter
               cli start        `permafrost --version` (the imports of the command line)
               put_object       one boto3 put_object of the segment's 16 MiB from this process
               boto3 uploader   `python -c UPLOADER SEGMENT`: import boto3, make a client and
                                put_object the file; the least a Python archive_command does
               seal             wal.seal (zstd level 1 + encryption) of the segment, in process
  replay     `permafrost pitr --latest --target-dir DIR --stop` of a cluster that archives
             through `archive_command = permafrost wal-push %p`, after a base backup and a load
             of many segments; run with WAL_PREFETCH=0 and WAL_PREFETCH=8 (ABBA order in a full
             run). The replay phase is read from pitr's own output, timestamped line by line:
             from "- start PostgreSQL ..." to "- recovered: ...", so it includes starting the
             recovery server, every restore_command (wal-fetch) and the promotion.

Each wal-push round and each pitr run starts once the machine is quiet (harness.wait_for_quiet,
waiting at most 10 s and 30 s); the report says how many started on a busy machine anyway.
The floor is python start + put_object. Figures are medians (p90: the 90th percentile); wall
times are also given as ratios to the floor and to the uploader measured in the same run. The
target from the issue (a wal-push median under 0.5 s) is printed, not asserted. Units: MB =
10^6 bytes, a WAL segment is 16 MiB = 16,777,216 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import MB, PERMAFROST, wait_for_quiet

from permafrost.repo import crypto
from permafrost.wal import segment as wal
from tests.services import Cluster, S3Server, pg_bin

SEGMENT = 16 * 1024 * 1024
PUSH_TARGET_S = 0.5
PREFETCH_DEPTH = 8
QUIET_WAIT_S = 10  # how long each round waits for the machine to be idle before measuring anyway
FETCH_RUNS = 5
KEY = crypto.generate_key()
BATCH_ROWS = 300_000  # about 1.6 segments of WAL per INSERT with the rows below
FILL_SQL = "INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, {n}) g"
UPLOADER = """
import os, sys, boto3
client = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
with open(sys.argv[1], "rb") as handle:
    client.put_object(Bucket="wal-push", Key="uploader/" + os.path.basename(sys.argv[1]),
                      Body=handle.read())
"""


@dataclass(frozen=True)
class Mode:
    push_runs: int  # segments pushed per wal-push variant
    replay_segments: int
    rounds: int  # pitr runs per prefetch setting


FULL = Mode(push_runs=15, replay_segments=40, rounds=2)
QUICK = Mode(push_runs=15, replay_segments=10, rounds=1)


# --- shared ---------------------------------------------------------------------------------


def storage_env(s3: S3Server, bucket: str) -> dict[str, str]:
    return {
        "STORAGE_URL": f"s3://{bucket}/wal-bench",
        "S3_ENDPOINT_URL": s3.url,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "S3_PROVIDER": "generic",
        "BACKUP_ENCRYPTION_KEY": KEY,
    }


def command_env(home: Path, storage: dict[str, str], **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), **storage, **extra}


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    """As tests/test_pitr.py: archive_command runs as postgres and reads its settings here."""
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    path.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres")
    return path


def as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def run_timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}:\n{(result.stderr or result.stdout)}"
        )
    return elapsed


def segment_number(name: str) -> int:
    return int(name[8:16], 16) * 0x100 + int(name[16:24], 16)


def current_segment(cluster: Cluster) -> str:
    return str(cluster.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


# --- 1. wal-push ----------------------------------------------------------------------------


def make_segments(count: int, folder: Path) -> list[Path]:
    """`count` completed segments full of real WAL, copied out of a loaded cluster's pg_wal.

    WAL is written in batches, and after each one every segment older than the one being
    written is complete: copied before a checkpoint could recycle it. None ends early at a
    pg_switch_wal(), so none is padded with zeros (which would flatter the compression).
    """
    cluster = Cluster("bench-wal-segments", {"wal_level": "replica", "autovacuum": "off"})
    try:
        cluster.start()
        cluster.execute("CREATE TABLE filler (g int, m text)")
        first = current_segment(cluster)  # begins with initdb's and CREATE TABLE's WAL: skipped
        pg_wal = cluster.data / "pg_wal"
        copied: dict[str, Path] = {}
        while len(copied) < count:
            cluster.execute(FILL_SQL.format(n=BATCH_ROWS))
            current = current_segment(cluster)
            for path in sorted(pg_wal.iterdir()):
                name = path.name
                if len(name) == 24 and first < name < current and name not in copied:
                    copied[name] = Path(shutil.copyfile(path, folder / name))
        return [copied[name] for name in sorted(copied)[:count]]
    finally:
        cluster.destroy()


@dataclass
class PushTimes:
    python_start: list[float] = field(default_factory=list)
    cli_start: list[float] = field(default_factory=list)
    put_object: list[float] = field(default_factory=list)
    uploader: list[float] = field(default_factory=list)
    seal: list[float] = field(default_factory=list)
    push: list[float] = field(default_factory=list)
    push_catalog: list[float] = field(default_factory=list)
    sealed_bytes: list[int] = field(default_factory=list)
    busy_rounds: int = 0  # rounds that started while something else kept the machine busy


def bench_push(s3: S3Server, runs: int, work: Path) -> PushTimes:
    folder = work / "segments"
    folder.mkdir()
    print(f"wal-push: making {2 * runs + 1} segments of real WAL ...", flush=True)
    segments = make_segments(2 * runs + 1, folder)

    s3.client().create_bucket(Bucket="wal-push")
    storage = storage_env(s3, "wal-push")
    env = command_env(work, storage)
    # The catalog variant needs a metadata database: a cluster of its own, idle while timed.
    meta = Cluster("bench-wal-meta")
    try:
        meta.start()
        meta.create_database("permafrost_meta")
        env_catalog = command_env(work, storage, METADATA_DATABASE_URL=meta.url("permafrost_meta"))
        # The first push creates the repository (permafrost.json) and the catalog's tables:
        # a one-time cost, not timed.
        run_timed([PERMAFROST, "wal-push", str(segments[0])], env_catalog)
        client = s3.client()
        key = crypto.MasterKey(crypto.raw_key(KEY) or b"")
        times = PushTimes()
        print(f"wal-push: timing {runs} pushes per variant, with baselines ...", flush=True)
        for i in range(runs):
            if not wait_for_quiet(QUIET_WAIT_S):
                times.busy_rounds += 1
            plain, catalog = segments[1 + 2 * i], segments[2 + 2 * i]
            data = plain.read_bytes()

            def python_start() -> None:
                times.python_start.append(run_timed([sys.executable, "-c", "pass"], env))

            def cli_start() -> None:
                times.cli_start.append(run_timed([PERMAFROST, "--version"], env))

            def put(data: bytes = data, name: str = plain.name) -> None:
                started = time.perf_counter()
                client.put_object(Bucket="wal-push", Key=f"baseline/{name}", Body=data)
                times.put_object.append(time.perf_counter() - started)

            def uploader(path: Path = plain) -> None:
                argv = [sys.executable, "-c", UPLOADER, str(path)]
                times.uploader.append(run_timed(argv, env))

            def seal(data: bytes = data) -> None:
                started = time.perf_counter()
                sealed = wal.seal(key, data)
                times.seal.append(time.perf_counter() - started)
                times.sealed_bytes.append(len(sealed))

            def push(path: Path = plain) -> None:
                times.push.append(run_timed([PERMAFROST, "wal-push", str(path)], env))

            def push_catalog(path: Path = catalog) -> None:
                times.push_catalog.append(
                    run_timed([PERMAFROST, "wal-push", str(path)], env_catalog)
                )

            steps = [python_start, cli_start, put, uploader, seal, push, push_catalog]
            shift = i % len(steps)  # rotate the order from run to run
            for step in steps[shift:] + steps[:shift]:
                step()
        listed = client.list_objects_v2(Bucket="wal-push", Prefix="wal-bench/wal/")
        stored = [o["Key"] for o in listed.get("Contents", [])]
        if len(stored) != 2 * runs + 1:
            raise RuntimeError(f"expected {2 * runs + 1} archived segments, found {len(stored)}")
        return times
    finally:
        meta.destroy()


def report_push(t: PushTimes) -> None:
    n = len(t.push)
    floor = statistics.median(t.python_start) + statistics.median(t.put_object)
    uploader = statistics.median(t.uploader)
    print(f"\n1. wal-push of one 16 MiB segment, whole command ({n} distinct segments each)")
    print(f"   {'':<32} {'median s':>9} {'p90 s':>7} {'x floor':>8} {'x uploader':>11}")
    rows = [
        ("python -c pass", t.python_start),
        ("permafrost --version", t.cli_start),
        ("boto3 put_object, in process", t.put_object),
        ("boto3 uploader, a process", t.uploader),
        ("seal (zstd-1 + encrypt), in proc", t.seal),
        ("wal-push", t.push),
        ("wal-push + catalog", t.push_catalog),
    ]
    for label, values in rows:
        median = statistics.median(values)
        print(
            f"   {label:<32} {median:>9.3f} {p90(values):>7.3f} {median / floor:>8.2f} "
            f"{median / uploader:>11.2f}"
        )
    sealed = statistics.median(t.sealed_bytes)
    print(
        f"   floor = python start + put_object = {floor:.3f} s; a sealed segment is "
        f"{sealed / MB:.1f} MB ({SEGMENT / sealed:.1f}x smaller)"
    )
    push = statistics.median(t.push)
    seal = statistics.median(t.seal)
    print(
        f"   wal-push - uploader - seal = {push - uploader - seal:+.3f} s "
        "(its own imports, settings, repository check)"
    )
    if t.busy_rounds:
        print(f"   ({t.busy_rounds} of {n} rounds started while the machine was busy)")
    catalog = statistics.median(t.push_catalog) - push
    print(f"   recording the segment in the catalog adds {catalog:+.3f} s")
    for label, values in (("wal-push", t.push), ("wal-push + catalog", t.push_catalog)):
        median = statistics.median(values)
        verdict = "met" if median < PUSH_TARGET_S else "NOT met"
        print(f"   target: {label} median under {PUSH_TARGET_S} s: {verdict} ({median:.3f} s)")


# --- 2. replay in pitr ----------------------------------------------------------------------


class Archiving:
    """A cluster archiving through wal-push, as tests/test_pitr.py builds it."""

    def __init__(self, s3: S3Server, bucket: str) -> None:
        s3.client().create_bucket(Bucket=bucket)
        self.storage = storage_env(s3, bucket)
        settings = {
            "wal_level": "replica",
            "archive_mode": "on",
            "autovacuum": "off",  # no background work while pitr is timed
            "max_wal_size": "'4GB'",
        }
        self.cluster = Cluster("bench-wal-archiving", settings)
        try:
            env_file = write_env_file(self.cluster.root / "permafrost.env", self.storage)
            command = f"'{PERMAFROST}' --env-file '{env_file}' wal-push %p"
            with (self.cluster.data / "postgresql.conf").open("a") as handle:
                handle.write(f"archive_command = '{command.replace(chr(39), chr(39) * 2)}'\n")
            self.cluster.start()
        except BaseException:
            self.cluster.destroy()
            raise

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        return command_env(home, self.storage, DATABASE_URL=self.cluster.url(), **extra)

    def wait_archived(self, name: str, limit: float = 600) -> None:
        deadline = time.monotonic() + limit
        row: tuple = ()
        while time.monotonic() < deadline:
            row = self.cluster.execute(
                "SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver"
            )[0]
            if row[0] is not None and row[0] >= name:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} was not archived: pg_stat_archiver says {row}")


@dataclass(frozen=True)
class PitrRun:
    prefetch: int
    total_s: float
    restore_s: float  # plan, download, unpack, pg_verifybackup
    replay_s: float
    leftovers: list[str]
    quiet: bool


@dataclass(frozen=True)
class Source:
    segments: int
    wal_bytes: int
    base_bytes: int
    load_s: float
    archive_lag_s: float
    archive_failures: int
    fetch_s: list[float]


def prepare_source(archiving: Archiving, work: Path, segments: int) -> Source:
    src = archiving.cluster
    env = archiving.env(work)
    db = src.create_database("walbench")
    src.execute("CREATE TABLE filler (g int, m text)", db)
    out = subprocess.run(
        [PERMAFROST, "backup", "--kind", "base", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"permafrost backup --kind base exited {out.returncode}:\n{out.stderr}")
    base = json.loads(out.stdout)
    wal_start = base["physical"]["wal_start"]
    print(
        f"replay: base backup {base['id']}, {int(base['dump_size_bytes']) / MB:.0f} MB; "
        f"loading about {segments} segments of WAL ...",
        flush=True,
    )
    start_lsn = src.execute("SELECT pg_current_wal_lsn()")[0][0]
    started = time.monotonic()
    while True:
        src.execute(FILL_SQL.format(n=BATCH_ROWS), db)
        written = src.execute(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start_lsn}')")
        wal_bytes = int(written[0][0])
        if wal_bytes >= segments * SEGMENT:
            break
    loaded = time.monotonic()
    last = str(src.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0])
    archiving.wait_archived(last)
    archived = time.monotonic()
    failures = int(src.execute("SELECT failed_count FROM pg_stat_archiver")[0][0])
    count = segment_number(last) - segment_number(wal_start) + 1
    # What restore_command costs per segment without prefetch: a few wal-fetch runs by hand.
    fetch_env = {**env, "WAL_PREFETCH": "0"}
    fetched = work / "fetched"
    fetched.mkdir()
    fetch_s = []
    for number in range(segment_number(wal_start) + 1, segment_number(last), 2)[:FETCH_RUNS]:
        name = f"{last[:8]}{number >> 8:08X}{number & 0xFF:08X}"
        fetch_s.append(run_timed([PERMAFROST, "wal-fetch", name, str(fetched / name)], fetch_env))
    shutil.rmtree(fetched)
    return Source(
        segments=count,
        wal_bytes=wal_bytes,
        base_bytes=int(base["dump_size_bytes"]),
        load_s=loaded - started,
        archive_lag_s=archived - loaded,
        archive_failures=failures,
        fetch_s=fetch_s,
    )


def run_pitr(env: dict[str, str], root: Path, prefetch: int, index: int) -> PitrRun:
    quiet = wait_for_quiet(3 * QUIET_WAIT_S)
    target = root / f"recovered-{index}-prefetch{prefetch}"
    argv = [PERMAFROST, "pitr", "--latest", "--target-dir", str(target), "--stop"]
    errors = root / f"pitr-{index}.stderr"
    lines: list[tuple[float, str]] = []
    try:
        with errors.open("w") as err:
            started = time.monotonic()
            proc = subprocess.Popen(
                argv,
                env={**env, "WAL_PREFETCH": str(prefetch)},
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append((time.monotonic() - started, line.rstrip("\n")))
            code = proc.wait()
            total = time.monotonic() - started
        output = "\n".join(text for _, text in lines)
        if code != 0:
            raise RuntimeError(
                f"pitr with WAL_PREFETCH={prefetch} exited {code}:\n{output}\n"
                f"{errors.read_text()[-3000:]}"
            )

        def at(prefix: str) -> float:
            for stamp, text in lines:
                if text.startswith(prefix):
                    return stamp
            raise RuntimeError(f"pitr printed no line starting {prefix!r}:\n{output}")

        replay_from = at("- start PostgreSQL")
        leftovers = _leftovers(target)
        replay = at("- recovered:") - replay_from
        return PitrRun(prefetch, total, replay_from, replay, leftovers, quiet)
    finally:
        subprocess.run(
            [
                *as_postgres(),
                str(pg_bin() / "pg_ctl"),
                "-D",
                str(target),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(target, ignore_errors=True)


def _leftovers(target: Path) -> list[str]:
    """What a finished pitr leaves behind besides the data directory: prefetch files, processes."""
    found = []
    folder = target / "pg_wal" / ".permafrost-prefetch"
    if folder.exists():
        names = sorted(p.name for p in folder.iterdir())
        found.append(f"{folder.relative_to(target)} holds {len(names)} file(s): {names[:4]}")
    deadline = time.monotonic() + 10
    while True:
        alive = _prefetchers(target)
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if alive:
        found.append(f"wal-prefetch process(es) still running 10 s after pitr: {alive}")
    return found


def _prefetchers(target: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "wal-prefetch" in cmdline and str(target) in cmdline:
            pids.append(int(entry.name))
    return pids


def bench_replay(s3: S3Server, mode: Mode, work: Path) -> tuple[Source, list[PitrRun]]:
    archiving = Archiving(s3, "wal-replay")
    root = Path(tempfile.mkdtemp(prefix="permafrost-bench-pitr-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    try:
        source = prepare_source(archiving, work, mode.replay_segments)
        env = archiving.env(work)
        archiving.cluster.stop()  # the bucket holds everything pitr needs; keep the host quiet
        order = ([0, PREFETCH_DEPTH, PREFETCH_DEPTH, 0] * mode.rounds)[: 2 * mode.rounds]  # ABBA
        runs = []
        for index, prefetch in enumerate(order):
            print(f"replay: pitr --latest with WAL_PREFETCH={prefetch} ...", flush=True)
            runs.append(run_pitr(env, root, prefetch, index))
        return source, runs
    finally:
        archiving.cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


def report_replay(source: Source, runs: list[PitrRun]) -> None:
    replayed = source.segments * SEGMENT
    print(f"\n2. WAL replay in pitr --latest --stop ({len(runs) // 2} run(s) per setting)")
    print(
        f"   source: {source.wal_bytes / MB:.0f} MB of WAL written in {source.load_s:.1f} s; "
        f"the archiver caught up {source.archive_lag_s:.1f} s after the load,\n"
        f"   with {source.archive_failures} failed archive_command calls"
    )
    print(
        f"   replayed: {source.segments} segments x 16 MiB = {replayed / MB:.0f} MB, "
        f"after a base backup of {source.base_bytes / MB:.0f} MB"
    )
    fetch = statistics.median(source.fetch_s)
    print(
        f"   one wal-fetch (WAL_PREFETCH=0), whole command: median {fetch:.3f} s, "
        f"p90 {p90(source.fetch_s):.3f} s ({len(source.fetch_s)} segments)"
    )
    print(
        f"   {'WAL_PREFETCH':<13} {'total s':>8} {'restore s':>10} {'replay s':>9} "
        f"{'MB/s':>7} {'s/segment':>10}  replay s per run"
    )
    medians: dict[int, float] = {}
    for prefetch in sorted({r.prefetch for r in runs}):
        mine = [r for r in runs if r.prefetch == prefetch]
        total = statistics.median(r.total_s for r in mine)
        restore = statistics.median(r.restore_s for r in mine)
        replay = statistics.median(r.replay_s for r in mine)
        medians[prefetch] = replay
        each = " ".join(f"{r.replay_s:.1f}" for r in mine)
        print(
            f"   {prefetch:<13} {total:>8.1f} {restore:>10.1f} {replay:>9.1f} "
            f"{replayed / MB / replay:>7.1f} {replay / source.segments:>10.3f}  {each}"
        )
    print(
        "   (restore: until pitr starts the recovery server; replay: from its "
        '"start PostgreSQL"\n   line to its "recovered:" line, server start and promotion '
        "included)"
    )
    if 0 in medians and PREFETCH_DEPTH in medians:
        ratio = medians[0] / medians[PREFETCH_DEPTH]
        print(
            f"   replay throughput, prefetch/no-prefetch: {ratio:.2f}x "
            f"(WAL_PREFETCH={PREFETCH_DEPTH} vs 0)"
        )
    busy = sum(not r.quiet for r in runs)
    if busy:
        print(f"   ({busy} of {len(runs)} pitr runs started while the machine was busy)")
    seen = set()
    for run in runs:
        for problem in run.leftovers:
            if (run.prefetch, problem) not in seen:
                seen.add((run.prefetch, problem))
                print(f"   left behind (WAL_PREFETCH={run.prefetch}): {problem}")
    print(
        "   The S3 server is moto on loopback: no network latency and no bandwidth limit. A\n"
        "   remote bucket adds a round trip and a 16 MiB transfer to every segment fetched\n"
        f"   without prefetch, one after another, while prefetch overlaps up to {PREFETCH_DEPTH} "
        "of them:\n   the prefetch gain measured here is a lower bound of what a remote bucket "
        "sees."
    )


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer segments to replay, one round")
    parser.add_argument("--burst", action="store_true", help="the WAL burst (bench/walburst.py)")
    args, rest = parser.parse_known_args(argv)
    if args.burst:
        import walburst

        return walburst.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    mode = QUICK if args.quick else FULL
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="permafrost-bench-wal-"))
    s3 = S3Server()
    try:
        push = bench_push(s3, mode.push_runs, work)
        source, runs = bench_replay(s3, mode, work)
        report_push(push)
        report_replay(source, runs)
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n({'quick' if args.quick else 'full'} run: {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
