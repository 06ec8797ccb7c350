"""Parallel logical backups and restores: LOGICAL_JOBS=1 against 2, in the same run.

    python bench/parallel.py [--size-gb 0.3] [--data-dir bench/.data] [--runs 3] [--jobs 2]
                             [--quiet-wait S]

Uses the database bench/harness.py builds (customers, orders, events; reused from the data
directory), and a moto S3 server on a loopback port. Each run, in this order:

  backup j1        permafrost backup with LOGICAL_JOBS=1: one pg_dump, one object
  backup jN        the same with LOGICAL_JOBS=N (LOGICAL_JOBS_MIN_SIZE_MB=0): the schema part
                   and N data parts, N pg_dump processes in one snapshot
  restore j1       the one-object backup with --jobs 1: streamed into one pg_restore
  restore j1 -jN   the one-object backup with --jobs N: downloaded to a temporary file, then
                   pg_restore -jN (the path that existed before parts)
  restore jN       the backup in parts with --jobs N: pre-data, N data parts streamed into N
                   pg_restore at once, post-data with -jN; no temporary file for the rows

Every restore includes its checks, the staging database, the row counts and the rename. The
ratios are per run (paired), then the median; the machine is shared, so each measurement first
waits (up to --quiet-wait seconds) for the host to be nearly idle and says when it was not.
"""

from __future__ import annotations

import argparse
import json
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


class ParallelBench:
    def __init__(self, bench: Bench, jobs: int, quiet_wait: float) -> None:
        self.bench, self.jobs, self.quiet_wait = bench, jobs, quiet_wait
        self.dump_bytes = 0

    def env(self, logical_jobs: int) -> dict[str, str]:
        return {
            **self.bench.permafrost_env(self.bench.s3_url),
            "LOGICAL_JOBS": str(logical_jobs),
            "LOGICAL_JOBS_MIN_SIZE_MB": "0",
        }

    def prepare(self) -> None:
        b = self.bench
        if not b.cluster.execute(f"SELECT 1 FROM pg_database WHERE datname = '{META_DB}'"):
            b.cluster.create_database(META_DB)
        for command in (["init"], ["catalog", "migrate"]):  # one-time work, not measured
            subprocess.run([PERMAFROST, *command], env=self.env(1), check=True, capture_output=True)

    def backup(self, logical_jobs: int, run: int) -> tuple[Result, str]:
        argv = [PERMAFROST, "backup", "--database", self.bench.database, "--json"]
        log = self.bench.work / f"backup-j{logical_jobs}.log"
        measured = measure(argv, self.env(logical_jobs), log, self.quiet_wait)
        text = log.read_text()
        record = json.loads(text[text.index("{") :])
        self.dump_bytes = int(record["dump_size_bytes"])
        return Result(f"backup j{logical_jobs}", run, measured), record["id"]

    def restore(self, variant: str, backup_id: str, jobs: int, run: int) -> Result:
        b = self.bench
        target = f"par_{uuid.uuid4().hex[:8]}"
        argv = [PERMAFROST, "restore", backup_id, "--target-db", target, "--jobs", str(jobs)]
        log = b.work / f"restore-{variant.replace(' ', '_')}.log"
        measured = measure(argv, self.env(1), log, self.quiet_wait)
        b.cluster.drop_database(target)
        return Result(variant, run, measured)

    def forget(self, backup_id: str) -> None:
        """Remove a backup's objects so moto's memory stays flat across runs."""
        client = self.bench.s3.client()
        listing = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{S3_PREFIX}/standard/")
        for item in listing.get("Contents", []):
            if f"/{backup_id}/" in item["Key"]:
                client.delete_object(Bucket=BUCKET, Key=item["Key"])

    def one_run(self, run: int) -> list[Result]:
        n = self.jobs
        one, single = self.backup(1, run)
        many, parts = self.backup(n, run)
        results = [
            one,
            many,
            self.restore("restore j1", single, 1, run),
            self.restore(f"restore j1 -j{n}", single, n, run),
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
    header = f"{'variant':<18} {'wall s':>8} {'cpu s':>8} {'MB/s':>8} {'tree MB':>8} {'quiet':>6}"
    print(header)
    for variant, rows in by_variant.items():
        wall = statistics.median(r.measured.wall_s for r in rows)
        cpu = statistics.median(r.measured.cpu_s for r in rows)
        tree = max(r.measured.tree_mb for r in rows)
        quiet = sum(r.measured.quiet for r in rows)
        print(
            f"{variant:<18} {wall:>8.2f} {cpu:>8.2f} {dump_bytes / 1e6 / wall:>8.1f} "
            f"{tree:>8.1f} {quiet:>4}/{len(rows)}"
        )
    print()
    pairs = [
        (f"backup j{jobs}", "backup j1"),
        (f"restore j{jobs}", "restore j1"),
        (f"restore j{jobs}", f"restore j1 -j{jobs}"),
    ]
    for variant, baseline in pairs:
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
        results = [r for run in range(args.runs) for r in bench.one_run(run)]
        report(results, bench.dump_bytes, args.jobs)
    finally:
        s3.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
