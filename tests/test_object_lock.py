"""Object lock tied to the tiers (OBJECT_LOCK): locked writes, refused deletes, refused buckets.

Against moto's S3 server, which keeps object lock and legal holds as S3 does: a bucket created
with ObjectLockEnabledForBucket, a version whose retain-until is ahead cannot be deleted.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from permafrost.config.settings import Settings
from permafrost.storage import LockingStorage, open_storage
from permafrost.storage.lock import policy
from permafrost.storage.transfer import ObjectWriter
from tests.conftest import run, unique
from tests.helpers import loads, objects, table_digest
from tests.services import Cluster, S3Server


@pytest.fixture
def locked_bucket(s3: S3Server) -> str:
    name = f"pf-lock-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def lock_env(env: dict[str, str], locked_bucket: str) -> dict[str, str]:
    return {**env, "STORAGE_URL": f"s3://{locked_bucket}/backups", "OBJECT_LOCK": "compliance"}


def retain_until(s3: S3Server, bucket: str, key: str) -> tuple[str, datetime]:
    head = s3.client().head_object(Bucket=bucket, Key=key)
    return head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]


def days_ahead(moment: datetime) -> float:
    return (moment - datetime.now(UTC)).total_seconds() / 86400


def test_it_locks_every_object_for_its_tier_and_refuses_deleting_them(
    lock_env: dict[str, str], s3: S3Server, locked_bucket: str
) -> None:
    backup = loads(run(lock_env, "backup", "--json").stdout)
    bid, db = backup["id"], backup["database"]
    folder = f"backups/standard/{db}/{bid}/"
    for name in ("data.pfe", "manifest.json"):
        mode, until = retain_until(s3, locked_bucket, folder + name)
        assert mode == "COMPLIANCE" and 29.9 < days_ahead(until) <= 30.01
    mode, until = retain_until(s3, locked_bucket, "backups/permafrost.json")
    assert mode == "COMPLIANCE" and 364.9 < days_ahead(until) <= 365.01
    compliance = loads(run(lock_env, "backup", "--tier", "compliance", "--json").stdout)
    key = f"backups/compliance/{db}/{compliance['id']}/data.pfe"
    assert 364.9 < days_ahead(retain_until(s3, locked_bucket, key)[1]) <= 365.01

    # The backup credentials cannot destroy the data: S3 refuses the version's deletion...
    client = s3.client()
    version = client.head_object(Bucket=locked_bucket, Key=folder + "data.pfe")["VersionId"]
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=locked_bucket, Key=folder + "data.pfe", VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # ... and Permafrost refuses before asking, in one line, deleting nothing.
    result = run(lock_env, "delete", bid, "--apply", check=False)
    assert result.returncode == 16, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "locked (COMPLIANCE) until" in line and "retention deletes it after" in line
    assert folder + "manifest.json" in objects(s3, locked_bucket, folder)
    run(lock_env, "verify", bid)
    doctor = run(lock_env, "doctor", check=False).stdout
    assert "object lock: OBJECT_LOCK=compliance, enabled on the bucket, no default" in doctor


def test_multipart_uploads_carry_the_lock(
    lock_env: dict[str, str], s3: S3Server, locked_bucket: str
) -> None:
    settings = Settings.from_env(lock_env)
    storage = open_storage(settings.storage, policy(settings))
    assert isinstance(storage, LockingStorage) and storage.locking
    key = "backups/wal/main/00000001/000000010000000000000001.pfe"
    writer = ObjectWriter(storage, key, part_size=5 * 1024 * 1024, concurrency=2)
    writer.write(os.urandom(11 * 1024 * 1024))
    writer.close()
    mode, until = retain_until(s3, locked_bucket, key)
    assert mode == "COMPLIANCE" and 29.9 < days_ahead(until) <= 30.01
    state = storage.lock_state(key)
    assert state.blocks(datetime.now(UTC)) and not state.blocks(until + timedelta(seconds=1))


def test_a_bucket_without_object_lock_is_refused_in_one_line(env: dict[str, str]) -> None:
    result = run({**env, "OBJECT_LOCK": "governance"}, "backup", check=False)
    assert result.returncode == 15
    [line] = result.stderr.strip().splitlines()
    assert "was not created with object lock" in line and "unset OBJECT_LOCK" in line
    doctor = run({**env, "OBJECT_LOCK": "governance"}, "doctor", check=False)
    assert "was not created with object lock" in doctor.stdout + doctor.stderr
    started = run({**env, "OBJECT_LOCK": "governance"}, "scheduler", "--check", check=False)
    assert started.returncode == 15 and "was not created with object lock" in started.stderr


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ({"STORAGE_URL": "file://{tmp}/bucket"}, "a local directory (file://) cannot lock"),
        ({"S3_PROVIDER": "spaces"}, "DigitalOcean Spaces does not support S3 Object Lock"),
    ],
)
def test_destinations_without_object_lock_are_refused(
    env: dict[str, str], tmp_path: Path, where: dict[str, str], said: str
) -> None:
    extra = {k: v.format(tmp=tmp_path) for k, v in where.items()}
    result = run({**env, **extra, "OBJECT_LOCK": "compliance"}, "backup", check=False)
    assert result.returncode == 15
    [line] = result.stderr.strip().splitlines()
    assert said in line and "unset OBJECT_LOCK" in line


def legal_hold(s3: S3Server, bucket: str, key: str) -> str:
    hold = s3.client().get_object_legal_hold(Bucket=bucket, Key=key)["LegalHold"]
    return str(hold.get("Status", "OFF"))  # moto: no Status on an object never held


def test_pin_and_unpin_are_legal_holds_and_a_pinned_backup_survives_retention(
    lock_env: dict[str, str], s3: S3Server, locked_bucket: str, metadata_db: str
) -> None:
    # Governance: once unpinned, its lock can be shortened to let retention reach it today.
    lock_env = {**lock_env, "OBJECT_LOCK": "governance", "RETENTION_MIN_KEEP": "1"}
    old = loads(run(lock_env, "backup", "--json").stdout)
    new = loads(run(lock_env, "backup", "--json").stdout)
    bid, db = old["id"], old["database"]
    folder = f"backups/standard/{db}/{bid}/"
    result = run(lock_env, "pin", bid, "--reason", "audit 2026")
    assert "under a legal hold in standard/" in result.stdout
    for name in ("data.pfe", "manifest.json"):
        assert legal_hold(s3, locked_bucket, folder + name) == "ON"
    assert not objects(s3, locked_bucket, "backups/keep/")  # nothing copied, nothing deleted
    assert "already pinned" in run(lock_env, "pin", bid).stdout

    # Its lock gone (as if 30 days had passed), the hold alone keeps it through retention.
    client = s3.client()
    for key in objects(s3, locked_bucket, "backups/standard/"):
        client.put_object_retention(
            Bucket=locked_bucket,
            Key=key,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": datetime.now(UTC)},
            BypassGovernanceRetention=True,
        )
    plan_json = loads(run(lock_env, "retention", "--json").stdout)
    decisions = {b["id"]: b for b in plan_json["backups"]}
    assert decisions[bid]["action"] == "keep"
    assert decisions[bid]["reasons"][0].endswith(": audit 2026")
    applied = run(lock_env, "retention", "--apply")
    assert folder + "manifest.json" in objects(s3, locked_bucket, folder), applied.stdout
    run(lock_env, "verify", bid)

    run(lock_env, "unpin", bid)
    for name in ("data.pfe", "manifest.json"):
        assert legal_hold(s3, locked_bucket, folder + name) == "OFF"
    assert folder + "pin.json" not in objects(s3, locked_bucket, folder)
    assert "not pinned" in run(lock_env, "unpin", bid, check=False).stderr
    # Unpinned, with its lock expired and min-keep held by the newer one, retention takes it.
    time_passes = {**lock_env, "RETENTION_DAILY": "0", "RETENTION_WEEKLY": "0"}
    run(lock_env, "verify", new["id"])  # the newest verified is the newer one
    last = run(time_passes, "retention", "--apply")
    assert not objects(s3, locked_bucket, folder), last.stdout + last.stderr
    assert objects(s3, locked_bucket, f"backups/standard/{db}/{new['id']}/")


def test_retention_defers_deleting_what_the_lock_still_holds(
    lock_env: dict[str, str], s3: S3Server, locked_bucket: str, metadata_db: str
) -> None:
    env = {**lock_env, "RETENTION_MIN_KEEP": "1", "RETENTION_DAILY": "0", "RETENTION_WEEKLY": "0"}
    old = loads(run(env, "backup", "--json").stdout)
    run(env, "backup", "--json")
    result = run(env, "retention", "--apply", "--json")
    outcome = loads(result.stdout)
    assert not outcome["errors"]
    [locked] = outcome["locked"]
    assert locked.startswith(old["id"]) and "locked (COMPLIANCE) until" in locked
    assert objects(s3, locked_bucket, f"backups/standard/{old['database']}/{old['id']}/")


def test_lock_migrate_moves_keep_pins_to_legal_holds_and_they_still_restore(
    env: dict[str, str],
    s3: S3Server,
    locked_bucket: str,
    metadata_db: str,
    pg: Cluster,
    source_db: str,
) -> None:
    # A repository pinned the old way (into keep/), before OBJECT_LOCK was set.
    before = {**env, "STORAGE_URL": f"s3://{locked_bucket}/backups"}
    backup = loads(run(before, "backup", "--json").stdout)
    bid, db = backup["id"], backup["database"]
    run(before, "pin", bid, "--reason", "kept by the old scheme")
    assert f"backups/keep/{db}/{bid}/manifest.json" in objects(s3, locked_bucket, "backups/keep/")
    after = {**before, "OBJECT_LOCK": "compliance"}
    listed = loads(run(after, "list", "--json").stdout)
    assert [b["id"] for b in listed] == [bid]
    run(after, "verify", bid)  # a legacy pin still restores under the lock

    result = run(after, "lock", "migrate")
    assert "migrated 1 backups" in result.stdout
    folder = f"backups/standard/{db}/{bid}/"
    assert not objects(s3, locked_bucket, "backups/keep/")
    assert legal_hold(s3, locked_bucket, folder + "data.pfe") == "ON"
    mode, until = retain_until(s3, locked_bucket, folder + "data.pfe")
    assert mode == "COMPLIANCE" and days_ahead(until) > 29.9
    plan_json = loads(run(after, "retention", "--json").stdout)
    assert plan_json["backups"][0]["reasons"][0].endswith(": kept by the old scheme")
    assert "nothing in keep/" in run(after, "lock", "migrate").stdout  # idempotent
    shown = loads(run(after, "show", bid, "--json").stdout)
    assert shown["tier"] == "standard"
    target = unique("restored")
    run(after, "restore", bid, "--target-db", target)
    assert table_digest(pg, target) == table_digest(pg, source_db)
    pg.drop_database(target)


def test_lifecycle_check_proves_lock_retention_and_rules_agree_and_names_a_short_tier(
    lock_env: dict[str, str], s3: S3Server, locked_bucket: str
) -> None:
    run(lock_env, "backup")
    run(lock_env, "backup", "--tier", "compliance")
    applied = run(lock_env, "lifecycle", "apply", "--json")
    # Under a lock, retention deletes: no rule expires a current object by age. The bucket is
    # versioned (a lock needs it), so each tier's old versions expire after its days, and the
    # probes' delete markers go (ExpiredObjectDeleteMarker).
    rules = loads(applied.stdout)["rules"]
    assert [r["ID"] for r in rules if "Days" in r.get("Expiration", {})] == []
    assert any("NoncurrentVersionExpiration" in r for r in rules), rules
    report = loads(run(lock_env, "lifecycle", "check", "--json").stdout)
    assert report["ok"], report
    assert any("OBJECT_LOCK=compliance: each tier is locked" in n for n in report["notes"])

    # Retention raised after the writes: the compliance backups' locks are now too short.
    longer = {**lock_env, "COMPLIANCE_TIER_DAYS": "400", "RETENTION_MONTHLY": "13"}
    failed = run(longer, "lifecycle", "check", check=False)
    assert failed.returncode == 12
    # (The versioned bucket's rules for old versions, written for 365 days, are now short too.)
    problems = [line for line in failed.stdout.splitlines() if line.startswith("problem:")]
    [problem] = [line for line in problems if line.startswith("problem: compliance: ")]
    assert "short of the 400 days" in problem, failed.stdout

    # A rule that would hide locked backups, and a default retention that disagrees.
    client = s3.client()
    rules = client.get_bucket_lifecycle_configuration(Bucket=locked_bucket)["Rules"]
    early = {"ID": "someone-else", "Status": "Enabled", "Filter": {"Prefix": "backups/standard/"}}
    early["Expiration"] = {"Days": 10}
    client.put_bucket_lifecycle_configuration(
        Bucket=locked_bucket, LifecycleConfiguration={"Rules": [*rules, early]}
    )
    report = loads(run(lock_env, "lifecycle", "check", "--json", check=False).stdout)
    assert not report["ok"]
    assert "standard: rule someone-else expires its objects after 10 days" in "\n".join(
        report["problems"]
    )


def test_lifecycle_check_refuses_a_default_retention_that_disagrees(
    lock_env: dict[str, str], s3: S3Server, locked_bucket: str
) -> None:
    # moto takes a default retention only on an empty bucket (AWS takes it at any time).
    s3.client().put_object_lock_configuration(
        Bucket=locked_bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 400}},
        },
    )
    report = loads(run(lock_env, "lifecycle", "check", "--json", check=False).stdout)
    assert not report["ok"]
    text = "\n".join(report["problems"])
    assert "default retention is GOVERNANCE, but OBJECT_LOCK=COMPLIANCE" in text
    assert "default retention (400 days) is longer than the standard tier's lock" in text


def test_lock_status_shows_each_tier_s_locks_holds_and_what_a_delete_would_do(
    lock_env: dict[str, str],
    s3: S3Server,
    locked_bucket: str,
    metadata_db: str,
    env: dict[str, str],
) -> None:
    first = loads(run(lock_env, "backup", "--json").stdout)
    run(lock_env, "backup")
    run(lock_env, "pin", first["id"])
    s3.client().put_object(Bucket=locked_bucket, Key="backups/wal/main/x.pfe", Body=b"unlocked")
    tiers = {t["tier"]: t for t in loads(run(lock_env, "lock", "status", "--json").stdout)["tiers"]}
    standard = tiers["standard"]
    assert standard["objects"] == 6 and standard["without_lock"] == 0
    assert standard["legal_hold"] == 3 and standard["delete_refused_today"] == 6
    assert standard["modes"] == ["COMPLIANCE"] and standard["delete_today"] == "refused for all 6"
    assert 29.9 < days_ahead(datetime.fromisoformat(standard["oldest_retain_until"])) <= 30.01
    assert tiers["wal"]["without_lock"] == 1 and tiers["wal"]["delete_today"] == "allowed for all 1"
    assert days_ahead(datetime.fromisoformat(tiers["repository"]["newest_retain_until"])) > 364.9
    text = run(lock_env, "lock", "status").stdout
    assert (
        "OLDEST UNTIL" in text and "refused for all 6" in text and "1 objects carry no lock" in text
    )
    refused = run(env, "lock", "status", check=False)
    assert refused.returncode == 2 and "needs OBJECT_LOCK" in refused.stderr


def expire_locks(s3: S3Server, bucket: str, prefix: str) -> None:
    """As if the retention had run out: governance locks shortened to now (bypass)."""
    client = s3.client()
    for key in objects(s3, bucket, prefix):
        client.put_object_retention(
            Bucket=bucket,
            Key=key,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": datetime.now(UTC)},
            BypassGovernanceRetention=True,
        )


def test_a_pinned_base_backup_holds_its_chain_and_its_wal_through_retention(
    lock_env: dict[str, str], s3: S3Server, locked_bucket: str, metadata_db: str
) -> None:
    from tests.test_chain_bucket import in_tier, put_chain

    env = {**lock_env, "OBJECT_LOCK": "governance"}
    run(env, "init")
    old = put_chain(env, datetime.now(UTC) - timedelta(days=60), 4, "bbbb")
    newer = put_chain(env, datetime.now(UTC) - timedelta(days=20), 2, "cccc", wal=0x20)
    settings = Settings.from_env(env)
    storage = open_storage(settings.storage, policy(settings))
    for number in range(1, 0x23):  # segments 01 to 22: the old chain's in 02 to 05
        storage.put(f"backups/wal/main/00000001/0000000100000000000000{number:02X}.pfe", b"")
    run(env, "catalog", "sync")
    pinned = run(env, "pin", old[2], "--reason", "audit 2026")
    assert "under a legal hold in base/" in pinned.stdout and "held as well" in pinned.stdout
    assert in_tier(s3, locked_bucket, "keep") == set()
    wal = "backups/wal/main/00000001/0000000100000000000000{:02X}.pfe"
    held = [wal.format(n) for n in (2, 3, 4)]
    for member in old[:3]:
        held += [
            f"backups/base/main/{member}/data.pfe",
            f"backups/base/main/{member}/manifest.json",
        ]
    assert all(legal_hold(s3, locked_bucket, key) == "ON" for key in held)
    assert legal_hold(s3, locked_bucket, f"backups/base/main/{old[3]}/data.pfe") == "OFF"
    assert legal_hold(s3, locked_bucket, wal.format(5)) == "OFF"

    expire_locks(s3, locked_bucket, "backups/")
    lean = {**env, "RETENTION_MIN_KEEP": "1"}
    outcome = loads(run(lean, "retention", "--apply", "--json").stdout)
    assert not outcome["errors"], outcome
    assert in_tier(s3, locked_bucket, "base") == {*old[:3], *newer}
    remaining = sorted(int(k[-6:-4], 16) for k in objects(s3, locked_bucket, "backups/wal/main/"))
    assert remaining == [2, 3, 4, *range(0x20, 0x23)]

    unpinned = run(env, "unpin", old[1])
    assert all(f"unpinned backup {m} of main" in unpinned.stdout for m in old[:3])
    assert all(legal_hold(s3, locked_bucket, key) == "OFF" for key in held)


def test_the_api_refuses_deleting_a_locked_backup_with_409(
    lock_env: dict[str, str], s3: S3Server, locked_bucket: str, metadata_db: str, source_db: str
) -> None:
    from tests.test_api_backup import AUTH, TOKEN, _client

    env = {**lock_env, "DB_NAME": source_db, "MONITOR_API_TOKEN": TOKEN}
    backup = loads(run(env, "backup", "--json").stdout)
    with _client(env) as client:
        refused = client.delete(f"/backup/{backup['id']}", headers=AUTH)
    assert refused.status_code == 409, refused.json
    assert "locked (COMPLIANCE) until" in refused.json["error"]
    assert objects(s3, locked_bucket, f"backups/standard/{backup['database']}/{backup['id']}/")
