"""A provider that ignores conditional writes (the fault proxy strips `If-None-Match`), and WAL
from another PostgreSQL system, against moto directly and through that proxy.

What a user would check: `init` and `doctor` say whether the bucket honours conditional writes
and permafrost.json records it; a clone of the server pushing a segment of the same name is
refused and the archived bytes stay as they were; another system's segment is refused by its
system identifier with nothing written; a write another writer replaces before it is read back
is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from permafrost.errors import WriteConflict
from permafrost.storage import open_storage
from tests.conftest import KEY, run
from tests.faults.proxy import FaultProxy, Plan
from tests.helpers import get_object, objects
from tests.services import Cluster, S3Server, free_port
from tests.storage.test_contract import s3_settings

VIAS = ["moto", "ignoring-proxy"]
NOT_EXCLUDED = "concurrent writers are not excluded by the provider"


@pytest.fixture(scope="module")
def ignoring(s3: S3Server) -> Iterator[FaultProxy]:
    """A provider that ignores If-None-Match: moto behind a proxy that strips it."""
    proxy = FaultProxy(s3.url)
    proxy.ignore_conditions = True
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    """The archiving server: 1 MiB segments, so a push is cheap."""
    cluster = Cluster("cond-a", initdb_args=("--wal-segsize=1",)).start()
    cluster.execute("CREATE TABLE t (v text)")
    yield cluster
    cluster.destroy()


def bucket_env(endpoint: str, bucket: str, tmp: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp),
        "STORAGE_URL": f"s3://{bucket}/backups",
        "S3_ENDPOINT_URL": endpoint,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "S3_PROVIDER": "generic",
        "BACKUP_ENCRYPTION_KEY": KEY,
    }


@pytest.fixture(params=VIAS)
def via(request: pytest.FixtureRequest, s3: S3Server, tmp_path: Path) -> dict[str, str]:
    """A fresh bucket, reached on moto directly or through the ignoring proxy."""
    bucket = f"pf-cond-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    endpoint = s3.url if request.param == "moto" else request.getfixturevalue("ignoring").url
    return {**bucket_env(endpoint, bucket, tmp_path), "BUCKET": bucket}


def expected_state(env: dict[str, str], s3: S3Server) -> str:
    return "honoured" if env["S3_ENDPOINT_URL"] == s3.url else "not honoured"


def switch(cluster: Cluster, value: str) -> Path:
    """A row written, then the segment holding it completed: its file in pg_wal."""
    cluster.execute(f"INSERT INTO t VALUES ('{value}')")
    name = str(cluster.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0])
    return cluster.data / "pg_wal" / name


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("permafrost: error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_init_and_doctor_probe_record_and_report_conditional_writes(
    via: dict[str, str], s3: S3Server, tmp_path: Path
) -> None:
    state = expected_state(via, s3)
    bucket = via["BUCKET"]
    init = run(via, "init")
    assert f"conditional writes: {state} (" in init.stdout, init.stdout
    config = json.loads(get_object(s3, bucket, "backups/permafrost.json"))
    assert config["conditional_writes"]["state"] == state
    assert objects(s3, bucket) == ["backups/permafrost.json"]  # the probe object is gone

    doctor_env = {**via, "DATABASE_URL": "postgresql://u:p@127.0.0.1:1/x"}  # only the bucket
    report = json.loads(run(doctor_env, "doctor", "--json", check=False).stdout)
    assert report["bucket"]["reachable"] is True
    assert report["bucket"]["conditional_writes"] == state
    assert report["bucket"]["recorded_before"] == state and report["bucket"]["repository"]
    text = run(doctor_env, "doctor", check=False).stdout
    line = next(x for x in text.splitlines() if "conditional writes:" in x)
    assert line.startswith(f"  conditional writes: {state} (")
    assert (NOT_EXCLUDED in line) == (state == "not honoured"), line
    assert objects(s3, bucket) == ["backups/permafrost.json"]


def test_a_repository_from_before_the_probe_is_probed_by_its_next_wal_push(
    server: Cluster, ignoring: FaultProxy, s3: S3Server, tmp_path: Path
) -> None:
    bucket = f"pf-cond-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    env = bucket_env(ignoring.url, bucket, tmp_path)
    run(env, "init")
    config = json.loads(get_object(s3, bucket, "backups/permafrost.json"))
    del config["conditional_writes"]  # as an older Permafrost wrote it
    s3.client().put_object(Bucket=bucket, Key="backups/permafrost.json", Body=json.dumps(config))

    report = json.loads(run(env, "doctor", "--json", check=False).stdout)["bucket"]
    assert (report["recorded_before"], report["conditional_writes"]) == ("unknown", "not honoured")
    s3.client().put_object(Bucket=bucket, Key="backups/permafrost.json", Body=json.dumps(config))
    run(env, "wal-push", str(switch(server, "old repository")))
    config = json.loads(get_object(s3, bucket, "backups/permafrost.json"))
    assert config["conditional_writes"]["state"] == "not honoured"


def clone(cluster: Cluster) -> Cluster:
    """A physical copy of a stopped server: the same system identifier, the same WAL position
    (a restored copy, or a standby promoted, archiving under the same CLUSTER_NAME)."""
    twin = Cluster.__new__(Cluster)
    twin.__dict__.update(cluster.__dict__)
    twin.root = Path(f"{cluster.root}-twin")
    twin.data = twin.root / "data"
    subprocess.run(["cp", "-a", str(cluster.root), str(twin.root)], check=True)
    twin.port = free_port()
    with (twin.data / "postgresql.conf").open("a") as handle:
        handle.write(f"port = {twin.port}\nunix_socket_directories = '{twin.root}'\n")
    return twin


def test_a_clone_pushing_a_segment_of_the_same_name_is_refused_and_the_archive_kept(
    ignoring: FaultProxy, s3: S3Server, tmp_path: Path
) -> None:
    bucket = f"pf-cond-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    env = bucket_env(ignoring.url, bucket, tmp_path)
    first = Cluster("cond-first", initdb_args=("--wal-segsize=1",)).start()
    second: Cluster | None = None
    try:
        first.execute("CREATE TABLE t (v text)")
        first.stop()
        second = clone(first).start()
        first.start()
        ours, theirs = switch(first, "first"), switch(second, "second")
        assert ours.name == theirs.name and ours.read_bytes() != theirs.read_bytes()
        run(env, "wal-push", str(ours))
        key = f"backups/wal/main/{ours.name[:8]}/{ours.name}.pfe"
        archived = get_object(s3, bucket, key)
        stripped = ignoring.stripped

        refused = run(env, "wal-push", str(theirs), check=False)
        assert refused.returncode == 5, refused.stderr
        assert one_error(refused) == (
            f"permafrost: error: {ours.name} is already archived with different contents: "
            "another server may be archiving into this cluster's folder (check CLUSTER_NAME); "
            "nothing was overwritten"
        )
        assert get_object(s3, bucket, key) == archived
        assert ignoring.stripped == stripped  # checked without the header: nothing to strip
        run(env, "wal-push", str(ours))  # the same bytes again: PostgreSQL's retry succeeds
        assert get_object(s3, bucket, key) == archived
    finally:
        first.destroy()
        if second is not None:
            second.destroy()


def test_another_systems_segment_is_refused_by_its_identifier_with_nothing_written(
    via: dict[str, str], server: Cluster, pg: Cluster, s3: S3Server, tmp_path: Path
) -> None:
    """As measured in the issue: a segment of an unrelated cluster (another initdb) copied in
    under the name of the archive's next segment."""
    bucket = via["BUCKET"]
    pushed = switch(server, "ours")
    run(via, "wal-push", str(pushed))
    before = {key: get_object(s3, bucket, key) for key in objects(s3, bucket)}
    ours = server.execute("SELECT system_identifier FROM pg_control_system()")[0][0]
    other = pg.execute("SELECT system_identifier FROM pg_control_system()")[0][0]
    theirs = pg.data / "pg_wal" / str(pg.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0])
    following = f"{pushed.name[:16]}{int(pushed.name[16:], 16) + 1:08X}"
    foreign = tmp_path / following
    foreign.write_bytes(theirs.read_bytes())

    refused = run(via, "wal-push", str(foreign), check=False)
    assert refused.returncode == 13, refused.stderr
    line = one_error(refused)
    assert f"belongs to system {ours} (PostgreSQL 15), this server is system {other}" in line
    assert "use a new CLUSTER_NAME" in line
    assert {key: get_object(s3, bucket, key) for key in objects(s3, bucket)} == before


def test_a_write_another_writer_replaces_before_its_read_back_is_refused(
    ignoring: FaultProxy, s3: S3Server, bucket: str
) -> None:
    storage = open_storage(s3_settings(ignoring, bucket))
    key = "pfx/wal/main/00000001/000000010000000000000001.pfe"
    # The read-back stalls; meanwhile another writer's PUT of the same key lands.
    ignoring.set(Plan(fault="stall", method="GET", path=key, nth={1}, stall_seconds=1.5))
    other = threading.Thread(target=_write_when_read_back_starts, args=(ignoring, s3, bucket, key))
    other.start()
    try:
        with pytest.raises(WriteConflict, match=NOT_EXCLUDED):
            storage.put(key, b"ours", if_absent=True)
    finally:
        other.join()
        ignoring.clear()
    assert s3.client().get_object(Bucket=bucket, Key=key)["Body"].read() == b"theirs"


def _write_when_read_back_starts(proxy: FaultProxy, s3: S3Server, bucket: str, key: str) -> None:
    deadline = time.monotonic() + 10
    while proxy.seen == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    s3.client().put_object(Bucket=bucket, Key=key, Body=b"theirs")


def test_proxy_strips_the_header_so_a_second_conditional_put_replaces(
    ignoring: FaultProxy, s3: S3Server, bucket: str
) -> None:
    """The proxy really is a provider that ignores conditional writes (else the above prove
    nothing)."""
    client = s3.client()
    client.put_object(Bucket=bucket, Key="k", Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=bucket, Key="k", Body=b"two", IfNoneMatch="*")
    via_proxy = boto3.client(
        "s3",
        endpoint_url=ignoring.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    via_proxy.put_object(Bucket=bucket, Key="k", Body=b"two", IfNoneMatch="*")
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"
