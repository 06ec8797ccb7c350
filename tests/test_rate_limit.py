"""UPLOAD_RATE_LIMIT and COPY_<N>_UPLOAD_RATE_LIMIT: an upload of S bytes at R bytes per second
takes at least S/R seconds, whatever the concurrency of its parts (a lower bound only: a noisy
machine may take longer, never less)."""

from __future__ import annotations

import os
import time
import uuid

from permafrost.config.settings import Settings
from permafrost.storage import open_storage
from permafrost.storage.ratelimit import RateLimitedStorage, limited
from permafrost.storage.transfer import ObjectWriter
from tests.conftest import bucket_env, run
from tests.helpers import get_object, loads
from tests.services import S3Server
from tests.test_copy_restore import copy_env

MiB = 1024 * 1024


def test_concurrent_parts_share_one_budget(s3: S3Server, bucket: str) -> None:
    settings = Settings.from_env({**bucket_env(s3, bucket), "UPLOAD_RATE_LIMIT": "4M"})
    storage = limited(open_storage(settings.storage), settings.copies.upload_rate_limit)
    assert isinstance(storage, RateLimitedStorage)
    data = os.urandom(14 * MiB)
    started = time.monotonic()
    writer = ObjectWriter(storage, "backups/limited.bin", part_size=5 * MiB, concurrency=4)
    for at in range(0, len(data), MiB):
        writer.write(data[at : at + MiB])
    writer.close()
    elapsed = time.monotonic() - started
    assert elapsed >= len(data) / (4 * MiB)  # 3.5 s, with three parts in flight at once
    assert get_object(s3, bucket, "backups/limited.bin") == data


def test_no_limit_is_the_backend_itself(s3: S3Server, bucket: str) -> None:
    settings = Settings.from_env(bucket_env(s3, bucket))
    raw = open_storage(settings.storage)
    assert limited(raw, settings.copies.upload_rate_limit) is raw


def test_a_backup_and_its_copy_keep_to_their_limits(env, s3: S3Server) -> None:
    copy_bucket = f"pf-copy-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=copy_bucket)
    env = {
        **env,
        **copy_env(s3, copy_bucket),
        "UPLOAD_RATE_LIMIT": "8k",
        "COPY_1_UPLOAD_RATE_LIMIT": "4k",
        # other credentials: the copy streams through this host (a server-side copy on the
        # same endpoint and account moves no byte over the link, and is not limited)
        "COPY_1_S3_ACCESS_KEY_ID": "copier",
        "COPY_1_S3_SECRET_ACCESS_KEY": "copier-secret",
    }
    started = time.monotonic()
    backup = loads(run(env, "backup", "--json").stdout)
    took = time.monotonic() - started
    assert backup["size_bytes"] > 16 * 1024  # enough bytes for the bound to mean something
    assert took >= backup["size_bytes"] / (8 * 1024)

    started = time.monotonic()
    out = run(env, "copy", backup["id"]).stdout
    took = time.monotonic() - started
    assert "dr: 1 backups copied and verified" in out
    assert took >= backup["size_bytes"] / (4 * 1024)
