"""SQLite backup benchmark: Permafrost against the floor, and its memory at two file sizes.

    python bench/sqlite.py [--size-gb 1.0] [--data-dir bench/.data] [--runs 3] [--keep]

Builds (or reuses, from an earlier `--keep` run) a SQLite file of the chosen size in the data
directory (WAL mode, rows of text and numbers that compress about as an application's do) and
a second file a quarter of its size, then times, alternating between them:

  floor       sqlite3 app.db ".backup /tmp/x" && zstd -3 -T2 /tmp/x: the sqlite3 CLI's online
              backup into a file, then zstd on it (Debian's `sqlite3` and `zstd`)
  permafrost  permafrost backup --database app.db into file:// (online backup API into a
              temporary file, zstd -3 on 2 threads, AES-256-GCM, SHA-256s, the manifest)

Both copy the file with SQLite's online backup API into the same temporary directory and then
compress it; Permafrost also encrypts, hashes twice and counts every table's rows (on a thread,
while the copy streams). Measured as in bench/backup.py (harness.measure, under GNU time): wall
seconds, CPU seconds, peak RSS of the largest process (%M), and the paired ratio (the median
over runs of permafrost's wall / the floor's wall in the same run). Peak memory is measured at
both sizes: it should not grow with the file. No metadata store: the backup goes to the bucket
and says that the catalog will learn of it later, which is what a run without one does.
Targets are printed as PASS/FAIL lines, not asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
from pathlib import Path

from harness import GB, MB, PERMAFROST, ROOT, Measurement, measure

from permafrost.repo import crypto

TARGET_RATIO = 1.3
KEY = crypto.generate_key()
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
]


def build(path: Path, size: int) -> None:
    """A WAL-mode file of about `size` bytes: orders with text, numbers and a little noise."""
    if path.exists() and path.stat().st_size >= size * 0.95:
        return
    path.unlink(missing_ok=True)
    rng = random.Random(7)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = wal")
        conn.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, email TEXT,"
            " note TEXT, amount REAL, token TEXT)"
        )
        conn.execute("CREATE INDEX orders_customer ON orders (customer)")
        n = 0
        while path.stat().st_size < size:
            batch = [_row(rng, n + i) for i in range(20_000)]
            conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", batch)
            conn.commit()
            n += len(batch)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _row(rng: random.Random, n: int) -> tuple[object, ...]:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))
    return (
        n,
        f"customer {n % 50_000}",
        f"c{n % 50_000}@example.com",
        words,
        round(rng.random() * 1000, 2),
        rng.randbytes(12).hex(),
    )


def floor(app: Path, scratch: Path) -> list[str]:
    copy = scratch / "floor.db"
    return [
        "sh",
        "-c",
        f'rm -f {copy} {copy}.zst && sqlite3 {app} ".backup {copy}" '
        f"&& zstd -3 -T2 -q {copy} -o {copy}.zst && rm -f {copy}",
    ]


def environment(app: Path, bucket: Path, scratch: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "DATABASE_URL": f"sqlite://{app}",
        "STORAGE_URL": f"file://{bucket}",
        "BACKUP_ENCRYPTION_KEY": KEY,  # a `permafrost keygen` key, as production uses
        "COMPRESSION_THREADS": "2",
        "COMPRESSION_LEVEL": "3",
        "LOG_LEVEL": "error",
    }


def main() -> None:
    args = _arguments()
    for program in ("sqlite3", "zstd", "/usr/bin/time"):
        if not shutil.which(program):
            sys.exit(f"{program} is missing: ./setup.sh test installs it")
    data = args.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    big, small = data / "app.db", data / "small" / "app.db"
    small.parent.mkdir(exist_ok=True)
    build(big, int(args.size_gb * GB))
    build(small, int(args.size_gb * GB / 4))
    scratch, bucket = data / "scratch", data / "bucket"
    results: dict[str, list[Measurement]] = {"floor": [], "permafrost": [], "small": []}
    ratios = []
    for run in range(args.runs):
        for variant in ["floor", "permafrost"] if run % 2 == 0 else ["permafrost", "floor"]:
            _fresh(scratch, bucket)
            argv = floor(big, scratch) if variant == "floor" else [PERMAFROST, "backup"]
            m = measure(argv, environment(big, bucket, scratch), scratch.parent / f"{variant}.log")
            results[variant].append(m)
        ratios.append(results["permafrost"][-1].wall_s / results["floor"][-1].wall_s)
        _fresh(scratch, bucket)
        small_env = environment(small, bucket, scratch)
        results["small"].append(measure([PERMAFROST, "backup"], small_env, data / "small.log"))
    _report(args, big, small, results, ratios)
    if not args.keep:
        shutil.rmtree(data)


def _fresh(scratch: Path, bucket: Path) -> None:
    for folder in (scratch, bucket):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)


def _report(
    args: argparse.Namespace,
    big: Path,
    small: Path,
    results: dict[str, list[Measurement]],
    ratios: list[float],
) -> None:
    def median(name: str, field: str) -> float:
        return statistics.median(getattr(m, field) for m in results[name])

    summary = {
        "file_mb": round(big.stat().st_size / MB),
        "small_file_mb": round(small.stat().st_size / MB),
        "sqlite": sqlite3.sqlite_version,
        "runs": args.runs,
        **{
            f"{name}_{field}": round(median(name, field), 2)
            for name in results
            for field in ("wall_s", "cpu_s", "peak_mb")
        },
        "paired_ratio": round(statistics.median(ratios), 3),
    }
    print(json.dumps(summary, indent=2))
    ok = summary["paired_ratio"] <= TARGET_RATIO
    print(f"{'PASS' if ok else 'FAIL'}: wall within {TARGET_RATIO}x of the floor")
    growth = summary["permafrost_peak_mb"] / max(summary["small_peak_mb"], 1)
    flat = growth < 1.25
    print(f"{'PASS' if flat else 'FAIL'}: peak memory flat ({growth:.2f}x for 4x the file)")


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-gb", type=float, default=1.0, help="the file's size (default 1 GB)")
    p.add_argument("--data-dir", type=Path, default=ROOT / "bench" / ".data" / "sqlite")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="keep the files for the next run")
    return p.parse_args()


if __name__ == "__main__":
    main()
