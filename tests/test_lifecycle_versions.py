"""Lifecycle on a versioned bucket: each tier's old versions expire after the tier's days, and
`lifecycle check` fails a rule that would make them go sooner (moto's S3 server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from permafrost.config.settings import Settings
from permafrost.errors import AccessDenied
from permafrost.retention import lifecycle
from tests.conftest import KEY, run
from tests.helpers import loads
from tests.services import S3Server


@pytest.fixture
def lenv(s3: S3Server, bucket: str, tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "STORAGE_URL": f"s3://{bucket}/backups",
        "S3_ENDPOINT_URL": s3.url,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "S3_ADDRESSING_STYLE": "path",
        "S3_PROVIDER": "generic",
        "BACKUP_ENCRYPTION_KEY": KEY,
    }


def versioning_on(s3: S3Server, bucket: str) -> None:
    s3.client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def bucket_rules(s3: S3Server, bucket: str) -> dict[str, dict[str, Any]]:
    rules = s3.client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    return {rule["ID"]: rule for rule in rules}


def noncurrent(rule: dict[str, Any]) -> int | None:
    return (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")


def test_it_expires_old_versions_after_each_tiers_days(lenv, s3, bucket) -> None:
    versioning_on(s3, bucket)
    run({**lenv, "COMPLIANCE_TIER_DAYS": "400"}, "lifecycle", "apply")
    rules = bucket_rules(s3, bucket)
    assert noncurrent(rules["permafrost-standard"]) == 30
    assert noncurrent(rules["permafrost-compliance"]) == 400
    assert noncurrent(rules["permafrost-base"]) == 30
    assert noncurrent(rules["permafrost-wal"]) == 30
    keep = rules["permafrost-keep"]
    assert noncurrent(keep) == 400 and "Expiration" not in keep  # pins never expire
    assert rules["permafrost-standard"]["Expiration"] == {"Days": 30}
    probes = rules["permafrost-probes"]  # the probes' old versions and lone delete markers
    assert probes["Filter"] == {"Prefix": "backups/.probe-"} and noncurrent(probes) == 1
    assert probes["Expiration"] == {"ExpiredObjectDeleteMarker": True}

    checked = run({**lenv, "COMPLIANCE_TIER_DAYS": "400"}, "lifecycle", "check")
    assert "lifecycle check passed" in checked.stdout
    assert "stays readable with --as-of" in checked.stdout


def test_check_fails_a_rule_that_cuts_the_rollback_short(lenv, s3, bucket) -> None:
    versioning_on(s3, bucket)
    run(lenv, "lifecycle", "apply")
    rules = list(bucket_rules(s3, bucket).values())
    rules.append(
        {
            "ID": "cost-cutting",
            "Status": "Enabled",
            "Filter": {"Prefix": "backups/"},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 3},
        }
    )
    s3.client().put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": rules}
    )
    failed = run(lenv, "lifecycle", "check", check=False)
    assert failed.returncode == 12
    assert "rule cost-cutting expires old versions under backups/standard/ 3 days" in (
        failed.stdout
    )
    assert "for only 3 days, not the 30 of STANDARD_TIER_DAYS" in failed.stdout
    assert "backups/compliance/" in failed.stdout and "COMPLIANCE_TIER_DAYS" in failed.stdout


def test_rules_written_before_versioning_are_named_as_out_of_date(lenv, s3, bucket) -> None:
    run(lenv, "lifecycle", "apply")
    assert noncurrent(bucket_rules(s3, bucket)["permafrost-standard"]) is None
    unversioned = loads(run(lenv, "lifecycle", "check", "--json").stdout)
    assert any("has no versioning" in note for note in unversioned["notes"])

    versioning_on(s3, bucket)
    stale = run(lenv, "lifecycle", "check", check=False)
    assert stale.returncode == 12
    assert "rule permafrost-standard differs from the settings" in stale.stdout
    assert "rule permafrost-keep is missing" in stale.stdout
    run(lenv, "lifecycle", "apply")
    assert "lifecycle check passed" in run(lenv, "lifecycle", "check").stdout


class Bucket:
    """A bucket with lifecycle rules and versioning, whose versioning answer can be refused
    (credentials without s3:GetBucketVersioning, such as a monitor's)."""

    def __init__(self) -> None:
        self.rules: list[dict[str, Any]] = []
        self.state: str | None = "Enabled"

    def lifecycle_rules(self) -> list[dict[str, Any]]:
        return [dict(rule) for rule in self.rules]

    def put_lifecycle_rules(self, rules: list[dict[str, Any]]) -> None:
        self.rules = list(rules)

    def versioning(self) -> str:
        if self.state is None:
            raise AccessDenied("read the versioning of b: access denied (AccessDenied)")
        return self.state

    def list_versions(self, prefix: str) -> Iterator[Any]:
        return iter(())

    def get_version(self, key: str, version_id: str, offset: int = 0, length=None) -> bytes:
        raise NotImplementedError


def test_credentials_that_may_not_ask_about_versioning_judge_from_the_rules() -> None:
    s = Settings.from_env({"STORAGE_URL": "s3://b/backups", "S3_PROVIDER": "generic"})
    bucket = Bucket()
    assert lifecycle.apply(s, bucket).ok
    assert noncurrent({r["ID"]: r for r in bucket.rules}["permafrost-wal"]) == 30
    bucket.state = None  # the monitor's key: no s3:GetBucketVersioning
    report = lifecycle.check(s, bucket)
    assert report.ok, report.differences
    assert any("judged from Permafrost's rules" in note for note in report.notes)
