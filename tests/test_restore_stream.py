"""A restore that streams from the bucket into pg_restore (one job, the default): every row comes
back with no temporary file, and a damaged, truncated or unreadable object is refused as cleanly
as when the dump was downloaded first (nothing renamed, the staging database dropped, the
existing target untouched, one line on stderr). The temporary-file path (--jobs 2) still works.

One backup of a few MiB (several 1 MiB chunks) serves the whole module; each refusal damages
the stored object or its manifest and puts the original back afterwards.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from permafrost.repo import crypto
from permafrost.repo.manifest import _from_body, parse
from tests.conftest import KEY, PERMAFROST, bucket_env, make_sample_database, run, unique
from tests.helpers import flip_byte, get_object, loads, put_object, table_digest
from tests.services import Cluster, S3Server

# About 12 MB of table that compresses about twofold: a stored object of several 1 MiB chunks.
BLOB = (
    "CREATE TABLE blob AS SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text)"
    " AS m FROM generate_series(1, 120000) g;"
)


@dataclass(frozen=True)
class Stored:
    env: dict[str, str]
    source: str
    existing: str  # a target that exists, and must be left as it is by every refusal
    data_key: str
    manifest_key: str
    bucket: str


@pytest.fixture(scope="module")
def stored(pg: Cluster, s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    bucket = unique("pf-stream").replace("_", "-")
    s3.client().create_bucket(Bucket=bucket)
    source = make_sample_database(pg, extra_sql=BLOB)
    metadata = pg.create_database(unique("meta"))
    existing = pg.create_database(unique("existing"))
    pg.execute("CREATE TABLE keep_me (v text); INSERT INTO keep_me VALUES ('precious')", existing)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path_factory.mktemp("home")),
        "DATABASE_URL": pg.url(source),
        "METADATA_DATABASE_URL": pg.url(metadata),
        **bucket_env(s3, bucket),
        "UPLOAD_PART_SIZE_MB": "5",
    }
    record = loads(run(env, "backup", "--json").stdout)
    shown = loads(run(env, "show", record["id"], "--json").stdout)
    assert shown["manifest"]["stored_bytes"] > 4 * 1024 * 1024  # several chunks
    yield Stored(
        env, source, existing, shown["manifest"]["objects"]["data"], shown["manifest_key"], bucket
    )
    for database in (source, metadata, existing):
        pg.drop_database(database)


def databases(pg: Cluster) -> set[str]:
    return {row[0] for row in pg.execute("SELECT datname FROM pg_database")}


def _limit_file_size() -> None:
    """No file above 1 MiB: a restore that wrote the dump to disk would fail (EFBIG)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))


def test_a_streamed_restore_brings_every_row_back_without_a_temporary_file(
    pg: Cluster, stored: Stored
) -> None:
    target = unique("streamed")
    result = subprocess.run(
        [PERMAFROST, "restore", "latest", "--target-db", target],
        env=stored.env,
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "no temporary file" in result.stdout
    assert table_digest(pg, target) == table_digest(pg, stored.source)
    assert not [d for d in databases(pg) if "_pfrestore_" in d]
    pg.drop_database(target)


def test_the_temporary_file_path_still_restores_every_row(pg: Cluster, stored: Stored) -> None:
    target = unique("fromfile")
    result = run(stored.env, "restore", "latest", "--target-db", target, "--jobs", "2")
    assert "pg_restore -j 2" in result.stdout and "no temporary file" not in result.stdout
    assert table_digest(pg, target) == table_digest(pg, stored.source)
    pg.drop_database(target)


def _refused(pg: Cluster, stored: Stored, env: dict[str, str], code: int) -> str:
    """Restore over the existing target; it must be refused and leave everything as it was."""
    result = run(
        env,
        "restore",
        "latest",
        "--target-db",
        stored.existing,
        "--drop-existing",
        "--yes",
        "--no-safety-backup",
        check=False,
    )
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert pg.execute("SELECT v FROM keep_me", stored.existing) == [("precious",)]
    assert not [d for d in databases(pg) if "_pfrestore_" in d]
    return result.stderr


@pytest.mark.parametrize("where", [0.10, 0.50, 0.99])
def test_a_corrupted_chunk_kills_the_stream_and_renames_nothing(
    pg: Cluster, s3: S3Server, stored: Stored, where: float
) -> None:
    original = get_object(s3, stored.bucket, stored.data_key)
    put_object(s3, stored.bucket, stored.data_key, flip_byte(original, int(len(original) * where)))
    try:
        stderr = _refused(pg, stored, stored.env, 5)
    finally:
        put_object(s3, stored.bucket, stored.data_key, original)
    assert "failed authentication" in stderr or "damaged" in stderr


def test_a_truncated_object_is_refused(pg: Cluster, s3: S3Server, stored: Stored) -> None:
    original = get_object(s3, stored.bucket, stored.data_key)
    put_object(s3, stored.bucket, stored.data_key, original[: len(original) // 2])
    try:
        stderr = _refused(pg, stored, stored.env, 5)
    finally:
        put_object(s3, stored.bucket, stored.data_key, original)
    assert "truncated" in stderr


def test_a_truncated_object_whose_manifest_agrees_is_refused_mid_stream(
    pg: Cluster, s3: S3Server, stored: Stored
) -> None:
    """The size check passes (the re-signed manifest names the shorter size): only the missing
    last chunk, seen once the stream has reached pg_restore, tells."""
    data = get_object(s3, stored.bucket, stored.data_key)
    raw = get_object(s3, stored.bucket, stored.manifest_key)
    body = parse(raw, None, "m").body()
    body["stored_bytes"] = len(data) * 3 // 4
    key = crypto.MasterKey(crypto.raw_key(KEY))  # type: ignore[arg-type]
    put_object(s3, stored.bucket, stored.manifest_key, _from_body(body).to_json(key))
    put_object(s3, stored.bucket, stored.data_key, data[: body["stored_bytes"]])
    try:
        _refused(pg, stored, stored.env, 5)
    finally:
        put_object(s3, stored.bucket, stored.data_key, data)
        put_object(s3, stored.bucket, stored.manifest_key, raw)


def test_a_wrong_key_is_refused(pg: Cluster, stored: Stored) -> None:
    wrong = {**stored.env, "BACKUP_ENCRYPTION_KEY": crypto.generate_key()}
    _refused(pg, stored, wrong, 4)
