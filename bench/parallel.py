"""Parallel logical backups and restores: LOGICAL_JOBS=1 against 2, in the same run.

    python bench/parallel.py [--size-gb 0.3] [--data-dir bench/.data] [--runs 3] [--jobs 2]
                             [--quiet-wait S] [--backups-only] [--unshared]

Uses the database bench/harness.py builds (customers, orders, events; reused from the data
directory), and a moto S3 server on a loopback port. Each run, in this order:

  backup j1        permafrost backup with LOGICAL_JOBS=1: one pg_dump, one object
  backup jN        the same with LOGICAL_JOBS=N (LOGICAL_JOBS_MIN_SIZE_MB=0): the schema part
                   and N data parts, N pg_dump processes in one snapshot; the parts share
                   COMPRESSION_THREADS and UPLOAD_CONCURRENCY
  backup jN unshared  (--unshared) the same, each part with the zstd workers and the uploads in
                   flight of a one-job backup (COMPRESSION_THREADS and UPLOAD_CONCURRENCY
                   times N, to share out): how the parts ran before they shared them
  restore j1       the one-object backup with --jobs 1: streamed into one pg_restore
  restore j1 -jN   the one-object backup with --jobs N: downloaded to a temporary file, then
                   pg_restore -jN (the path that existed before parts)
  restore parts j1 the backup in parts with --jobs 1: the parts one after the other (the same
                   backup as the next line, so the ratio is jobs alone)
  restore jN       the backup in parts with --jobs N: pre-data, N data parts streamed into N
                   pg_restore at once, post-data with -jN; no temporary file for the rows

Every restore includes its checks, the staging database, the row counts and the rename. Besides
the command's own CPU (permafrost and its children: pg_dump, pg_restore), each line says the CPU
the PostgreSQL server (its backends) and the S3 server spent meanwhile: on this machine all three
share the same cores, so the sum against the wall time says how much of them a variant used
(`cores`), and `host` how many the whole machine had busy meanwhile, theirs and everyone's. The
ratios are per run (paired), then the median; the machine is shared, so each measurement first
waits (up to --quiet-wait seconds) for the host to be nearly idle and says when it was not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backup import Bench
from harness import (
    BUCKET,
    GB,
    META_DB,
    PERMAFROST,
    S3_PREFIX,
    BenchCluster,
    Measurement,
    ensure_database,
    measure,
)

from tests.services import S3Server


@dataclass(frozen=True)
class Result:
    variant: str
    run: int
    measured: Measurement
    server_cpu_s: float = 0.0  # the PostgreSQL server's backends, meanwhile
    s3_cpu_s: float = 0.0  # moto's S3 server, meanwhile


def process_cpu(pid: int) -> float:
    """CPU seconds of a process, its threads and its reaped children (a postmaster reaps its
    backends, so this counts the server's work)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


class ParallelBench:
    def __init__(self, bench: Bench, jobs: int, quiet_wait: float) -> None:
        self.bench, self.jobs, self.quiet_wait = bench, jobs, quiet_wait
        self.dump_bytes = 0
        pid_file = bench.cluster.data / "postmaster.pid"
        self.servers = (int(pid_file.read_text().split()[0]), bench.s3.proc.pid)

    def measure(self, variant: str, run: int, argv: list[str], env: dict[str, str]) -> Result:
        """The command's measurement, with the CPU the two servers spent while it ran."""
        log = self.bench.work / f"{variant.replace(' ', '_')}.log"
        server, s3 = self.servers
        before = (process_cpu(server), process_cpu(s3))
        measured = measure(argv, env, log, self.quiet_wait)
        used = (process_cpu(server) - before[0], process_cpu(s3) - before[1])
        return Result(variant, run, measured, *used)

    def env(self, logical_jobs: int, unshared: bool = False) -> dict[str, str]:
        """unshared: COMPRESSION_THREADS and UPLOAD_CONCURRENCY at their defaults times the jobs,
        for the parts to share out: each part gets what a one-job backup has, as before."""
        env = {
            **self.bench.permafrost_env(self.bench.s3_url),
            "LOGICAL_JOBS": str(logical_jobs),
            "LOGICAL_JOBS_MIN_SIZE_MB": "0",
        }
        if not unshared:
            return env
        threads, uploads = min(os.cpu_count() or 1, 4), 4  # the settings' defaults
        return {
            **env,
            "COMPRESSION_THREADS": str(threads * logical_jobs),
            "UPLOAD_CONCURRENCY": str(uploads * logical_jobs),
        }

    def prepare(self) -> None:
        b = self.bench
        if not b.cluster.execute(f"SELECT 1 FROM pg_database WHERE datname = '{META_DB}'"):
            b.cluster.create_database(META_DB)
        for command in (["init"], ["catalog", "migrate"]):  # one-time work, not measured
            subprocess.run([PERMAFROST, *command], env=self.env(1), check=True, capture_output=True)

    def backup(self, logical_jobs: int, run: int, unshared: bool = False) -> tuple[Result, str]:
        """unshared: each part with the zstd workers and uploads of a one-job backup."""
        argv = [PERMAFROST, "backup", "--database", self.bench.database, "--json"]
        variant = f"backup j{logical_jobs}" + (" unshared" if unshared else "")
        result = self.measure(variant, run, argv, self.env(logical_jobs, unshared))
        text = (self.bench.work / f"{variant.replace(' ', '_')}.log").read_text()
        record = json.loads(text[text.index("{") :])
        self.dump_bytes = int(record["dump_size_bytes"])
        return result, record["id"]

    def restore(self, variant: str, backup_id: str, jobs: int, run: int) -> Result:
        b = self.bench
        target = f"par_{uuid.uuid4().hex[:8]}"
        argv = [PERMAFROST, "restore", backup_id, "--target-db", target, "--jobs", str(jobs)]
        result = self.measure(variant, run, argv, self.env(1))
        b.cluster.drop_database(target)
        return result

    def forget(self, backup_id: str) -> None:
        """Remove a backup's objects so moto's memory stays flat across runs."""
        client = self.bench.s3.client()
        listing = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{S3_PREFIX}/standard/")
        for item in listing.get("Contents", []):
            if f"/{backup_id}/" in item["Key"]:
                client.delete_object(Bucket=BUCKET, Key=item["Key"])

    def one_run(self, run: int, backups_only: bool = False, unshared: bool = False) -> list[Result]:
        n = self.jobs
        one, single = self.backup(1, run)
        many, parts = self.backup(n, run)
        extra = []
        if unshared:
            extra.append(self.backup(n, run, unshared=True))
            self.forget(extra[0][1])
        if backups_only:
            self.forget(single)
            self.forget(parts)
            return [one, many, *(r for r, _ in extra)]
        results = [
            one,
            many,
            *(r for r, _ in extra),
            self.restore("restore j1", single, 1, run),
            self.restore(f"restore j1 -j{n}", single, n, run),
            self.restore("restore parts j1", parts, 1, run),
            self.restore(f"restore j{n}", parts, n, run),
        ]
        self.forget(single)
        self.forget(parts)
        return results


def report(results: list[Result], dump_bytes: int, jobs: int) -> None:
    by_variant: dict[str, list[Result]] = {}
    for result in results:
        by_variant.setdefault(result.variant, []).append(result)
    runs = len(by_variant["backup j1"])
    print(f"\ndump {dump_bytes / 1e6:.0f} MB; medians of {runs} runs")
    header = (
        f"{'variant':<18} {'wall s':>8} {'cpu s':>8} {'server s':>9} {'s3 s':>7} {'cores':>6}"
        f" {'host':>5}"
        f" {'MB/s':>8} {'tree MB':>8} {'quiet':>6}"
    )
    print(header)
    for variant, rows in by_variant.items():
        wall = statistics.median(r.measured.wall_s for r in rows)
        cpu = statistics.median(r.measured.cpu_s for r in rows)
        server = statistics.median(r.server_cpu_s for r in rows)
        s3 = statistics.median(r.s3_cpu_s for r in rows)
        host = statistics.median(r.measured.host_cpu_s for r in rows)  # the whole machine's
        tree = max(r.measured.tree_mb for r in rows)
        quiet = sum(r.measured.quiet for r in rows)
        print(
            f"{variant:<18} {wall:>8.2f} {cpu:>8.2f} {server:>9.2f} {s3:>7.2f}"
            f" {(cpu + server + s3) / wall:>6.2f} {host / wall:>5.2f}"
            f" {dump_bytes / 1e6 / wall:>8.1f} {tree:>8.1f} {quiet:>4}/{len(rows)}"
        )
    print()
    pairs = [
        (f"backup j{jobs}", "backup j1"),
        (f"backup j{jobs} unshared", "backup j1"),
        (f"restore j{jobs}", "restore parts j1"),
        (f"restore j{jobs}", "restore j1"),
        (f"restore j{jobs}", f"restore j1 -j{jobs}"),
    ]
    for variant, baseline in pairs:
        if variant not in by_variant:
            continue
        ratio = _paired(by_variant[variant], by_variant[baseline])
        verdict = "faster" if ratio < 1 else "NOT faster"
        print(f"{variant} / {baseline}: {ratio:.2f}x (paired median): {verdict}")


def _paired(rows: list[Result], baseline: list[Result]) -> float:
    base = {r.run: r.measured.wall_s for r in baseline}
    return statistics.median(r.measured.wall_s / base[r.run] for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=0.3)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parent / ".data")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quiet-wait", type=float, default=30.0, help="seconds, on a busy host")
    parser.add_argument("--backups-only", action="store_true", help="skip the restores")
    parser.add_argument(
        "--unshared", action="store_true", help="also back up with every part's own zstd workers"
    )
    args = parser.parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    cluster = BenchCluster(args.data_dir / "cluster").start()
    s3 = S3Server()
    try:
        database, size = ensure_database(cluster, args.data_dir, args.size_gb)
        print(f"database {database}: {size / GB:.2f} GB")
        s3.client().create_bucket(Bucket=BUCKET)
        work = args.data_dir / "parallel-work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        key = subprocess.run(
            [PERMAFROST, "keygen"], capture_output=True, text=True, check=True
        ).stdout.split()[0]
        bench = ParallelBench(Bench(cluster, s3, database, work, key), args.jobs, args.quiet_wait)
        bench.prepare()
        results = [
            r
            for run in range(args.runs)
            for r in bench.one_run(run, args.backups_only, args.unshared)
        ]
        report(results, bench.dump_bytes, args.jobs)
    finally:
        s3.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
