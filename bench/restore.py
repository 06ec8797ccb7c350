"""Restore benchmark: `permafrost restore` against the floor, in the same run.

    python bench/restore.py [--size-gb 1.0] [--data-dir bench/.data] [--runs N]

Uses the database bench/backup.py builds (and reuses it from the data directory), backs it up
once to file:// and once to a moto S3 server on a loopback port, then times, alternating:

  floor              zstd -d (a local pg_dump -Fc -Z0 | zstd -3 file) to a temporary file,
                     then pg_restore -j2 into a new database: what a hand restore from a local
                     file does (pg_restore cannot run in parallel from a pipe)
  permafrost->file   permafrost restore ID --target-db NEW --jobs 2 from file://
  permafrost->s3     the same from the S3 server

Each permafrost restore also downloads and checks every byte, restores into a staging database,
counts every table's rows and renames the database into place: all of that is in its time.
Figures are printed as ratios to the floor; the target (within 1.25x) is printed, not asserted.
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
from harness import BUCKET, META_DB, PERMAFROST, BenchCluster, Measurement, ensure_database, measure

from tests.services import S3Server

TARGET_RATIO = 1.25


@dataclass(frozen=True)
class Result:
    variant: str
    measured: Measurement


class RestoreBench:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.compressed = bench.work / "floor.dump.zst"
        self.ids: dict[str, str] = {}
        self.dump_bytes = 0

    def prepare(self) -> None:
        b = self.bench
        if not b.cluster.execute(f"SELECT 1 FROM pg_database WHERE datname = '{META_DB}'"):
            b.cluster.create_database(META_DB)
        script = (
            f"set -o pipefail; {b.pg_dump} -Fc -Z0 {b.pg_dump_args()} "
            f"| zstd -3 -T2 -q -f -o {self.compressed}"
        )
        subprocess.run(["bash", "-c", script], env=b.shell_env(), check=True)
        for variant, url in (("permafrost->file", b.file_url), ("permafrost->s3", b.s3_url)):
            out = subprocess.run(
                [PERMAFROST, "backup", "--database", b.database, "--json"],
                env=b.permafrost_env(url),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            record = json.loads(out)
            self.ids[variant] = record["id"]
            self.dump_bytes = int(record["dump_size_bytes"])

    def floor(self) -> Result:
        b = self.bench
        target = self._fresh_name("floor")
        dump = b.work / "floor.dump"
        pg_restore = b.cluster.bin / "pg_restore"
        script = (
            f"set -e; zstd -d -q -f {self.compressed} -o {dump}; "
            f"{b.cluster.bin / 'createdb'} -h 127.0.0.1 -p {b.cluster.port} -U postgres {target}; "
            f"{pg_restore} -j2 -h 127.0.0.1 -p {b.cluster.port} -U postgres "
            f"-d {target} {dump}; rm -f {dump}"
        )
        measured = measure(["bash", "-c", script], b.shell_env(), b.work / "floor-restore.log")
        b.cluster.drop_database(target)
        return Result("floor", measured)

    def permafrost(self, variant: str) -> Result:
        b = self.bench
        target = self._fresh_name("pf")
        url = b.file_url if variant == "permafrost->file" else b.s3_url
        argv = [PERMAFROST, "restore", self.ids[variant], "--target-db", target, "--jobs", "2"]
        measured = measure(argv, b.permafrost_env(url), b.work / "permafrost-restore.log")
        b.cluster.drop_database(target)
        return Result(variant, measured)

    def _fresh_name(self, what: str) -> str:
        return f"restore_{what}_{uuid.uuid4().hex[:6]}"


def report(results: list[Result], dump_bytes: int) -> None:
    by_variant: dict[str, list[Measurement]] = {}
    for result in results:
        by_variant.setdefault(result.variant, []).append(result.measured)
    floor = statistics.median(m.wall_s for m in by_variant["floor"])
    print(f"\n{'variant':<18} {'wall s':>8} {'MB/s':>8} {'peak MB':>8} {'x floor':>8}")
    for variant, runs in by_variant.items():
        wall = statistics.median(m.wall_s for m in runs)
        peak = max(m.peak_mb for m in runs)
        print(
            f"{variant:<18} {wall:>8.2f} {dump_bytes / 1e6 / wall:>8.1f} {peak:>8.1f} "
            f"{wall / floor:>8.2f}"
        )
    for variant in ("permafrost->file", "permafrost->s3"):
        ratio = statistics.median(m.wall_s for m in by_variant[variant]) / floor
        verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
        print(f"{verdict}: {variant} within {TARGET_RATIO}x the floor ({ratio:.2f}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parent / ".data")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    cluster = BenchCluster(args.data_dir / "cluster").start()
    s3 = S3Server()
    try:
        database, _ = ensure_database(cluster, args.data_dir, args.size_gb)
        s3.client().create_bucket(Bucket=BUCKET)
        work = args.data_dir / "restore-work"
        shutil.rmtree(work, ignore_errors=True)  # a fresh repository for this run's new key
        work.mkdir()
        key = subprocess.run(
            [PERMAFROST, "keygen"], capture_output=True, text=True, check=True
        ).stdout.strip()
        bench = RestoreBench(Bench(cluster, s3, database, work, key))
        bench.prepare()
        dump_bytes = bench.dump_bytes
        results = []
        for _ in range(args.runs):
            results.append(bench.floor())
            results.append(bench.permafrost("permafrost->file"))
            results.append(bench.permafrost("permafrost->s3"))
        report(results, dump_bytes)
    finally:
        s3.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
