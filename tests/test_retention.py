"""Retention: the plan on a year of synthetic backups, min-keep, pins, and --apply on a bucket."""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from permafrost.config.settings import RetentionSettings
from permafrost.retention.plan import Item, Pin, plan
from tests.conftest import run
from tests.helpers import loads, objects
from tests.services import Cluster, S3Server

NOW = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)  # a Sunday, after the 04:00 cleanup slot
POLICY = RetentionSettings()


def backup_id(moment: datetime, n: int = 0) -> str:
    return f"{moment:%Y%m%dT%H%M%SZ}-{n:06x}"


def item(moment: datetime, tier: str = "standard", db: str = "app", **kw: object) -> Item:
    return Item(
        id=backup_id(moment, kw.pop("n", 0)),  # type: ignore[arg-type]
        database=db,
        tier=tier,
        kind=str(kw.pop("kind", "logical")),
        started_at=moment,
        **kw,  # type: ignore[arg-type]
    )


def year_of_backups() -> list[Item]:
    """Daily standard backups at 02:00 for a year, monthly compliance ones for two."""
    daily = [item(datetime(2026, 11, 22, 2, tzinfo=UTC) - timedelta(days=d)) for d in range(365)]
    monthly = []
    for months in range(25):
        year, month = divmod(2026 * 12 + 10 - months, 12)
        monthly.append(item(datetime(year, month + 1, 1, 1, tzinfo=UTC), "compliance", n=1))
    return daily + monthly


def by_action(decisions: list) -> dict[str, set[date]]:  # type: ignore[type-arg]
    out: dict[str, set[date]] = {}
    for d in decisions:
        out.setdefault(f"{d.action}:{d.item.tier}", set()).add(d.item.started_at.date())
    return out


def test_a_year_of_backups_keeps_exactly_what_the_rules_say() -> None:
    items = year_of_backups()
    verified = next(i for i in items if i.started_at.date() == date(2026, 6, 1))
    verified.verified = True
    decisions = plan(items, POLICY, NOW)
    assert len(decisions) == len(items)
    actions = by_action(decisions)
    daily = {date(2026, 11, 22) - timedelta(days=d) for d in range(7)}  # Nov 16 to 22
    weekly = {date(2026, 11, 15), date(2026, 11, 8), date(2026, 11, 1)}  # W46, W45, W44
    assert actions["keep:standard"] == daily | weekly
    assert actions["hold:standard"] == {date(2026, 6, 1)}  # newest verified, past expiry
    kept_compliance = {date(2025 + (m + 11) // 12, (m + 11) % 12 + 1, 1) for m in range(12)}
    assert actions["keep:compliance"] == kept_compliance  # 2025-12-01 to 2026-11-01
    assert len(actions["delete:compliance"]) == 13
    assert len(actions["delete:standard"]) == 365 - 11
    reasons = {d.item.started_at.date(): d.reasons for d in decisions if d.item.tier == "standard"}
    assert reasons[date(2026, 11, 22)] == [
        "daily 2026-11-22",
        "weekly 2026-W47",
        "min-keep: one of the newest 3",
    ]
    assert reasons[date(2026, 11, 8)] == ["weekly 2026-W45"]
    assert reasons[date(2026, 6, 1)][0] == "newest verified"
    assert reasons[date(2026, 5, 1)] == ["expired: 205 days old, kept by no rule"]


def test_min_keep_protects_the_last_good_backups_when_every_recent_run_failed() -> None:
    # Good backups until 10 October; every run since has failed (no objects in the bucket).
    items = [item(datetime(2026, 10, 10, 2, tzinfo=UTC) - timedelta(days=d)) for d in range(40)]
    decisions = plan(items, POLICY, NOW)
    kept = [d for d in decisions if d.keep]
    assert [d.item.started_at.date() for d in kept] == [
        date(2026, 10, 10),
        date(2026, 10, 9),
        date(2026, 10, 8),
    ]
    # Older than the standard tier's lifecycle expiry allows: moved to keep/ before it expires.
    assert all(d.action == "hold" for d in kept)
    assert all(d.reasons[0] == "min-keep: one of the newest 3" for d in kept)
    assert sum(1 for d in decisions if d.action == "delete") == 37


def test_pins_survive_and_holds_are_released_when_no_rule_needs_them() -> None:
    old = datetime(2025, 3, 3, 2, tzinfo=UTC)
    pinned = item(old, "keep", pin=Pin("2025-03-04", "ops@host", "audit 2025", "standard"))
    held = item(
        old + timedelta(days=1),
        "keep",
        pin=Pin("x", "retention", "min-keep", "standard", hold=True),
    )
    recent = [item(NOW - timedelta(hours=3 + 24 * d)) for d in range(5)]
    decisions = {d.item.id: d for d in plan([pinned, held, *recent], POLICY, NOW)}
    assert decisions[pinned.id].action == "keep"
    assert decisions[pinned.id].reasons == ["pinned by ops@host: audit 2025"]
    assert decisions[held.id].action == "release"


def test_base_backups_are_kept_for_the_pitr_window() -> None:
    bases = [
        item(NOW - timedelta(days=d, hours=3), "base", db="main", kind="base", n=d)
        for d in (0, 7, 14, 21, 28, 35)
    ]
    decisions = plan(bases, POLICY, NOW)
    actions = {round((NOW - d.item.started_at).days): d.action for d in decisions}
    # Inside 14 days: 0, 7; the one before the window start (14 days 3 h) recovers its start.
    assert actions == {0: "keep", 7: "keep", 14: "keep", 21: "delete", 28: "delete", 35: "delete"}


@st.composite
def histories(draw: st.DrawFn) -> list[Item]:
    count = draw(st.integers(0, 60))
    offsets = draw(st.lists(st.integers(0, 800 * 24), min_size=count, max_size=count))
    out = []
    for n, hours in enumerate(offsets):
        tier = draw(st.sampled_from(["standard", "standard", "compliance", "keep"]))
        pin = Pin("t", "ops", "", "standard") if tier == "keep" else None
        out.append(
            item(
                NOW - timedelta(hours=hours),
                tier,
                db=draw(st.sampled_from(["a", "b"])),
                n=n,
                pin=pin,
                verified=draw(st.booleans()),
            )
        )
    return out


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(1, 5))
def test_pins_and_min_keep_always_stay_and_decisions_are_stable(
    items: list[Item], min_keep: int
) -> None:
    policy = RetentionSettings(min_keep=min_keep)
    decisions = plan(items, policy, NOW)
    kept = {d.item.id for d in decisions if d.keep}
    assert {i.id for i in items if i.tier == "keep"} <= kept
    for db in ("a", "b"):
        newest = sorted((i for i in items if i.database == db), key=lambda i: (i.started_at, i.id))[
            -min_keep:
        ]
        assert {i.id for i in newest} <= kept
    # Planning again over what stays deletes nothing more: the decisions are stable.
    again = plan([i for i in items if i.id in kept], policy, NOW)
    assert all(d.keep for d in again)


# --- on a bucket, through the command ------------------------------------------------------


def _synthetic(bucket: Path, tier: str, db: str, moment: datetime, n: int = 0) -> Path:
    folder = bucket / tier / db / backup_id(moment, n)
    folder.mkdir(parents=True)
    (folder / "data.pfe").write_bytes(b"x" * 1000)
    (folder / "manifest.json").write_bytes(b"{}")
    return folder


def test_retention_dry_run_then_apply_on_a_bucket(
    env: dict[str, str], pg: Cluster, metadata_db: str, tmp_path: Path
) -> None:
    bucket = tmp_path / "bucket"
    env = {**env, "STORAGE_URL": f"file://{bucket}"}
    run(env, "init")
    today = datetime.now(UTC).replace(hour=0, minute=30, second=0, microsecond=0)
    folders = [_synthetic(bucket, "standard", "app", today - timedelta(days=d)) for d in range(40)]
    stale = bucket / "standard" / "app" / backup_id(today - timedelta(days=3), 7)
    stale.mkdir()
    (stale / "data.pfe").write_bytes(b"half a backup")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale / "data.pfe", (two_days_ago, two_days_ago))
    fresh = bucket / "standard" / "app" / backup_id(today, 8)
    fresh.mkdir()
    (fresh / "data.pfe").write_bytes(b"a backup being written")

    dry = loads(run(env, "retention", "--json").stdout)
    assert not dry["applied"]
    deleted = {b["id"] for b in dry["backups"] if b["action"] == "delete"}
    kept = {b["id"] for b in dry["backups"] if b["keep"]}
    assert len(kept) >= 7 and len(deleted) == 40 - len(kept)
    assert [o["folder"].rstrip("/").rsplit("/", 1)[-1] for o in dry["orphans"]] == [stale.name]
    assert all(f.exists() for f in folders) and stale.exists()  # a dry run changes nothing

    text = run(env, "retention").stdout
    assert "dry run:" in text and "add --apply" in text and "daily" in text

    result = run(env, "retention", "--apply")
    assert "retention applied" in result.stdout
    remaining = {f.name for f in (bucket / "standard" / "app").iterdir()}
    assert remaining == kept | {fresh.name}
    with psycopg.connect(pg.url(metadata_db)) as conn:
        audit = conn.execute(
            "SELECT action, count(*) FROM permafrost.audit_log GROUP BY action"
        ).fetchall()
        usage = conn.execute(
            "SELECT tier, database, objects FROM permafrost.storage_usage"
        ).fetchall()
    assert dict(audit) == {"retention-delete": len(deleted), "retention-orphan": 1}
    assert ("standard", "app", 2 * len(kept) + 1) in usage


def test_apply_refuses_without_the_metadata_store(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "STORAGE_URL": f"file://{tmp_path / 'bucket'}"}
    env.pop("METADATA_DATABASE_URL")
    run(env, "init")
    _synthetic(tmp_path / "bucket", "standard", "app", NOW - timedelta(days=90))
    result = run(env, "retention", "--apply", check=False)
    assert result.returncode == 8
    assert "audit log" in result.stderr and "nothing was changed" in result.stderr
    assert (tmp_path / "bucket" / "standard" / "app").exists()


def test_a_pinned_backup_moves_to_keep_and_back(
    env: dict[str, str], s3: S3Server, bucket: str
) -> None:
    backup = loads(run(env, "backup", "--json").stdout)
    bid, db = backup["id"], backup["database"]
    result = run(env, "pin", bid, "--reason", "legal hold 2026-11")
    assert "pinned backup" in result.stdout
    keys = objects(s3, bucket, "backups/")
    assert f"backups/keep/{db}/{bid}/pin.json" in keys
    assert f"backups/keep/{db}/{bid}/manifest.json" in keys
    assert not [k for k in keys if k.startswith("backups/standard/")]
    shown = loads(run(env, "show", bid, "--json").stdout)
    assert shown["tier"] == "keep"
    run(env, "verify", bid)  # the data is found beside the moved manifest
    plan_json = loads(run(env, "retention", "--json").stdout)
    [decision] = plan_json["backups"]
    assert decision["action"] == "keep" and decision["tier"] == "keep"
    assert decision["reasons"][0].startswith("pinned by ")
    assert decision["reasons"][0].endswith(": legal hold 2026-11")
    again = run(env, "pin", bid)
    assert "already pinned" in again.stdout
    run(env, "unpin", bid)
    keys = objects(s3, bucket, "backups/")
    assert f"backups/standard/{db}/{bid}/manifest.json" in keys
    assert not [k for k in keys if k.startswith("backups/keep/")]
    run(env, "verify", bid)
    missing = run(env, "unpin", bid, check=False)
    assert missing.returncode == 2 and "not pinned" in missing.stderr


def test_a_compliance_backup_kept_by_count_is_held_before_its_tier_expires() -> None:
    policy = RetentionSettings(monthly=24)
    old = item(NOW - timedelta(days=363, hours=12), "compliance", n=2)
    young = item(NOW - timedelta(days=30), "compliance", n=3)
    decisions = {d.item.id: d for d in plan([old, young], policy, NOW)}
    assert decisions[old.id].action == "hold"  # two days before the 365-day expiry, not after
    assert decisions[young.id].action == "keep"


def test_base_backups_are_never_held() -> None:
    # Pinning base backups, with their chains: tests/test_chain_bucket.py.
    stale = [
        item(NOW - timedelta(days=40 + d), "base", db="main", kind="base", n=d) for d in (0, 1)
    ]
    assert {d.action for d in plan(stale, POLICY, NOW)} == {"keep"}  # min-keep, no hold
