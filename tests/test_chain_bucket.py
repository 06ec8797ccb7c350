"""Chains in a real bucket: delete with dependants, pins of a chain, retention around a pin.

The chains are synthesized: signed manifests written by the project's own writer
(`Manifest.to_json`) with a data object beside each, a full and incrementals each naming its
parent, as `permafrost backup --kind incremental` writes them. No PostgreSQL 17 is needed to
decide what depends on what.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from permafrost import layout
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.repo.manifest import Kind, Manifest
from permafrost.retention import chains
from tests.conftest import bucket_env, run
from tests.helpers import loads, objects
from tests.services import Cluster, S3Server

PREFIX = "backups"


def put_chain(
    env: dict[str, str], start: datetime, length: int, tag: str, every: float = 6, wal: int = 2
) -> list[str]:
    """A full at `start` and `length - 1` incrementals `every` hours apart, each in its own WAL
    segment from number `wal` on; their ids, oldest first."""
    repo = Context(Settings.from_env(env)).repository()
    ids: list[str] = []
    for n in range(length):
        moment = start + timedelta(hours=every * n)
        backup_id = f"{moment:%Y%m%dT%H%M%SZ}-{tag}{n:02x}"
        parent, full = (ids[-1], ids[0]) if ids else (None, backup_id)
        _put(repo, backup_id, moment, parent, full, wal + n)
        ids.append(backup_id)
    return ids


def _put(repo, backup_id: str, moment: datetime, parent: str | None, full: str, n: int) -> None:  # type: ignore[no-untyped-def]
    data = layout.data_key(repo.prefix, layout.BASE_TIER, "main", backup_id)
    repo.storage.put(data, b"base backup tar " + backup_id.encode())
    segment = f"0000000100000000000000{n:02X}"
    manifest = Manifest(
        id=backup_id,
        database="main",
        kind=Kind.BASE,
        tier=layout.BASE_TIER,
        started_at=moment.isoformat(),
        finished_at=(moment + timedelta(minutes=1)).isoformat(),
        server_version="18",
        tool_version="18",
        dump_bytes=1,
        compressed_bytes=1,
        stored_bytes=1,
        dump_sha256="",
        stored_sha256="",
        key_id=repo.key.key_id,
        compression={},
        encryption={},
        objects={"data": data},
        physical={
            "timeline": 1,
            "start_lsn": f"0/{n * 0x1000000 + 0x28:X}",
            "stop_lsn": f"0/{n * 0x1000000 + 0x100:X}",
            "wal_start": segment,
            "wal_stop": segment,
            "stop_time": (moment + timedelta(minutes=1)).isoformat(),
            "incremental": parent is not None,
            "parent_id": parent,
            "chain_full_id": full,
            "changed_bytes": 1,
        },
    )
    key = layout.manifest_key(repo.prefix, layout.BASE_TIER, "main", backup_id)
    repo.storage.put(key, manifest.to_json(repo.key))


def in_tier(s3: S3Server, bucket: str, tier: str) -> set[str]:
    """The ids of the backups whose manifest is in `tier`."""
    keys = objects(s3, bucket, f"{PREFIX}/{tier}/main/")
    return {k.split("/")[3] for k in keys if k.endswith("/manifest.json")}


def audit(pg: Cluster, metadata_db: str) -> list[tuple[str, str, str | None]]:
    return pg.execute(
        "SELECT action, target, details->>'dependant_of' FROM permafrost.audit_log ORDER BY id",
        metadata_db,
    )


def test_delete_of_a_member_lists_then_removes_its_dependants(
    env: dict[str, str], s3: S3Server, bucket: str, pg: Cluster, metadata_db: str
) -> None:
    run(env, "init")
    full, first, second, third = put_chain(env, datetime.now(UTC) - timedelta(days=1), 4, "aaaa")
    run(env, "catalog", "sync")
    dry = run(env, "delete", first, check=False)
    assert dry.returncode == 2 and "--apply" in dry.stderr and "nothing was deleted" in dry.stderr
    assert f"would delete backup {first} of main" in dry.stdout
    assert "the 2 backups that depend on it" in dry.stdout
    assert dry.stdout.index(third) < dry.stdout.index(second)  # newest first
    assert in_tier(s3, bucket, "base") == {full, first, second, third}
    done = run(env, "delete", first, "--apply")
    assert "and the 2 backups depending on it" in done.stdout
    assert in_tier(s3, bucket, "base") == {full}
    assert not [k for k in objects(s3, bucket, PREFIX) if first in k or third in k]
    assert audit(pg, metadata_db) == [
        ("delete", third, first),
        ("delete", second, first),
        ("delete", first, None),
    ]
    listed = {b["id"] for b in loads(run(env, "list", "--json").stdout)}
    assert listed == {full}


def test_a_pinned_incremental_pins_its_chain_which_survives_retention_and_unpins_whole(
    env: dict[str, str], s3: S3Server, bucket: str, pg: Cluster, metadata_db: str
) -> None:
    run(env, "init")
    old = put_chain(env, datetime.now(UTC) - timedelta(days=60), 4, "bbbb")
    newer = put_chain(env, datetime.now(UTC) - timedelta(days=20), 2, "cccc", wal=0x20)
    for number in range(1, 0x23):  # segments 01 to 22: the old chain's in 02 to 05
        key = f"{PREFIX}/wal/main/00000001/0000000100000000000000{number:02X}.pfe"
        s3.client().put_object(Bucket=bucket, Key=key, Body=b"")
    run(env, "catalog", "sync")
    pinned = run(env, "pin", old[2], "--reason", "audit 2026")
    assert f"pinned backup {old[2]} of main" in pinned.stdout
    assert f"pinned its chain too: the 2 backups it restores from ({old[0]}, {old[1]})" in (
        pinned.stdout
    )
    assert in_tier(s3, bucket, "keep") == set(old[:3])
    assert in_tier(s3, bucket, "base") == {old[3], *newer}
    # The chain split between keep/ and base/ is found by id, whole.
    repo = Context(Settings.from_env(env)).repository()
    found = chains.members(repo, "main")
    assert chains.ancestors(old[3], chains.parents_of(found)) == [old[2], old[1], old[0]]
    assert {found[m].tier for m in old} == {"keep", "base"}
    # A delete that would take a pinned member is refused, in one line.
    refused = run(env, "delete", old[3], "--apply", check=False)
    assert refused.returncode == 2 and f"unpin {old[0]}" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # Retention keeps the pinned chain and deletes what nothing depends on.
    lean = {**env, "RETENTION_MIN_KEEP": "1"}
    plan = {b["id"]: b for b in loads(run(lean, "retention", "--json").stdout)["backups"]}
    assert [plan[m]["action"] for m in old] == ["keep", "keep", "keep", "delete"]
    assert plan[old[0]]["reasons"][0].endswith(f": audit 2026; an ancestor of pinned {old[2]}")
    assert f"chain: {old[2]} depends on it" in plan[old[0]]["reasons"]
    run(lean, "retention", "--apply")
    assert in_tier(s3, bucket, "keep") == set(old[:3])
    assert in_tier(s3, bucket, "base") == set(newer)
    # WAL: the pinned members' own (start to end), and everything from the newer chain on.
    wal = sorted(int(k[-6:-4], 16) for k in objects(s3, bucket, f"{PREFIX}/wal/main/"))
    assert wal == [2, 3, 4, *range(0x20, 0x23)]
    # Unpinning one member unpins the chain.
    unpinned = run(env, "unpin", old[1])
    assert all(f"unpinned backup {m} of main" in unpinned.stdout for m in old[:3])
    assert in_tier(s3, bucket, "keep") == set()
    assert in_tier(s3, bucket, "base") == {*old[:3], *newer}
    actions = [(a, t) for a, t, _ in audit(pg, metadata_db) if a in ("pin", "unpin")]
    assert actions == [("pin", m) for m in old[:3]] + [("unpin", m) for m in reversed(old[:3])]


def test_the_api_deletes_dependants_only_when_told_to(
    env: dict[str, str], s3: S3Server, bucket: str, pg: Cluster, metadata_db: str
) -> None:
    from monitor.app import create_app

    token = "t0ken-for-tests-only-0123456789"
    auth = {"Authorization": f"Bearer {token}"}
    api_env = {**env, "MONITOR_API_TOKEN": token}
    run(env, "init")
    full, first, second = put_chain(env, datetime.now(UTC) - timedelta(days=1), 3, "dddd")
    run(env, "catalog", "sync")
    app = create_app(Settings.from_env(api_env), evaluate=False)
    app.testing = True
    with app.test_client() as client:
        asked = client.delete(f"/backup/{first}", headers=auth)
        assert asked.status_code == 409 and f"/backup/{first}?apply=true" in asked.json["error"]
        assert [b["id"] for b in asked.json["would_delete"]] == [second, first]
        assert in_tier(s3, bucket, "base") == {full, first, second}
        done = client.delete(f"/backup/{first}?apply=true", headers=auth)
        assert done.status_code == 200, done.json
        assert done.json["deleted"] == [second, first]
        assert client.get(f"/backup/{second}").json["status"] == "deleted"
    assert in_tier(s3, bucket, "base") == {full}
    assert audit(pg, metadata_db) == [("delete", second, first), ("delete", first, None)]


def test_lifecycle_check_fails_on_a_rule_set_that_would_cut_a_chain(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **bucket_env(s3, bucket)}
    run(env, "init")
    now = datetime.now(UTC)
    put_chain(env, now - timedelta(days=2), 9, "eeee")  # two days of incrementals
    run(env, "lifecycle", "apply")
    assert "lifecycle check passed" in run(env, "lifecycle", "check").stdout  # 30 >= 14 + 7
    rules = s3.client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    for rule in rules:
        if rule["ID"] == "permafrost-base":
            rule["Expiration"] = {"Days": 20}
    s3.client().put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": rules}
    )
    cut = run(env, "lifecycle", "check", check=False)
    assert cut.returncode == 12
    assert (
        "problem: rule permafrost-base expires everything under backups/base/ after 20 days: "
        "it would cut a chain in the base tier (backups/base/)"
    ) in cut.stdout
    assert "PITR_WINDOW_DAYS=14" in cut.stdout and "BASE_BACKUP_SCHEDULE" in cut.stdout
    # A chain that went on for 11 days (a weekly full failed) needs 14 + 11 days of base/.
    long = put_chain(env, now - timedelta(days=12), 4, "ffff", every=88)
    longer = {**env, "WAL_RETENTION_DAYS": "24"}
    run(longer, "lifecycle", "apply", check=False)
    checked = run(longer, "lifecycle", "check", check=False)
    assert checked.returncode == 12
    assert "problem: WAL_RETENTION_DAYS=24 (the expiry of base/) would cut a chain" in (
        checked.stdout
    )
    assert f"the longest chain in base/ ({long[0]} and 3 incrementals over 11.0 days)" in (
        checked.stdout
    )
    assert "set WAL_RETENTION_DAYS to 25 or more" in checked.stdout
    assert "problem: rule permafrost-base expires everything under backups/base/ after 24" in (
        checked.stdout
    )
