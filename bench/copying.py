"""Copy benchmark: a 1 GB backup copied between two S3 servers (streamed) and inside one
(server-side), each against a plain download+upload floor measured in the same run.

    python bench/copying.py [--size-gb 1.0] [--runs 2]

What is copied: a backup whose data object is SIZE of random bytes (incompressible, as an
encrypted object is) with a manifest signed by the repository's key recording its SHA-256:
the copy engine (permafrost/copies/) neither decompresses nor decrypts, so the bytes are what
matters, and building a 1 GB database would take longer than the copies. Two moto S3 servers
on loopback ports (A, the primary; B, another account's), one bucket each, plus a second bucket
on A for the server-side copy.

Variants, each timed end to end, median of --runs (the destination is emptied first):
  floor        the data object alone through the same ranged reads and multipart writer,
               nothing checked and nothing read back (boto3's own GET-body-into-upload_fileobj
               stalled on this machine twice at 1 GB, so it is not the floor here)
  stream       copy_backup A -> B: ranged reads, multipart upload, then the read-back on B
               and its SHA-256 against the manifest (the verification is included)
  server-side  copy_backup A -> A's other bucket: CopyObject / UploadPartCopy, then the same
               read-back; its copy time and its check are also printed apart
Ratios are against the floor of the same run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from permafrost import layout  # noqa: E402
from permafrost.config.copies import CopyDestination  # noqa: E402
from permafrost.config.settings import Settings  # noqa: E402
from permafrost.copies.backup import copy_backup  # noqa: E402
from permafrost.copies.objects import Source, server_side_bucket  # noqa: E402
from permafrost.copies.target import open_target  # noqa: E402
from permafrost.repo import crypto  # noqa: E402
from permafrost.repo.config import open_repository  # noqa: E402
from permafrost.repo.manifest import Kind, Manifest  # noqa: E402
from permafrost.storage import open_storage  # noqa: E402
from permafrost.storage.transfer import ObjectWriter, read_object  # noqa: E402
from tests.services import S3Server  # noqa: E402

MB = 1_000_000
PIECE = 8 * 1024 * 1024


PART_MB = ["16"]  # UPLOAD_PART_SIZE_MB: the part and range size (--part-mb)


def env_for(server: S3Server, bucket: str, key_id: str, key: str) -> dict[str, str]:
    return {
        "STORAGE_URL": f"s3://{bucket}/backups",
        "S3_ENDPOINT_URL": server.url,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": key_id,
        "S3_SECRET_ACCESS_KEY": "testing",
        "S3_PROVIDER": "generic",
        "BACKUP_ENCRYPTION_KEY": key,
        "UPLOAD_PART_SIZE_MB": PART_MB[0],
        "UPLOAD_CONCURRENCY": "4",
    }


def make_backup(settings: Settings, size: int) -> str:
    """A backup of `size` random bytes at the primary; its manifest's key."""
    storage = open_storage(settings.storage)
    repo = open_repository(storage, settings, create=True)
    backup_id = layout.new_backup_id()
    data_key = layout.data_key(repo.prefix, "standard", "bench", backup_id)
    writer = ObjectWriter(storage, data_key, part_size=16 * 1024 * 1024, concurrency=4)
    left = size
    while left:
        piece = os.urandom(min(PIECE, left))
        writer.write(piece)
        left -= len(piece)
    writer.close()
    now = datetime.now(UTC).isoformat()
    manifest = Manifest(
        id=backup_id,
        database="bench",
        kind=Kind.LOGICAL,
        tier="standard",
        started_at=now,
        finished_at=now,
        server_version="-",
        tool_version="-",
        dump_bytes=size,
        compressed_bytes=size,
        stored_bytes=size,
        dump_sha256=writer.sha256,
        stored_sha256=writer.sha256,
        key_id=repo.key.key_id,
        compression={"algorithm": "none"},
        encryption={
            "algorithm": "aes-256-gcm-stream",
            "chunk_size": crypto.CHUNK_SIZE,
            **repo.key.manifest_fields(),
        },
        objects={"data": data_key},
    )
    key = layout.manifest_key(repo.prefix, "standard", "bench", backup_id)
    storage.put(key, manifest.to_json(repo.key))
    return key


def empty(server: S3Server, bucket: str, key_id: str) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key="testing",
    )
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])


def floor(a: S3Server, b: S3Server, key: str, size: int, settings: Settings, far) -> float:  # type: ignore[no-untyped-def]
    """The same ranged reads into the same multipart writer, and nothing else: no manifest, no
    hash compared, no read-back (what a copy costs before it is checked)."""
    source = open_storage(settings.storage)
    target = open_storage(far)
    started = time.monotonic()
    part = int(PART_MB[0]) * 1024 * 1024
    writer = ObjectWriter(target, "floor/data", part_size=part, concurrency=4)
    for block in read_object(source, key, size, part_size=part, concurrency=4):
        writer.write(block)
    writer.close()
    return time.monotonic() - started


def timed_copy(
    settings: Settings, manifest_key: str, destination: CopyDestination
) -> tuple[float, str]:
    storage = open_storage(settings.storage)
    primary = open_repository(storage, settings, create=False)
    target = open_target(settings, primary, destination)
    source = Source(
        storage, settings.storage, server_side_bucket(settings.storage, destination.storage)
    )
    started = time.monotonic()
    done = copy_backup(source, settings.storage.prefix, primary.keyring, manifest_key, target)
    return time.monotonic() - started, str(done.method)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--part-mb", type=int, default=16, help="UPLOAD_PART_SIZE_MB")
    args = parser.parse_args()
    size = int(args.size_gb * 1_000_000_000)
    PART_MB[0] = str(args.part_mb)
    key = crypto.generate_key()
    a, b = S3Server(), S3Server()
    try:
        a.client().create_bucket(Bucket="primary")
        a.client().create_bucket(Bucket="near")
        b.client().create_bucket(Bucket="far")
        settings = Settings.from_env(env_for(a, "primary", "testing", key))
        far = Settings.from_env(env_for(b, "far", "other", key)).storage
        near = Settings.from_env(env_for(a, "near", "testing", key)).storage
        made = time.monotonic()
        manifest_key = make_backup(settings, size)
        print(f"backup of {size / MB:.0f} MB random bytes made in {time.monotonic() - made:.1f} s")
        data_key = manifest_key.rsplit("/", 1)[0] + "/data.pfe"
        times: dict[str, list[float]] = {"floor": [], "stream": [], "server-side": []}
        for run in range(args.runs):
            empty(b, "far", "other")
            times["floor"].append(floor(a, b, data_key, size, settings, far))
            empty(b, "far", "other")
            seconds, method = timed_copy(settings, manifest_key, CopyDestination("far", 1, far))
            assert method == "stream", method
            times["stream"].append(seconds)
            empty(a, "near", "testing")
            seconds, method = timed_copy(settings, manifest_key, CopyDestination("near", 2, near))
            assert method == "server-side", method
            times["server-side"].append(seconds)
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))
        base = statistics.median(times["floor"])
        print(
            f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {size / MB:.0f} MB, "
            f"median of {args.runs} runs, shared noisy machine (2 cores)"
        )
        for name, values in times.items():
            median = statistics.median(values)
            print(
                f"{name:12} {median:7.1f} s  {size / MB / median:7.1f} MB/s  "
                f"x{median / base:.2f} of the floor"
            )
        check = time.monotonic()
        storage = open_storage(near)
        digest = hashlib.sha256()
        for offset in range(0, size, 16 * 1024 * 1024):
            digest.update(
                storage.get(
                    layout.rebase(data_key, "backups", "backups"),
                    offset,
                    min(16 * 1024 * 1024, size - offset),
                )
            )
        print(
            f"(a read-back of the object alone at A: {time.monotonic() - check:.1f} s; "
            "the server-side copy's time is mostly that check)"
        )
    finally:
        a.stop()
        b.stop()


if __name__ == "__main__":
    main()
