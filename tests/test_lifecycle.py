"""Lifecycle rules: generated from the tier settings per provider, applied beside foreign rules,
and checked against what retention keeps, on moto's S3 server through the `permafrost` command,
plus fast checks of the rule logic itself."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from permafrost.config.settings import Settings
from permafrost.retention import lifecycle
from permafrost.storage.local import LocalStorage
from tests.conftest import KEY, run
from tests.services import S3Server

NOW = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
ALL_OURS = {
    "permafrost-standard",
    "permafrost-compliance",
    "permafrost-base",
    "permafrost-wal",
    "permafrost-abort-multipart",
}


# --- through the command, against a real S3 server -----------------------------------------


@pytest.fixture
def lenv(s3: S3Server, bucket: str, tmp_path: Path) -> dict[str, str]:
    """An operator's environment for lifecycle commands: a bucket, no database needed."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "STORAGE_URL": f"s3://{bucket}/backups",
        "S3_ENDPOINT_URL": s3.url,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "S3_ADDRESSING_STYLE": "path",  # aws and spaces default to virtual hosts
        "S3_PROVIDER": "generic",
        "BACKUP_ENCRYPTION_KEY": KEY,
    }


def bucket_rules(s3: S3Server, bucket: str) -> dict[str, dict[str, Any]]:
    rules = s3.client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    return {rule["ID"]: rule for rule in rules}


def has_lifecycle(s3: S3Server, bucket: str) -> bool:
    try:
        s3.client().get_bucket_lifecycle_configuration(Bucket=bucket)
    except Exception as exc:
        assert "NoSuchLifecycleConfiguration" in str(exc)
        return False
    return True


def put_foreign(s3: S3Server, bucket: str, *rules: dict[str, Any]) -> None:
    s3.client().put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": list(rules)}
    )


def test_aws_gets_expiry_cold_moves_and_the_upload_abort(
    lenv: dict[str, str], s3: S3Server, bucket: str
) -> None:
    lenv["S3_PROVIDER"] = "aws"
    out = run(lenv, "lifecycle", "apply").stdout
    assert "lifecycle rules written" in out
    rules = bucket_rules(s3, bucket)
    assert set(rules) == ALL_OURS | {"permafrost-keep"}
    standard = rules["permafrost-standard"]
    assert standard["Filter"] == {"Prefix": "backups/standard/"}
    assert standard["Expiration"] == {"Days": 30}
    assert standard["Transitions"] == [{"Days": 7, "StorageClass": "GLACIER_IR"}]
    compliance = rules["permafrost-compliance"]
    assert compliance["Expiration"] == {"Days": 365}
    assert compliance["Transitions"] == [{"Days": 7, "StorageClass": "GLACIER_IR"}]
    for tier in ("base", "wal"):
        assert rules[f"permafrost-{tier}"]["Filter"] == {"Prefix": f"backups/{tier}/"}
        assert rules[f"permafrost-{tier}"]["Expiration"] == {"Days": 30}
        assert "Transitions" not in rules[f"permafrost-{tier}"]
    keep = rules["permafrost-keep"]
    assert keep["Filter"] == {"Prefix": "backups/keep/"}
    assert "Expiration" not in keep
    assert keep["Transitions"] == [{"Days": 7, "StorageClass": "GLACIER_IR"}]
    abort = rules["permafrost-abort-multipart"]
    assert abort["Filter"] == {"Prefix": "backups/"}
    assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 2}
    # GLACIER_IR bills 90 days: moved on day 7, expired on day 30, so the operator is told.
    assert "GLACIER_IR bills at least 90 days" in out
    assert "until day 97" in out


def test_spaces_gets_expiry_only_and_says_why(
    lenv: dict[str, str], s3: S3Server, bucket: str
) -> None:
    lenv["S3_PROVIDER"] = "spaces"
    out = run(lenv, "lifecycle", "apply").stdout
    rules = bucket_rules(s3, bucket)
    assert set(rules) == ALL_OURS
    assert not any("Transitions" in rule for rule in rules.values())
    assert rules["permafrost-compliance"]["Expiration"] == {"Days": 365}
    assert rules["permafrost-abort-multipart"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 2
    }
    assert "DigitalOcean Spaces has no storage classes" in out
    assert "COLD_AFTER_DAYS and COLD_STORAGE_CLASS are not used" in out


def test_minio_gets_no_upload_abort(lenv: dict[str, str], s3: S3Server, bucket: str) -> None:
    lenv["S3_PROVIDER"] = "minio"
    out = run(lenv, "lifecycle", "apply").stdout
    rules = bucket_rules(s3, bucket)
    assert set(rules) == ALL_OURS - {"permafrost-abort-multipart"}
    assert not any("AbortIncompleteMultipartUpload" in rule for rule in rules.values())
    assert not any("Transitions" in rule for rule in rules.values())
    assert rules["permafrost-wal"]["Expiration"] == {"Days": 30}
    assert "MinIO does not take AbortIncompleteMultipartUpload" in out


def test_generic_gets_expiry_and_upload_abort(
    lenv: dict[str, str], s3: S3Server, bucket: str
) -> None:
    lenv["STANDARD_TIER_DAYS"] = "45"
    run(lenv, "lifecycle", "apply")
    rules = bucket_rules(s3, bucket)
    assert set(rules) == ALL_OURS
    assert rules["permafrost-standard"]["Expiration"] == {"Days": 45}
    assert not any("Transitions" in rule for rule in rules.values())
    assert "AbortIncompleteMultipartUpload" in rules["permafrost-abort-multipart"]


def test_apply_twice_changes_nothing_and_keeps_foreign_rules(
    lenv: dict[str, str], s3: S3Server, bucket: str
) -> None:
    foreign = {
        "ID": "logs-expire",
        "Status": "Enabled",
        "Filter": {"Prefix": "logs/"},
        "Expiration": {"Days": 3},
    }
    put_foreign(s3, bucket, foreign)
    lenv["S3_PROVIDER"] = "aws"
    first = run(lenv, "lifecycle", "apply").stdout
    assert "written" in first
    assert "logs-expire" in first  # said to be kept
    after_first = bucket_rules(s3, bucket)
    assert after_first["logs-expire"] == foreign
    second = run(lenv, "lifecycle", "apply", "--json")
    report = json.loads(second.stdout)
    assert report["action"] == "unchanged"
    assert report["kept"] == ["logs-expire"]
    assert "unchanged" in report["summary"]
    assert bucket_rules(s3, bucket) == after_first
    # A change in the settings replaces our rules, and only ours.
    lenv["STANDARD_TIER_DAYS"] = "40"
    third = json.loads(run(lenv, "lifecycle", "apply", "--json").stdout)
    assert third["action"] == "written"
    rules = bucket_rules(s3, bucket)
    assert rules["permafrost-standard"]["Expiration"] == {"Days": 40}
    assert rules["logs-expire"] == foreign


def test_check_fails_before_apply_and_passes_after(
    lenv: dict[str, str], s3: S3Server, bucket: str
) -> None:
    before = run(lenv, "lifecycle", "check", check=False)
    assert before.returncode == 12
    assert "rule permafrost-standard is missing from the bucket" in before.stdout
    assert "run `permafrost lifecycle apply`" in before.stdout
    assert "lifecycle check failed" in before.stderr
    run(lenv, "lifecycle", "apply")
    after = run(lenv, "lifecycle", "check")
    assert "lifecycle check passed" in after.stdout
    assert "problem:" not in after.stdout and "difference:" not in after.stdout
    report = json.loads(run(lenv, "lifecycle", "check", "--json").stdout)
    assert report["ok"] is True
    assert {rule["ID"] for rule in report["rules"]} == ALL_OURS
    # Someone shortens our rule by hand: a difference, and a problem (it now expires early).
    rules = list(bucket_rules(s3, bucket).values())
    for rule in rules:
        if rule["ID"] == "permafrost-compliance":
            rule["Expiration"] = {"Days": 90}
    put_foreign(s3, bucket, *rules)
    edited = run(lenv, "lifecycle", "check", check=False)
    assert edited.returncode == 12
    assert "difference: rule permafrost-compliance differs from the settings" in edited.stdout
    assert "problem: rule permafrost-compliance expires everything under" in edited.stdout
    assert "at least 365 days" in edited.stdout


def test_unsafe_standard_tier_is_refused(lenv: dict[str, str], s3: S3Server, bucket: str) -> None:
    lenv["STANDARD_TIER_DAYS"] = "10"
    checked = run(lenv, "lifecycle", "check", check=False)
    assert checked.returncode == 12
    assert "STANDARD_TIER_DAYS=10 is shorter than" in checked.stdout
    assert (
        "RETENTION_DAILY=7" in checked.stdout and "RETENTION_WEEKLY=4 (28 days)" in checked.stdout
    )
    applied = run(lenv, "lifecycle", "apply", check=False)
    assert applied.returncode == 12
    assert "nothing written" in applied.stderr
    assert not has_lifecycle(s3, bucket)


def test_wal_shorter_than_base_interval_plus_window_is_refused(
    lenv: dict[str, str], s3: S3Server, bucket: str
) -> None:
    lenv.update(WAL_RETENTION_DAYS="7", WAL_ARCHIVING="push")
    checked = run(lenv, "lifecycle", "check", check=False)
    assert checked.returncode == 12
    assert (
        "WAL_RETENTION_DAYS=7 is shorter than the base backup interval (7 days, "
        "BASE_BACKUP_SCHEDULE) plus PITR_WINDOW_DAYS=14: WAL that point-in-time recovery "
        "needs would expire"
    ) in checked.stdout
    assert "(the expiry of base/)" in checked.stdout


def test_a_foreign_rule_expiring_keep_fails_the_check(
    lenv: dict[str, str], s3: S3Server, bucket: str
) -> None:
    put_foreign(
        s3,
        bucket,
        {
            "ID": "tidy-keep",
            "Status": "Enabled",
            "Filter": {"Prefix": "backups/keep/"},
            "Expiration": {"Days": 30},
        },
    )
    applied = run(lenv, "lifecycle", "apply", check=False)  # ours written; the problem said
    assert applied.returncode == 12 and "rules written" in applied.stderr
    assert "would delete pinned backups" in applied.stdout
    assert "tidy-keep" in bucket_rules(s3, bucket)
    checked = run(lenv, "lifecycle", "check", check=False)
    assert checked.returncode == 12
    assert "problem: rule tidy-keep expires everything under backups/keep/" in checked.stdout
    assert "would delete pinned backups" in checked.stdout
    assert "difference:" not in checked.stdout  # our own rules are as wanted


def test_a_whole_bucket_rule_would_delete_the_repository_configuration(
    lenv: dict[str, str], s3: S3Server, bucket: str
) -> None:
    put_foreign(
        s3,
        bucket,
        {
            "ID": "everything-400",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "Expiration": {"Days": 400},
        },
    )
    applied = run(lenv, "lifecycle", "apply", check=False)  # ours written, the foreign one kept
    assert applied.returncode == 12
    assert "rules written" in applied.stderr
    checked = run(lenv, "lifecycle", "check", "--json", check=False)
    assert checked.returncode == 12
    report = json.loads(checked.stdout)
    assert report["ok"] is False and report["differences"] == []
    problems = report["problems"]
    # 400 days outlasts every tier; what it must never touch is keep/ and permafrost.json.
    assert len(problems) == 2, problems
    assert any(
        "rule everything-400" in p
        and "repository configuration (backups/permafrost.json)" in p
        and "every backup would become unreadable" in p
        for p in problems
    )
    assert any("rule everything-400" in p and "pinned backups" in p for p in problems)


def test_standard_ia_moves_are_raised_to_30_days(
    lenv: dict[str, str], s3: S3Server, bucket: str
) -> None:
    lenv.update(S3_PROVIDER="aws", COLD_STORAGE_CLASS="STANDARD_IA", COLD_AFTER_DAYS="7")
    out = run(lenv, "lifecycle", "apply").stdout
    assert "COLD_AFTER_DAYS=7 is raised to 30" in out
    assert "standard: no move to STANDARD_IA" in out
    rules = bucket_rules(s3, bucket)
    assert "Transitions" not in rules["permafrost-standard"]  # it expires on day 30 anyway
    assert rules["permafrost-compliance"]["Transitions"] == [
        {"Days": 30, "StorageClass": "STANDARD_IA"}
    ]
    assert rules["permafrost-keep"]["Transitions"] == [{"Days": 30, "StorageClass": "STANDARD_IA"}]
    assert "lifecycle check passed" in run(lenv, "lifecycle", "check").stdout


def test_show_prints_the_rules_and_touches_nothing(
    lenv: dict[str, str], s3: S3Server, bucket: str
) -> None:
    lenv["S3_PROVIDER"] = "aws"
    text = run(lenv, "lifecycle", "show").stdout
    assert "backups/standard/" in text and "GLACIER_IR after 7 days" in text
    assert "after 365 days" in text
    shown = json.loads(run(lenv, "lifecycle", "show", "--json").stdout)
    assert set(shown) == {"provider", "rules", "notes"}
    assert shown["provider"] == "aws"
    assert {rule["ID"] for rule in shown["rules"]} == ALL_OURS | {"permafrost-keep"}
    assert not has_lifecycle(s3, bucket)


def test_local_directory_has_no_rules(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "STORAGE_URL": f"file://{tmp_path / 'bucket'}",
    }
    applied = run(env, "lifecycle", "apply")
    assert "a local directory" in applied.stdout and "retention alone deletes" in applied.stdout
    checked = run(env, "lifecycle", "check")
    assert "lifecycle check passed" in checked.stdout
    assert "only the settings were checked" in checked.stdout


# --- the rule logic, without a server -------------------------------------------------------


def settings(**values: str) -> Settings:
    return Settings.from_env({"STORAGE_URL": "s3://b/backups", "S3_PROVIDER": "generic", **values})


class Bucket:
    """Just the two lifecycle calls, holding rules in a list (the real thing is tested above)."""

    def __init__(self, rules: list[dict[str, Any]] | None = None) -> None:
        self.rules = list(rules or [])
        self.writes = 0

    def lifecycle_rules(self) -> list[dict[str, Any]]:
        return [dict(rule) for rule in self.rules]

    def put_lifecycle_rules(self, rules: list[dict[str, Any]]) -> None:
        self.rules = list(rules)
        self.writes += 1


def applied(s: Settings, *foreign: dict[str, Any]) -> Bucket:
    bucket = Bucket(list(foreign))
    result = lifecycle.apply(s, bucket, NOW)
    assert result.action == "written"
    assert result.kept == [rule["ID"] for rule in foreign]
    assert bucket.rules[: len(foreign)] == list(foreign)
    return bucket


def expire(rule_id: str, days: int | None = None, **rest: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"ID": rule_id, "Status": "Enabled", **rest}
    if days is not None:
        rule["Expiration"] = {"Days": days}
    return rule


def test_desired_with_an_empty_prefix_covers_the_whole_bucket() -> None:
    wanted = lifecycle.desired(Settings.from_env({"STORAGE_URL": "s3://b", "S3_PROVIDER": "aws"}))
    rules = {rule["ID"]: rule for rule in wanted.rules}
    assert rules["permafrost-standard"]["Filter"] == {"Prefix": "standard/"}
    assert rules["permafrost-wal"]["Filter"] == {"Prefix": "wal/"}
    assert rules["permafrost-abort-multipart"]["Filter"] == {"Prefix": ""}
    assert all(rule_id.startswith("permafrost-") for rule_id in rules)


def test_desired_skips_a_move_on_or_after_expiry() -> None:
    wanted = lifecycle.desired(settings(S3_PROVIDER="aws", COLD_AFTER_DAYS="30"))
    rules = {rule["ID"]: rule for rule in wanted.rules}
    assert "Transitions" not in rules["permafrost-standard"]
    assert rules["permafrost-compliance"]["Transitions"] == [
        {"Days": 30, "StorageClass": "GLACIER_IR"}
    ]
    assert any("standard: no move to GLACIER_IR" in note for note in wanted.notes)
    # 365 - 30 days in GLACIER_IR is more than its 90-day minimum: no billing note.
    assert not any("bills at least" in note for note in wanted.notes)


def test_check_passes_on_applied_rules_and_names_what_differs() -> None:
    s = settings()
    bucket = applied(s)
    assert lifecycle.check(s, bucket, NOW).ok
    assert lifecycle.apply(s, bucket, NOW).action == "unchanged"
    assert bucket.writes == 1
    bucket.rules = [r for r in bucket.rules if r["ID"] != "permafrost-wal"]
    bucket.rules.append(expire("permafrost-old", 99, Filter={"Prefix": "backups/old/"}))
    report = lifecycle.check(s, bucket, NOW)
    assert not report.ok and report.problems == []
    assert any("permafrost-wal is missing" in d for d in report.differences)
    assert any(
        "permafrost-old" in d and "not one the settings want" in d for d in report.differences
    )
    result = lifecycle.apply(s, bucket, NOW)
    assert result.action == "written" and result.removed == ["permafrost-old"]
    assert lifecycle.check(s, bucket, NOW).ok


def test_foreign_rules_are_checked_however_their_filter_is_spelled() -> None:
    s = settings()
    bucket = applied(
        s,
        expire("narrow", 20, Filter={"Prefix": "backups/standard/app/"}),  # inside a tier
        expire("legacy", 10, Prefix="backups/wal"),  # the old top-level Prefix
        expire(
            "tagged",
            500,
            Filter={"And": {"Prefix": "backups/", "Tags": [{"Key": "k", "Value": "v"}]}},
        ),
        {
            "ID": "dated",
            "Status": "Enabled",
            "Filter": {"Prefix": "backups/compliance/"},
            "Expiration": {"Date": datetime(2030, 1, 1, tzinfo=UTC)},
        },
        expire("elsewhere", 1, Filter={"Prefix": "scratch/"}),
        expire("off", 1, Filter={"Prefix": ""}) | {"Status": "Disabled"},
    )
    report = lifecycle.check(s, bucket, NOW)
    text = "\n".join(report.problems)
    assert "rule narrow expires everything under backups/standard/app/ after 20 days" in text
    assert "rule legacy" in text and "backups/wal/" in text and "backups/base/" not in text
    assert "rule tagged" in text and "tag or size filter is ignored" in text
    assert "pinned backups" in text and "repository configuration" in text
    assert "rule dated expires everything under backups/compliance/ on 2030-01-01" in text
    assert "elsewhere" not in text and "rule off" not in text
    assert any("disabled, but if enabled: rule off" in note for note in report.notes)
    assert report.differences == []


def test_a_cold_class_that_must_be_thawed_is_a_problem() -> None:
    s = settings()
    bucket = applied(
        s,
        {
            "ID": "archive",
            "Status": "Enabled",
            "Filter": {"Prefix": "backups/compliance/"},
            "Transitions": [{"Days": 60, "StorageClass": "DEEP_ARCHIVE"}],
        },
    )
    problems = lifecycle.check(s, bucket, NOW).problems
    assert len(problems) == 1 and "DEEP_ARCHIVE" in problems[0] and "thawed" in problems[0]


def test_a_monthly_base_backup_needs_longer_wal() -> None:
    quiet = settings(WAL_RETENTION_DAYS="7", BASE_BACKUP_SCHEDULE="0 1 1 * *")  # no archiving
    assert lifecycle.check(quiet, applied(quiet), NOW).ok
    s = settings(WAL_ARCHIVING="receive", BASE_BACKUP_SCHEDULE="0 1 1 * *")
    report = lifecycle.check(s, Bucket(), NOW)
    assert any(
        "WAL_RETENTION_DAYS=30 is shorter than the base backup interval (31 days" in p
        for p in report.problems
    )
    bucket = Bucket()
    refused = lifecycle.apply(s, bucket, NOW)
    assert refused.action == "refused" and not refused.ok and bucket.writes == 0
    # 31 + 14 = 45 days is enough; and then a foreign 40-day WAL rule is not.
    s = settings(WAL_ARCHIVING="receive", BASE_BACKUP_SCHEDULE="0 1 1 * *", WAL_RETENTION_DAYS="45")
    bucket = applied(s)
    assert lifecycle.check(s, bucket, NOW).ok
    bucket.rules.append(expire("wal-40", 40, Filter={"Prefix": "backups/wal/main/"}))
    problems = lifecycle.check(s, bucket, NOW).problems
    assert len(problems) == 1 and "rule wal-40" in problems[0] and "at least 45 days" in problems[0]


def test_rules_named_like_ours_for_another_repository_are_not_replaced() -> None:
    s = settings()
    other = expire("permafrost-standard", 30, Filter={"Prefix": "other/standard/"})
    bucket = Bucket([other])
    result = lifecycle.apply(s, bucket, NOW)
    assert result.action == "refused" and "outside this repository" in result.problems[0]
    assert bucket.rules == [other] and bucket.writes == 0


def test_a_local_directory_is_only_checked_by_its_settings(tmp_path: Path) -> None:
    s = Settings.from_env({"STORAGE_URL": f"file://{tmp_path}", "STANDARD_TIER_DAYS": "20"})
    storage = LocalStorage(tmp_path)
    result = lifecycle.apply(s, storage, NOW)
    assert result.action == "local" and result.ok
    report = lifecycle.check(s, storage, NOW)
    assert not report.bucket_checked and report.differences == []
    assert len(report.problems) == 1 and "STANDARD_TIER_DAYS=20" in report.problems[0]
    assert any("only the settings were checked" in note for note in report.notes)
