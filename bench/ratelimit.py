"""UPLOAD_RATE_LIMIT benchmark: how close an upload held to a rate comes to it, and what the
limit costs when it is far above the link.

    python bench/ratelimit.py [--size-mb 64] [--rates 8,32]

Each variant writes SIZE of random bytes as one object through ObjectWriter (5 MiB parts, 4 in
flight) to a moto S3 server on a loopback port: unlimited (the floor, measured in the same run),
then at each rate (MiB/s) through storage/ratelimit.py. Printed: the time, the achieved rate,
its ratio to the limit (at most 1.0: the token bucket never lets an upload go faster), and the
time's ratio to the floor. The machine is shared and noisy: compare within one run only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from permafrost.config.settings import Settings  # noqa: E402
from permafrost.storage import Storage, open_storage  # noqa: E402
from permafrost.storage.ratelimit import limited  # noqa: E402
from permafrost.storage.transfer import ObjectWriter  # noqa: E402
from tests.services import S3Server  # noqa: E402

MiB = 1024 * 1024


def upload(storage: Storage, data: bytes) -> float:
    started = time.monotonic()
    writer = ObjectWriter(storage, f"bench/{uuid.uuid4().hex}", part_size=5 * MiB, concurrency=4)
    for at in range(0, len(data), MiB):
        writer.write(data[at : at + MiB])
    writer.close()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--rates", default="8,32", help="MiB/s, comma-separated")
    args = parser.parse_args()
    server = S3Server()
    try:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        server.client().create_bucket(Bucket=bucket)
        settings = Settings.from_env(
            {
                "STORAGE_URL": f"s3://{bucket}",
                "S3_ENDPOINT_URL": server.url,
                "S3_ACCESS_KEY_ID": "testing",
                "S3_SECRET_ACCESS_KEY": "testing",
                "S3_PROVIDER": "generic",
            }
        )
        raw = open_storage(settings.storage)
        data = os.urandom(args.size_mb * MiB)
        upload(raw, data[: 8 * MiB])  # warm-up: the client's connections, moto's first upload
        floor = upload(raw, data)
        print(f"{args.size_mb} MiB, 5 MiB parts, 4 in flight, moto on loopback")
        print(f"unlimited   {floor:7.2f} s  {args.size_mb / floor:7.1f} MiB/s  (floor)")
        for rate in (int(r) for r in args.rates.split(",")):
            took = upload(limited(raw, rate * MiB), data)
            achieved = args.size_mb / took
            print(
                f"{rate:4d} MiB/s  {took:7.2f} s  {achieved:7.1f} MiB/s  "
                f"{achieved / rate:.3f} of the limit, {took / floor:.2f}x the floor"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
