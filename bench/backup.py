"""Backup benchmark: Permafrost against the floor and against what container images do.

    python bench/backup.py [--size-gb 1.0] [--data-dir bench/.data] [--keep] [--runs N]

Builds (or, with a marker file from an earlier `--keep` run, reuses) a database of the chosen
size in a PostgreSQL cluster under the data directory, starts one moto S3 server on a loopback
port, and times, alternating between them:

  floor           pg_dump -Fc -Z0 | zstd -3 -T2 > file
  container->s3   pg_dump -Fc (its default gzip) | a single-stream boto3 upload_fileobj, as
                  `aws s3 cp - s3://...` in most backup container images
  permafrost->file  permafrost backup to file://
  permafrost->s3    permafrost backup to the same moto server

What is measured, for each variant (each command runs under GNU time, /usr/bin/time):
  wall     seconds from spawning the command to reaping it (median of --runs);
  cpu      user + system seconds of the command and every descendant it reaped (wait4 rusage);
           the PostgreSQL backend and the S3 server are not descendants and are not counted;
  host     busy CPU seconds of the whole machine meanwhile (/proc/stat): backend and moto too;
  peak     GNU time's %M, the ru_maxrss of the command: Linux reports the maximum of that
           process and of every descendant it waited for, so this is the peak of the single
           largest process of the pipeline (for permafrost: the Python process, not pg_dump);
  tree     the largest sum of RSS over the whole process tree, sampled every 0.2 s from /proc
           (shared pages count once per process, so this is an upper bound);
  paired   the median over runs of (wall / the floor's wall in the same run).

Each command starts only once the machine is quiet (under 0.3 busy cores for a second), and
the order of the variants rotates from run to run; the time targets are judged on paired
ratios, because on a shared VM the same work can take twice as long a few minutes later.
Units are decimal: MB = 10^6 bytes, GB = 10^9 bytes (the database size is pg_database_size).
The targets are printed as PASS/FAIL lines, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness import (
    BUCKET,
    GB,
    GNU_TIME,
    MB,
    META_DB,
    PERMAFROST,
    ROOT,
    S3_PREFIX,
    BenchCluster,
    Sample,
    database_name,
    ensure_database,
    measure,
)

from tests.services import PASSWORD, SUPERUSER, S3Server, pg_bin

FILE_TARGET_RATIO = 1.3
RSS_TARGET_MB = 200.0

# --- the variants ---------------------------------------------------------------------------

UPLOADER = '''"""stdin to one S3 object in a single stream, as `aws s3 cp - s3://B/KEY` does."""
import os
import sys

import boto3

client = boto3.client(
    "s3",
    endpoint_url=os.environ["S3_ENDPOINT_URL"],
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
client.upload_fileobj(sys.stdin.buffer, sys.argv[1], sys.argv[2])
'''


@dataclass
class Bench:
    """Everything the variants need: the cluster, the S3 server, and where to put things."""

    cluster: BenchCluster
    s3: S3Server
    database: str
    work: Path
    key: str

    @property
    def pg_dump(self) -> str:
        return str(self.cluster.bin / "pg_dump")

    def pg_dump_args(self) -> str:
        # Password authentication over TCP, the way permafrost connects.
        return f"-h 127.0.0.1 -p {self.cluster.port} -U {SUPERUSER} -d {self.database}"

    def shell_env(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.work),
            "PGPASSWORD": PASSWORD,
            "S3_ENDPOINT_URL": self.s3.url,
        }

    def permafrost_env(self, storage_url: str) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.work),
            "DATABASE_URL": self.cluster.url(self.database),
            "METADATA_DATABASE_URL": self.cluster.url(META_DB),
            "STORAGE_URL": storage_url,
            "S3_ENDPOINT_URL": self.s3.url,
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY_ID": "testing",
            "S3_SECRET_ACCESS_KEY": "testing",
            "S3_PROVIDER": "generic",
            "BACKUP_ENCRYPTION_KEY": self.key,
        }

    @property
    def file_root(self) -> Path:
        return self.work / "repository"

    @property
    def file_url(self) -> str:
        return f"file://{self.file_root}"

    @property
    def s3_url(self) -> str:
        return f"s3://{BUCKET}/{S3_PREFIX}"

    # Each variant returns the bytes it stored, then removes them so disk and moto's memory
    # stay flat across runs.

    def floor(self, run: int) -> Sample:
        target = self.work / "floor.dump.zst"
        script = (
            f"set -o pipefail; {self.pg_dump} -Fc -Z0 {self.pg_dump_args()}"
            f" | zstd -3 -T2 -q > {target}"
        )
        return self._sample(
            "floor",
            run,
            ["bash", "-c", script],
            self.shell_env(),
            target.unlink,
            size=lambda: target.stat().st_size,
        )

    def container(self, run: int) -> Sample:
        uploader = self.work / "uploader.py"
        uploader.write_text(UPLOADER)
        key = f"container/{self.database}-{run}.dump"
        script = (
            f"set -o pipefail; {self.pg_dump} -Fc {self.pg_dump_args()}"
            f" | {sys.executable} {uploader} {BUCKET} {key}"
        )
        client = self.s3.client()
        return self._sample(
            "container->s3",
            run,
            ["bash", "-c", script],
            self.shell_env(),
            lambda: client.delete_object(Bucket=BUCKET, Key=key),
            size=lambda: int(client.head_object(Bucket=BUCKET, Key=key)["ContentLength"]),
        )

    def permafrost_file(self, run: int) -> Sample:
        return self._permafrost("permafrost->file", run, self.file_url, self._clear_file)

    def permafrost_s3(self, run: int) -> Sample:
        return self._permafrost("permafrost->s3", run, self.s3_url, self._clear_s3)

    def _permafrost(self, variant: str, run: int, url: str, clear: Callable[[], None]) -> Sample:
        argv = [PERMAFROST, "backup", "--database", self.database, "--json"]
        log = self.work / f"{variant.replace('>', '')}.log"
        measured = measure(argv, self.permafrost_env(url), log)
        # --json prints the record on stdout; stderr (merged) may carry warnings before it.
        text = log.read_text()
        record = json.loads(text[text.index("{") :])
        clear()
        return Sample(
            **asdict(measured), variant=variant, run=run, output_bytes=record["size_bytes"]
        )

    def _sample(
        self,
        variant: str,
        run: int,
        argv: list[str],
        env: dict[str, str],
        clear: Callable[[], object],
        size: Callable[[], int],
    ) -> Sample:
        log = self.work / f"{variant.replace('>', '')}.log"
        measured = measure(argv, env, log)
        stored = size()
        clear()
        return Sample(**asdict(measured), variant=variant, run=run, output_bytes=stored)

    def _clear_file(self) -> None:
        # The repository config (permafrost.json) stays: only the backups go.
        for tier in ("standard", "compliance"):
            shutil.rmtree(self.file_root / tier, ignore_errors=True)

    def _clear_s3(self) -> None:
        client = self.s3.client()
        listing = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{S3_PREFIX}/standard/")
        for item in listing.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])

    def variants(self) -> list[Callable[[int], Sample]]:
        return [self.floor, self.container, self.permafrost_file, self.permafrost_s3]


# --- preparing and running ------------------------------------------------------------------


def prepare(bench: Bench) -> int:
    """Repositories, catalog, and a warm cache; returns the size of the uncompressed dump."""
    bench.s3.client().create_bucket(Bucket=BUCKET)
    if not bench.cluster.execute(f"SELECT 1 FROM pg_database WHERE datname = '{META_DB}'"):
        bench.cluster.create_database(META_DB)
    # One-time work (repository creation, catalog migrations) is not what is being measured.
    for url in (bench.file_url, bench.s3_url):
        subprocess.run(
            [PERMAFROST, "init"], env=bench.permafrost_env(url), check=True, capture_output=True
        )
    subprocess.run(
        [PERMAFROST, "catalog", "migrate"],
        env=bench.permafrost_env(bench.file_url),
        check=True,
        capture_output=True,
    )
    print("warming the cache with one unmeasured pg_dump -Fc -Z0 ...", flush=True)
    proc = subprocess.Popen(
        [bench.pg_dump, "-Fc", "-Z0", *bench.pg_dump_args().split()],
        env=bench.shell_env(),
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    size = 0
    while block := proc.stdout.read(1024 * 1024):
        size += len(block)
    if proc.wait() != 0:
        sys.exit("the warm-up pg_dump failed")
    return size


def run_all(bench: Bench, runs: int) -> list[Sample]:
    samples = []
    variants = bench.variants()
    for run in range(1, runs + 1):
        # Rotate the order each run, so no variant always follows the same neighbour.
        shift = (run - 1) % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            sample = variant(run)
            samples.append(sample)
            print(
                f"  run {run} {sample.variant:<17} {sample.wall_s:7.2f} s  cpu {sample.cpu_s:5.2f}"
                f"  host {sample.host_cpu_s:5.2f}  peak {sample.peak_mb:6.1f} MB"
                f"  tree {sample.tree_mb:6.1f} MB",
                flush=True,
            )
    return samples


# --- reporting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    variant: str
    wall_s: float
    wall_min: float
    wall_max: float
    cpu_s: float
    host_cpu_s: float
    peak_mb: float
    tree_mb: float
    output_mb: float
    paired: float  # median over runs of (this variant's wall / the floor's wall in that run)


def paired_ratio(samples: list[Sample], variant: str, baseline: str) -> float:
    """The median of per-run ratios: runs a few seconds apart share the machine's mood.

    On a shared VM the same work can take twice as long from one minute to the next, which
    a ratio of medians taken over minutes absorbs badly; variants timed back to back do not.
    """
    walls = {(s.variant, s.run): s.wall_s for s in samples}
    runs = sorted({s.run for s in samples})
    return statistics.median(walls[variant, run] / walls[baseline, run] for run in runs)


def summarise(samples: list[Sample]) -> dict[str, Summary]:
    out = {}
    for variant in dict.fromkeys(s.variant for s in samples):
        mine = [s for s in samples if s.variant == variant]
        walls = [s.wall_s for s in mine]
        out[variant] = Summary(
            variant,
            statistics.median(walls),
            min(walls),
            max(walls),
            statistics.median(s.cpu_s for s in mine),
            statistics.median(s.host_cpu_s for s in mine),
            max(s.peak_mb for s in mine),  # the worst run: a memory target is about the peak
            max(s.tree_mb for s in mine),
            statistics.median(s.output_bytes for s in mine) / MB,
            paired_ratio(samples, variant, "floor"),
        )
    return out


def print_table(summary: dict[str, Summary], dump_bytes: int) -> None:
    floor = summary["floor"].wall_s
    print()
    print(
        f"{'variant':<17} {'wall s':>7} {'(min-max)':>13} {'MB/s':>7} {'cpu s':>7}"
        f" {'host s':>7} {'peak MB':>8} {'tree MB':>8} {'out MB':>8} {'x floor':>8} {'paired':>7}"
    )
    for s in summary.values():
        print(
            f"{s.variant:<17} {s.wall_s:7.2f} {f'({s.wall_min:.1f}-{s.wall_max:.1f})':>13}"
            f" {dump_bytes / MB / s.wall_s:7.1f} {s.cpu_s:7.2f} {s.host_cpu_s:7.2f}"
            f" {s.peak_mb:8.1f} {s.tree_mb:8.1f} {s.output_mb:8.1f} {s.wall_s / floor:8.2f}"
            f" {s.paired:7.2f}"
        )
    print(
        f"(MB/s is of the uncompressed dump, {dump_bytes / MB:.0f} MB; wall, cpu and host are"
        " medians; host is all CPU the machine used meanwhile, PostgreSQL and moto included;"
        " x floor is the ratio of medians, paired the median of per-run ratios)"
    )


def print_noise(samples: list[Sample]) -> None:
    busy = [s for s in samples if not s.quiet]
    if busy:
        print(f"WARNING: {len(busy)} of {len(samples)} runs started while the machine was busy")


def check_targets(
    samples: list[Sample], summary: dict[str, Summary], smaller: dict[str, float] | None
) -> list[str]:
    """The issue's targets; the time ones are judged on paired per-run ratios."""
    floor, container = summary["floor"], summary["container->s3"]
    to_file, to_s3 = summary["permafrost->file"], summary["permafrost->s3"]
    peak = max(to_file.peak_mb, to_s3.peak_mb)
    versus_container = paired_ratio(samples, "permafrost->s3", "container->s3")
    lines = [
        _verdict(
            to_file.paired <= FILE_TARGET_RATIO,
            f"permafrost->file within {FILE_TARGET_RATIO}x the floor: {to_file.paired:.2f}x"
            f" paired ({to_file.wall_s / floor.wall_s:.2f}x of medians,"
            f" {to_file.wall_s:.2f} s vs {floor.wall_s:.2f} s)",
        ),
        _verdict(
            versus_container < 1,
            f"permafrost->s3 faster than container->s3: {versus_container:.2f}x paired"
            f" ({to_s3.wall_s:.2f} s vs {container.wall_s:.2f} s)",
        ),
        _verdict(
            peak < RSS_TARGET_MB,
            f"permafrost peak RSS under {RSS_TARGET_MB:.0f} MB: {peak:.1f} MB "
            f"(file {to_file.peak_mb:.1f}, s3 {to_s3.peak_mb:.1f})",
        ),
    ]
    if smaller is not None:
        # "The same at three times the size": the line above checks the 200 MB here; this one
        # checks that memory does not grow with the size, allowing run-to-run noise (10%).
        growth = peak - smaller["peak_mb"]
        lines.append(
            _verdict(
                growth <= 0.1 * smaller["peak_mb"],
                f"peak RSS does not grow with size: {peak:.1f} MB here vs"
                f" {smaller['peak_mb']:.1f} MB at {smaller['size_gb']:g} GB ({growth:+.1f} MB)",
            )
        )
    return lines


def _verdict(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}  {text}"


def machine() -> dict[str, str]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    zstd = subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout.strip()
    pg = subprocess.run(
        [str(pg_bin() / "pg_dump"), "--version"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpus": str(os.cpu_count()),
        "memory_gib": f"{memory / 2**30:.1f}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pg_dump": pg,
        "zstd": zstd,
    }


def save_results(
    data_dir: Path, size_gb: float, db_bytes: int, dump_bytes: int, samples: list[Sample]
) -> None:
    summary = summarise(samples)
    peak = max(summary["permafrost->file"].peak_mb, summary["permafrost->s3"].peak_mb)
    results = data_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{database_name(size_gb)}.json"
    document = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "size_gb": size_gb,
        "database_bytes": db_bytes,
        "dump_bytes": dump_bytes,
        "machine": machine(),
        "peak_mb": peak,
        "summary": {k: asdict(v) for k, v in summary.items()},
        "samples": [asdict(s) for s in samples],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {path}")


def smaller_results(data_dir: Path, size_gb: float) -> dict[str, float] | None:
    """The peak of a saved run at a third of this size, for the "same at 3x" target."""
    path = data_dir / "results" / f"{database_name(size_gb / 3)}.json"
    if not path.exists():
        return None
    document = json.loads(path.read_text())
    return {"peak_mb": float(document["peak_mb"]), "size_gb": float(document["size_gb"])}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-gb", type=float, default=1.0, help="database size (default 1)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "bench" / ".data")
    parser.add_argument("--keep", action="store_true", help="keep the cluster for the next run")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per variant")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(GNU_TIME).exists():
        sys.exit(f"{GNU_TIME} is missing: apt-get install time (it measures peak RSS)")
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(" | ".join(f"{k} {v}" for k, v in info.items()))
    cluster = BenchCluster(data_dir / "cluster").start()
    s3: S3Server | None = None
    work = data_dir / "work"
    try:
        database, db_bytes = ensure_database(cluster, data_dir, args.size_gb)
        s3 = S3Server()
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        key = subprocess.run(
            [PERMAFROST, "keygen"], capture_output=True, text=True, check=True
        ).stdout.split()[0]
        bench = Bench(cluster, s3, database, work, key)
        dump_bytes = prepare(bench)
        print(f"database {db_bytes / GB:.2f} GB, dump -Fc -Z0 {dump_bytes / MB:.0f} MB")
        samples = run_all(bench, args.runs)
    finally:
        if s3 is not None:
            s3.stop()
        shutil.rmtree(work, ignore_errors=True)
        cluster.stop()
        if not args.keep:
            shutil.rmtree(cluster.root, ignore_errors=True)
            for marker in data_dir.glob("bench_*mb.json"):
                marker.unlink()
    summary = summarise(samples)
    print_table(summary, dump_bytes)
    print_noise(samples)
    print()
    for line in check_targets(samples, summary, smaller_results(data_dir, args.size_gb)):
        print(line)
    save_results(data_dir, args.size_gb, db_bytes, dump_bytes, samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
