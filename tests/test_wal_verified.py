"""A WAL segment's PUT is checked from the bucket's answer (its ETag), not read back.

The pusher used to GET every segment it stored and compare it. Now each PUT carries the body's
Content-MD5, which AWS S3, Spaces and MinIO check (a body that differs is refused: BadDigest),
and the answer's ETag, for an object stored whole (and not under a KMS key), is the MD5 the
server computed of what it stored: equal to ours, the segment is checked without a GET; not
equal, it is read back and compared as before. moto (5.2.6) does not check Content-MD5 (nor
x-amz-checksum-sha256: it echoes the value sent), but its ETag is its own MD5 of the stored
bytes, so the ETag comparison is what these tests exercise, over HTTP, through a proxy that
flips a byte of the body on its way.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.errors import IntegrityError
from permafrost.storage import VerifiedPut
from permafrost.wal import ahead
from permafrost.wal import segment as wal
from permafrost.wal.guard import Guard
from permafrost.wal.names import Segment
from tests.conftest import bucket_env
from tests.faults.proxy import FaultProxy, Plan
from tests.services import S3Server

NAME = Segment(1, 7).name()


def test_moto_answers_with_the_md5_of_what_it_stored_whatever_content_md5_said(
    s3: S3Server, bucket: str
) -> None:
    claimed = base64.b64encode(hashlib.md5(b"other bytes").digest()).decode()
    body = b"these bytes"
    answer = s3.client().put_object(Bucket=bucket, Key="k", Body=body, ContentMD5=claimed)
    # AWS would refuse this with BadDigest; moto stores it. Its ETag tells the truth, though.
    assert answer["ETag"].strip('"') == hashlib.md5(body).hexdigest()


@pytest.fixture
def proxy(s3: S3Server) -> FaultProxy:
    server = FaultProxy(s3.url)
    yield server  # type: ignore[misc]
    server.stop()


def test_a_segment_changed_on_the_way_is_caught_and_a_clean_one_needs_no_get(
    s3: S3Server, bucket: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    env = {**bucket_env(s3, bucket), "S3_ENDPOINT_URL": proxy.url, "HOME": str(tmp_path)}
    env["S3_MAX_ATTEMPTS"] = "1"
    ctx = Context(Settings.from_env(env))
    repo = ctx.repository(create=True)
    assert isinstance(repo.storage, VerifiedPut)
    guard = Guard(repo, "main", "test")
    path = tmp_path / NAME
    path.write_bytes(os.urandom(1024 * 1024))

    proxy.set(Plan(fault="flip", rate=1.0, method="PUT", path="/wal/"))
    with pytest.raises(IntegrityError, match="differs from what was written"):
        ahead.store_segment(repo, "main", guard, "fp", path)  # the ETag differed: read back
    assert proxy.injected == {"flip": 1}
    # moto kept the damaged object, which AWS would have refused; another name from here on.
    path = path.rename(tmp_path / Segment(1, 8).name())
    key = wal.wal_key(repo, "main", path.name)

    # Cleanly, it is stored and checked without a GET: every GET would fail here.
    proxy.set(Plan(fault="error500", rate=1.0, method="GET"))
    marker = ahead.store_segment(repo, "main", guard, "fp", path)
    assert proxy.seen == 0  # no GET was sent
    assert marker.stored_bytes == repo.storage.head(key).size
    proxy.clear()
    assert wal.fetch(repo, "main", path.name) == path.read_bytes()
    ctx.close()
