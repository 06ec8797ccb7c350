"""`permafrost doctor`'s permission probe: what the credentials may do in the bucket, against
what each service needs.

The full-permission report runs on the shared moto server. The least-privilege cases need a
server that enforces IAM: moto does when told to (`POST /moto-api/reset-auth`, the runtime form of
INITIAL_NO_AUTH_ACTION_COUNT), so this file starts its own, creates IAM users with policies,
then turns authorisation on; every later request is checked against the user's policy. moto
checks S3 operations by their API names (ListObjectsV2, not s3:ListBucket), and a delete of a
version is a DeleteObject to it, so delete-version is not told apart from delete here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KEY, run, unique
from tests.helpers import objects
from tests.services import Cluster, S3Server

APPEND_ONLY = [
    "s3:ListBucket",
    "s3:GetObject",
    "s3:PutObject",
    "s3:GetLifecycleConfiguration",
    "s3:GetBucketVersioning",
    "s3:ListBucketVersions",
    "s3:GetObjectVersion",
    "s3:AbortMultipartUpload",
    "s3:ListBucketMultipartUploads",
]
# moto checks the API operation's name rather than the IAM action it needs (its IAM support is
# "very basic"), so the policy names those too; on AWS these lines would be unknown actions.
MOTO_NAMES = [
    "s3:HeadBucket",
    "s3:ListObjectsV2",
    "s3:ListObjectVersions",
    "s3:GetBucketLifecycleConfiguration",
    "s3:GetObjectLockConfiguration",
]


def env_for(s3: S3Server, bucket: str, tmp_path: Path, key: str, secret: str, **extra: str):
    database = tmp_path / "app.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (v text)")
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{database}",
        "STORAGE_URL": f"s3://{bucket}/backups",
        "S3_ENDPOINT_URL": s3.url,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": key,
        "S3_SECRET_ACCESS_KEY": secret,
        "S3_PROVIDER": "generic",
        "BACKUP_ENCRYPTION_KEY": KEY,
        **extra,
    }


def permissions(result: Any) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(result.stdout)["bucket"]["permissions"]
    return found


def access(found: dict[str, Any]) -> dict[str, str]:
    return {p["action"]: p["access"] for p in found["probes"]}


def test_it_reports_every_permission_and_what_each_service_needs(
    pg: Cluster, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    s3.client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    database = pg.create_database(unique("perm"))
    env = {
        **env_for(s3, bucket, tmp_path, "testing", "testing"),
        "DATABASE_URL": pg.url(database),
    }
    try:
        out = run(env, "doctor").stdout
        found = permissions(run(env, "doctor", "--json", "--service", "scheduler"))
    finally:
        pg.drop_database(database)
    assert "bucket permissions of these credentials" in out
    for action in ("list", "get", "put", "delete", "get-lifecycle", "get-bucket-versioning"):
        assert access(found)[action] == "allowed", found
    assert access(found)["put-lifecycle"] == "not probed"
    assert access(found)["delete-version"] == "allowed"
    assert "may delete old versions" in out
    for service in ("scheduler", "wal-push", "monitor", "restore", "retention"):
        assert f"  {service}: " in out
    assert "monitor: should not have put, delete" in out
    # Retention runs in the scheduler (CLEANUP_SCHEDULE): its delete is no warning.
    assert not any("the scheduler may delete" in w for w in found["warnings"])
    assert found["problems"] == []
    # Nothing of the probes is left, not even an old version.
    left = s3.client().list_object_versions(Bucket=bucket, Prefix="backups/.probe-")
    mine = [v for v in left.get("Versions", []) if "permission probe" in _body(s3, bucket, v)]
    assert mine == []


def test_the_doctor_page_shows_the_monitors_reads_and_writes_nothing(
    env: dict[str, str], s3: S3Server, bucket: str, source_db: str
) -> None:
    from monitor.app import create_app  # the dashboard, as test_doctor_page builds it
    from permafrost.config.settings import Settings

    app = create_app(Settings.from_env({**env, "DB_NAME": source_db}), evaluate=False)
    client = app.test_client()
    text = client.get("/doctor", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert '<tr data-action="list"><td>list</td><td>s3:ListBucket</td><td>allowed</td>' in text
    assert '<tr data-action="put"><td>put</td><td>s3:PutObject</td><td>not probed</td>' in text
    assert "monitor: whether it may also put, delete was not probed" in text
    report = client.get("/doctor").json
    assert report["permissions"]["service"] == "monitor"
    assert access(report["permissions"])["get-lifecycle"] == "allowed"
    assert objects(s3, bucket) == []  # nothing was written from the dashboard


def _body(s3: S3Server, bucket: str, version: dict[str, Any]) -> str:
    got = s3.client().get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
    return str(got["Body"].read())


# --- with IAM enforced -----------------------------------------------------------------------


class Enforcing:
    """A moto server of its own, with two IAM users, and authorisation on."""

    def __init__(self) -> None:
        self.s3 = S3Server()
        self.bucket = f"pf-iam-{uuid.uuid4().hex[:8]}"
        self.s3.client().create_bucket(Bucket=self.bucket)
        self.append_only = self._user("append-only", APPEND_ONLY + MOTO_NAMES)
        self.full = self._user("full", ["s3:*"])
        self._auth("0")  # from now on every request is authenticated and authorised

    def _user(self, name: str, actions: list[str]) -> tuple[str, str]:
        iam = self._iam()
        iam.create_user(UserName=name)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": actions,
                    "Resource": [f"arn:aws:s3:::{self.bucket}", f"arn:aws:s3:::{self.bucket}/*"],
                }
            ],
        }
        iam.put_user_policy(UserName=name, PolicyName="bucket", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def _iam(self) -> Any:
        import boto3

        return boto3.client(
            "iam",
            endpoint_url=self.s3.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def _auth(self, count: str) -> None:
        request = urllib.request.Request(
            f"{self.s3.url}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},  # a form body would be parsed away
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def stop(self) -> None:
        self._auth("inf")
        self.s3.stop()


@pytest.fixture(scope="module")
def enforcing() -> Iterator[Enforcing]:
    server = Enforcing()
    yield server
    server.stop()


def test_an_append_only_scheduler_cannot_delete_and_doctor_says_so(
    enforcing: Enforcing, tmp_path: Path
) -> None:
    env = env_for(
        enforcing.s3, enforcing.bucket, tmp_path, *enforcing.append_only, CLEANUP_SCHEDULE="off"
    )
    result = run(env, "doctor", "--json", "--service", "scheduler")
    found = permissions(result)
    seen = access(found)
    assert seen["put"] == "allowed" and seen["get"] == "allowed" and seen["list"] == "allowed"
    assert seen["delete"] == "denied"
    assert found["warnings"] == [] and found["problems"] == []
    delete = next(p for p in found["probes"] if p["action"] == "delete")
    assert "is left in the bucket" in delete["detail"]

    text = run(env, "doctor", "--service", "scheduler").stdout
    assert "scheduler: has what it needs, and nothing it must not" in text
    assert "append-only: CLEANUP_SCHEDULE=off" in text


def test_doctor_warns_when_an_append_only_scheduler_can_delete(
    enforcing: Enforcing, tmp_path: Path
) -> None:
    env = env_for(enforcing.s3, enforcing.bucket, tmp_path, *enforcing.full, CLEANUP_SCHEDULE="off")
    result = run(env, "doctor", "--service", "scheduler")
    assert "warning: the scheduler may delete (s3:DeleteObject), which it should not" in (
        result.stdout
    )
    assert "CLEANUP_SCHEDULE=off makes it append-only" in result.stdout
    assert "warning: these credentials may delete old versions" not in result.stdout  # unversioned


def test_a_service_missing_what_it_needs_fails_doctor(enforcing: Enforcing, tmp_path: Path) -> None:
    env = env_for(enforcing.s3, enforcing.bucket, tmp_path, *enforcing.append_only)
    failed = run(env, "doctor", "--service", "retention", check=False)
    assert failed.returncode == 12
    assert failed.stderr.strip().splitlines()[-1] == (
        "permafrost: error: doctor: the retention needs delete (s3:DeleteObject), which these "
        "credentials are denied"
    )
    # The probe objects this user could not delete are there, and nothing else was touched.
    assert all(".probe-" in key for key in objects_as(enforcing))


def objects_as(enforcing: Enforcing) -> list[str]:
    enforcing._auth("inf")
    try:
        return objects(enforcing.s3, enforcing.bucket)
    finally:
        enforcing._auth("0")
