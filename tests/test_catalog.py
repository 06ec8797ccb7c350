"""The metadata store: outages do not stop backups, and the bucket can always rebuild it."""

from __future__ import annotations

import psycopg

from tests.conftest import run, unique
from tests.helpers import loads
from tests.services import Cluster


def test_a_backup_completes_while_the_metadata_store_is_down(
    env: dict[str, str], pg: Cluster, metadata_db: str, refused: int
) -> None:
    down = {**env, "METADATA_DATABASE_URL": f"postgresql://u:pw@127.0.0.1:{refused}/meta"}
    result = run(down, "backup", "--json")
    assert "warning: cannot reach the metadata store" in result.stderr
    assert "catalog sync" in result.stderr and "pw@" not in result.stderr
    offline = loads(result.stdout)
    # list still answers from the bucket
    assert [r["id"] for r in loads(run(down, "list", "--json").stdout)] == [offline["id"]]
    run(down, "verify", offline["id"])
    # the next backup with the store back catalogues the one it missed
    online = loads(run(env, "backup", "--json").stdout)
    ids = [r["id"] for r in loads(run(env, "list", "--json").stdout)]
    assert ids == [online["id"], offline["id"]]


def test_sync_rebuilds_a_lost_catalog_from_the_bucket(
    env: dict[str, str], pg: Cluster, metadata_db: str
) -> None:
    run(env, "backup", "--description", "first")
    run(env, "backup", "--tier", "compliance", "--tag", "monthly")
    before = loads(run(env, "list", "--json").stdout)
    pg.drop_database(metadata_db)
    pg.create_database(metadata_db)
    assert loads(run(env, "list", "--json").stdout) == []
    assert "2 added" in run(env, "catalog", "sync").stdout
    after = loads(run(env, "list", "--json").stdout)
    keep = (
        "id",
        "database",
        "tier",
        "status",
        "size_bytes",
        "description",
        "tags",
        "started_at",
        "finished_at",
    )
    assert [{k: r[k] for k in keep} for r in after] == [{k: r[k] for k in keep} for r in before]
    assert "0 added, 2 updated" in run(env, "catalog", "sync").stdout


def test_sync_notices_backups_that_left_the_bucket(env: dict[str, str], s3, bucket) -> None:
    record = loads(run(env, "backup", "--json").stdout)
    s3.client().delete_object(Bucket=bucket, Key=record["manifest_key"])
    assert "1 marked deleted" in run(env, "catalog", "sync").stdout
    assert loads(run(env, "list", "--json").stdout) == []


def test_delete_needs_yes_and_is_audited(
    env: dict[str, str], pg: Cluster, metadata_db: str, s3, bucket
) -> None:
    record = loads(run(env, "backup", "--json").stdout)
    refused = run(env, "delete", record["id"], check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(loads(run(env, "list", "--json").stdout)) == 1
    run(env, "delete", record["id"], "--yes")
    assert loads(run(env, "list", "--json").stdout) == []
    assert [k for k in _keys(s3, bucket) if record["id"] in k] == []
    rows = pg.execute("SELECT action, target FROM permafrost.audit_log", metadata_db)
    assert rows == [("delete", record["id"])]
    gone = run(env, "show", record["id"], check=False)
    assert gone.returncode == 3


def _keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_stats_counts_backups_and_bytes(env: dict[str, str], source_db: str) -> None:
    run(env, "backup")
    run(env, "backup")
    run(env, "verify", "latest")
    stats = loads(run(env, "stats", "--json").stdout)
    assert len(stats) == 1
    assert stats[0]["database"] == source_db and stats[0]["backups"] == 2
    assert stats[0]["size_bytes"] > 0 and stats[0]["last_verified"] is not None
    assert "2 backups" in run(env, "stats").stdout


def test_jobs_are_recorded(env: dict[str, str], pg: Cluster, metadata_db: str) -> None:
    run(env, "backup")
    rows = pg.execute(
        "SELECT job, status, details->>'size_bytes' IS NOT NULL FROM permafrost.job_runs",
        metadata_db,
    )
    assert rows == [("backup", "succeeded", True)]


def test_migrations_apply_once_under_concurrency(pg: Cluster) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from permafrost.catalog.store import connect
    from permafrost.config.settings import Secret

    name = pg.create_database(unique("migrate"))
    with ThreadPoolExecutor(4) as pool:
        catalogs = list(pool.map(lambda _: connect(Secret(pg.url(name))), range(4)))
    with psycopg.connect(pg.url(name)) as conn:
        versions = conn.execute("SELECT version FROM permafrost.schema_migrations").fetchall()
    from permafrost.catalog.db import migrations

    expected = [(version,) for version, _, _ in migrations()]
    assert len(expected) >= 3 and sorted(versions) == expected
    for catalog in catalogs:
        catalog.close()
    pg.drop_database(name)


def test_without_a_metadata_store_stats_read_the_bucket_and_delete_refuses(
    env: dict[str, str], s3, bucket
) -> None:
    bare = {k: v for k, v in env.items() if k != "METADATA_DATABASE_URL"}
    record = loads(run(bare, "backup", "--json").stdout)
    stats = loads(run(bare, "stats", "--json").stdout)
    assert [(s["backups"], s["size_bytes"]) for s in stats] == [(1, record["size_bytes"])]
    refused = run(bare, "delete", record["id"], "--yes", check=False)
    assert refused.returncode == 8
    assert "METADATA_DATABASE_URL is not set" in refused.stderr
    assert "nothing was deleted" in refused.stderr
    assert [r["id"] for r in loads(run(bare, "list", "--json").stdout)] == [record["id"]]


def test_before_the_first_backup_there_is_nothing_to_list(env: dict[str, str], tmp_path) -> None:
    fresh = {k: v for k, v in env.items() if k != "METADATA_DATABASE_URL"}
    fresh["STORAGE_URL"] = f"file://{tmp_path}/empty-bucket"
    assert run(fresh, "list").stdout == "no backups\n"
    assert loads(run(fresh, "list", "--json").stdout) == []
    assert run(fresh, "show", "latest", check=False).returncode == 3
