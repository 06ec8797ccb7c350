"""Object lock's cost on the write path: one object uploaded with and without OBJECT_LOCK.

    python bench/object_lock.py [--size-mb 128] [--runs 5]

Starts one moto S3 server on a loopback port, makes a bucket with object lock and one without,
and uploads the same random bytes through Permafrost's multipart writer (8 MiB parts, 4 in
flight) into each, alternating: `plain` (no lock) and `locked` (OBJECT_LOCK=compliance: the lock
on CreateMultipartUpload, a Content-MD5 per part, the lock read back after completion). Prints
the median seconds of each and the median of the paired ratios locked/plain (the two uploads
of one run are next to each other in time, so the machine's noise cancels more than in the
medians). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from permafrost.config.settings import Settings
from permafrost.storage import open_storage
from permafrost.storage.lock import policy
from permafrost.storage.transfer import ObjectWriter
from tests.services import S3Server

PART = 8 * 1024 * 1024


def env(s3: S3Server, bucket: str, lock: str) -> dict[str, str]:
    return {
        "STORAGE_URL": f"s3://{bucket}/bench",
        "S3_ENDPOINT_URL": s3.url,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "S3_PROVIDER": "generic",
        "OBJECT_LOCK": lock,
    }


def upload(values: dict[str, str], key: str, data: bytes) -> float:
    settings = Settings.from_env(values)
    storage = open_storage(settings.storage, policy(settings))
    started = time.perf_counter()
    writer = ObjectWriter(storage, key, part_size=PART, concurrency=4)
    for offset in range(0, len(data), 1024 * 1024):
        writer.write(data[offset : offset + 1024 * 1024])
    writer.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    data = os.urandom(args.size_mb * 1024 * 1024)
    s3 = S3Server()
    try:
        client = s3.client()
        client.create_bucket(Bucket="plain")
        client.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
        plain, locked, ratios = [], [], []
        for run in range(args.runs):
            key = f"bench/wal/main/00000001/{run:024X}.pfe"  # the wal tier: locked 30 days
            order = [("plain", "off"), ("locked", "compliance")]
            times = {}
            for bucket, lock in order if run % 2 == 0 else reversed(order):
                times[bucket] = upload(env(s3, bucket, lock), key, data)
            plain.append(times["plain"])
            locked.append(times["locked"])
            ratios.append(times["locked"] / times["plain"])
            print(f"run {run + 1}: plain {times['plain']:.2f} s, locked {times['locked']:.2f} s")
        print(
            f"{args.size_mb} MiB, {args.runs} runs: plain median {statistics.median(plain):.2f} s, "
            f"locked median {statistics.median(locked):.2f} s, "
            f"paired ratio locked/plain {statistics.median(ratios):.2f}"
        )
    finally:
        s3.stop()


if __name__ == "__main__":
    main()
