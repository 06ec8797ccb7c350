"""Restore benchmark: `permafrost restore` against the floors, in the same run.

    python bench/restore.py [--size-gb 1.0] [--data-dir bench/.data] [--runs N] [--quiet-wait S]
                            [--streamed-only]

Uses the database bench/backup.py builds (and reuses it from the data directory), backs it up
once to a moto S3 server on a loopback port, then times, alternating:

  floor              zstd -d < (a local pg_dump -Fc -Z0 | zstd -3 file) | pg_restore -d NEW:
                     the streaming floor, what a hand restore from a local file does fastest
  floor-file-j2      zstd -d to a temporary file, then pg_restore -j2 from it
  permafrost->s3     permafrost restore ID --target-db NEW from the S3 server: one job, so it
                     streams from the bucket into pg_restore with no temporary file
  permafrost->s3-j2  the same with --jobs 2: downloaded to a temporary file, then pg_restore -j2

Each permafrost restore also downloads and checks every byte, restores into a staging database,
counts every table's rows and renames the database into place: all of that is in its time.
Peak memory is GNU time's largest single process (peak MB) and the sampled sum over the process
tree (tree MB, pg_restore included). Figures are printed as ratios to the floor; the target
(within 1.10x, peak under 200 MB) is printed, not asserted.
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

TARGET_RATIO = 1.10
TARGET_PEAK_MB = 200
S3_VARIANTS = {"permafrost->s3": [], "permafrost->s3-j2": ["--jobs", "2"]}


@dataclass(frozen=True)
class Result:
    variant: str
    measured: Measurement


class RestoreBench:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.compressed = bench.work / "floor.dump.zst"
        self.backup_id = ""
        self.quiet_wait = 120.0  # seconds to wait for a quiet machine before each measurement
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
        for command in (["init"], ["catalog", "migrate"]):  # one-time work, not measured
            subprocess.run(
                [PERMAFROST, *command],
                env=b.permafrost_env(b.s3_url),
                check=True,
                capture_output=True,
            )
        out = subprocess.run(
            [PERMAFROST, "backup", "--database", b.database, "--json"],
            env=b.permafrost_env(b.s3_url),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        record = json.loads(out)
        self.backup_id = record["id"]
        self.dump_bytes = int(record["dump_size_bytes"])

    def floor(self) -> Result:
        """zstd -d < file | pg_restore -d NEW: the streaming floor."""
        b = self.bench
        target = self._fresh_name("floor")
        script = (
            f"set -eo pipefail; {self._createdb(target)}; zstd -d -q < {self.compressed} "
            f"| {b.cluster.bin / 'pg_restore'} {self._connect(target)}"
        )
        measured = measure(
            ["bash", "-c", script], b.shell_env(), b.work / "floor-restore.log", self.quiet_wait
        )
        b.cluster.drop_database(target)
        return Result("floor", measured)

    def floor_file(self) -> Result:
        """zstd -d to a temporary file, then pg_restore -j2 from it."""
        b = self.bench
        target = self._fresh_name("floorfile")
        dump = b.work / "floor.dump"
        script = (
            f"set -e; zstd -d -q -f {self.compressed} -o {dump}; {self._createdb(target)}; "
            f"{b.cluster.bin / 'pg_restore'} -j2 {self._connect(target)} {dump}; rm -f {dump}"
        )
        measured = measure(
            ["bash", "-c", script], b.shell_env(), b.work / "floor-file.log", self.quiet_wait
        )
        b.cluster.drop_database(target)
        return Result("floor-file-j2", measured)

    def permafrost(self, variant: str) -> Result:
        b = self.bench
        target = self._fresh_name("pf")
        argv = [PERMAFROST, "restore", self.backup_id, "--target-db", target]
        log = b.work / "permafrost-restore.log"
        measured = measure(
            argv + S3_VARIANTS[variant], b.permafrost_env(b.s3_url), log, self.quiet_wait
        )
        streamed = "no temporary file" in log.read_text()
        if streamed != (variant == "permafrost->s3"):
            sys.exit(f"{variant}: expected streamed={not streamed}, see {log}")
        b.cluster.drop_database(target)
        return Result(variant, measured)

    def _createdb(self, target: str) -> str:
        c = self.bench.cluster
        return f"{c.bin / 'createdb'} -h 127.0.0.1 -p {c.port} -U postgres {target}"

    def _connect(self, target: str) -> str:
        c = self.bench.cluster
        return f"-h 127.0.0.1 -p {c.port} -U postgres -d {target}"

    def _fresh_name(self, what: str) -> str:
        return f"restore_{what}_{uuid.uuid4().hex[:6]}"


def report(results: list[Result], dump_bytes: int) -> None:
    by_variant: dict[str, list[Measurement]] = {}
    for result in results:
        by_variant.setdefault(result.variant, []).append(result.measured)
    floor = statistics.median(m.wall_s for m in by_variant["floor"])
    print(f"dump {dump_bytes / 1e6:.0f} MB; medians of {len(by_variant['floor'])} runs")
    print(
        f"\n{'variant':<18} {'wall s':>8} {'MB/s':>8} {'peak MB':>8} {'tree MB':>8} {'x floor':>8}"
    )
    for variant, runs in by_variant.items():
        wall = statistics.median(m.wall_s for m in runs)
        peak = max(m.peak_mb for m in runs)
        tree = max(m.tree_mb for m in runs)
        print(
            f"{variant:<18} {wall:>8.2f} {dump_bytes / 1e6 / wall:>8.1f} {peak:>8.1f} "
            f"{tree:>8.1f} {wall / floor:>8.2f}"
        )
    runs = by_variant["permafrost->s3"]
    paired = [m.wall_s / f.wall_s for m, f in zip(runs, by_variant["floor"], strict=True)]
    print("paired ratios, permafrost->s3 / floor of the same round:", _ratios(paired))
    ratio = statistics.median(m.wall_s for m in runs) / floor
    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    print(f"{verdict}: permafrost->s3 (streamed) within {TARGET_RATIO}x the floor ({ratio:.2f}x)")
    peak = max(m.tree_mb for m in runs)
    verdict = "PASS" if peak < TARGET_PEAK_MB else "FAIL"
    print(f"{verdict}: permafrost->s3 peak memory (tree) under {TARGET_PEAK_MB} MB ({peak:.0f} MB)")


def _ratios(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values) + f" (median {statistics.median(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parent / ".data")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="seconds, on a busy host")
    parser.add_argument(
        "--streamed-only",
        action="store_true",
        help="time only the floor and the streamed restore (half the run, for paired ratios)",
    )
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
        bench.quiet_wait = args.quiet_wait
        bench.prepare()
        dump_bytes = bench.dump_bytes
        results = []
        for _ in range(args.runs):
            results.append(bench.floor())
            results.append(bench.permafrost("permafrost->s3"))
            if not args.streamed_only:
                results.append(bench.floor_file())
                results.append(bench.permafrost("permafrost->s3-j2"))
        report(results, dump_bytes)
    finally:
        s3.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
