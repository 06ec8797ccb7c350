"""Repository ids: a mistyped STORAGE_URL never makes a new repository, and every lookup sees
the configured repository only (real files, the S3 server, real clusters, the real command)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg

from monitor.app import create_app
from permafrost.config.settings import Settings
from permafrost.errors import NotFound
from permafrost.repo.config import open_repository
from permafrost.storage import open_storage
from tests.conftest import run
from tests.helpers import get_object, loads, objects, put_object
from tests.services import Cluster, S3Server


def _config(s3: S3Server, bucket: str, prefix: str) -> dict[str, object]:
    return dict(json.loads(get_object(s3, bucket, f"{prefix}/permafrost.json")))


def _rows(pg: Cluster, metadata_db: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(pg.url(metadata_db), autocommit=True) as conn:
        return conn.execute(query).fetchall()


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_it_refuses_a_mistyped_file_url_where_the_catalog_knows_the_repository(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The issue's reproduction: `file:///nonexistent/dir/bucket` exited 0 and made a new
    repository (and, as root, /nonexistent); `latest` then resolved to its backup."""
    real = {**env, "STORAGE_URL": f"file://{tmp_path}/bucket"}
    first = loads(run(real, "backup", "--json").stdout)
    missing = tmp_path / "nonexistent"  # as /nonexistent, without writing to / before the fix
    typo = {**env, "STORAGE_URL": f"file://{missing}/dir/bucket"}

    refused = run(typo, "backup", check=False)

    assert refused.returncode == 3, refused.stderr
    assert not missing.exists()
    repository_id = json.loads((tmp_path / "bucket" / "permafrost.json").read_text())["id"]
    line = _one_line(refused.stderr)
    assert f"no Permafrost repository at file://{missing}/dir/bucket" in line
    assert f"repository {repository_id} at file://{tmp_path}/bucket" in line
    assert "`permafrost init`" in line
    assert not missing.exists()
    shown = loads(run(real, "show", "latest", "--json").stdout)
    assert shown["id"] == first["id"]


def test_it_refuses_a_mistyped_s3_prefix_and_writes_nothing_there(
    env: dict[str, str], s3: S3Server, bucket: str
) -> None:
    run(env, "backup")
    typo = {**env, "STORAGE_URL": f"s3://{bucket}/bakcups"}
    refused = run(typo, "backup", check=False)
    assert refused.returncode == 3, refused.stderr
    assert "`permafrost init` to create a new repository" in _one_line(refused.stderr)
    assert not [k for k in objects(s3, bucket) if k.startswith("bakcups/")]


def test_a_new_deployment_makes_its_repository_but_never_missing_parent_directories(
    env: dict[str, str], tmp_path: Path
) -> None:
    deep = {**env, "STORAGE_URL": f"file://{tmp_path}/missing/dir/bucket"}
    refused = run(deep, "backup", check=False)
    assert refused.returncode == 6, refused.stderr
    assert f"{tmp_path}/missing/dir does not exist" in _one_line(refused.stderr)
    assert not (tmp_path / "missing").exists()

    fresh = {**env, "STORAGE_URL": f"file://{tmp_path}/bucket"}  # the parent exists
    run(fresh, "backup")
    config = json.loads((tmp_path / "bucket" / "permafrost.json").read_text())
    assert uuid.UUID(config["id"])


def test_init_makes_another_repository_and_each_lookup_sees_only_the_configured_one(
    env: dict[str, str],
    s3: S3Server,
    bucket: str,
    source_db: str,
    pg: Cluster,
    metadata_db: str,
    tmp_path: Path,
) -> None:
    env_a = {**env, "DB_NAME": source_db}
    env_b = {**env_a, "STORAGE_URL": f"s3://{bucket}/other"}
    in_a = loads(run(env_a, "backup", "--json").stdout)
    created = run(env_b, "init").stdout
    id_b = _config(s3, bucket, "other")["id"]
    assert f"repository initialised at s3://{bucket}/other at {s3.url} (id {id_b}," in created
    in_b = loads(run(env_b, "backup", "--json").stdout)  # newer than in_a

    assert [r["id"] for r in loads(run(env_a, "list", "--json").stdout)] == [in_a["id"]]
    assert [r["id"] for r in loads(run(env_b, "list", "--json").stdout)] == [in_b["id"]]
    assert loads(run(env_a, "show", "latest", "--json").stdout)["id"] == in_a["id"]
    unknown = run(env_a, "show", in_b["id"], check=False)
    assert unknown.returncode == 3 and f"no backup {in_b['id']}" in unknown.stderr

    kept = loads(run(env_b, "retention", "--json").stdout)["backups"]
    assert [d["id"] for d in kept] == [in_b["id"]]

    app = create_app(Settings.from_env(env_a), evaluate=False)
    with app.test_client() as client:
        status = client.get("/status").json
        assert status["databases"][source_db]["last_success"]["id"] == in_a["id"]
        listed = client.get("/backups").json
        assert [b["id"] for b in listed["backups"]] == [in_a["id"]]

    segment_a = tmp_path / "000000010000000000000003"
    segment_a.write_bytes(b"a" * 1024)
    segment_b = tmp_path / "000000010000000000000005"
    segment_b.write_bytes(b"b" * 1024)
    run(env_a, "wal-push", str(segment_a))
    run(env_b, "wal-push", str(segment_b))
    id_a = _config(s3, bucket, "backups")["id"]
    wal = dict(
        _rows(pg, metadata_db, "SELECT repository_id, last_segment FROM permafrost.wal_archive")
    )
    assert wal == {id_a: segment_a.name, id_b: segment_b.name}

    run(env_b, "retention", "--apply")  # measures the storage of its own repository only
    run(env_a, "retention", "--apply")
    usage = _rows(pg, metadata_db, "SELECT repository_id, database FROM permafrost.storage_usage")
    assert {repository for repository, _ in usage} == {id_a, id_b}


def test_an_upgraded_repository_gets_its_id_and_keeps_its_catalogued_backups(
    env: dict[str, str], s3: S3Server, bucket: str, pg: Cluster, metadata_db: str
) -> None:
    old = loads(run(env, "backup", "--json").stdout)
    # What a deployment from before ids looks like once migrated: no id in permafrost.json,
    # the catalog's rows with none either, no repository known.
    config = _config(s3, bucket, "backups")
    config.pop("id", None)
    put_object(s3, bucket, "backups/permafrost.json", json.dumps(config).encode())
    _rows(pg, metadata_db, "UPDATE permafrost.backups SET repository_id = '' RETURNING id")
    _rows(pg, metadata_db, "DELETE FROM permafrost.repositories RETURNING id")

    assert [r["id"] for r in loads(run(env, "list", "--json").stdout)] == [old["id"]]
    assert "id" not in _config(s3, bucket, "backups")  # a read writes nothing

    typo = {**env, "STORAGE_URL": f"s3://{bucket}/bakcups"}
    refused = run(typo, "backup", check=False)
    assert refused.returncode == 3 and "the backups of another repository" in refused.stderr

    new = loads(run(env, "backup", "--json").stdout)  # the first write gives it its id
    repository_id = _config(s3, bucket, "backups")["id"]
    assert uuid.UUID(str(repository_id))
    listed = [r["id"] for r in loads(run(env, "list", "--json").stdout)]
    assert listed == [new["id"], old["id"]]
    rows = _rows(pg, metadata_db, "SELECT DISTINCT repository_id FROM permafrost.backups")
    assert rows == [(repository_id,)]


def test_init_is_idempotent_and_says_so(env: dict[str, str], tmp_path: Path) -> None:
    local = {**env, "STORAGE_URL": f"file://{tmp_path}/bucket"}
    first = run(local, "init").stdout
    again = run(local, "init").stdout
    repository_id = json.loads((tmp_path / "bucket" / "permafrost.json").read_text())["id"]
    assert f"repository initialised at file://{tmp_path}/bucket (id {repository_id}," in first
    assert (
        f"repository already initialised at file://{tmp_path}/bucket (id {repository_id}," in again
    )


def test_the_monitor_connected_before_the_first_backup_shows_it(
    env: dict[str, str], source_db: str
) -> None:
    """A long-lived connection, scoped before the repository existed, follows it once made."""
    app = create_app(Settings.from_env({**env, "DB_NAME": source_db}), evaluate=False)
    with app.test_client() as client:  # one thread: the same metadata connection throughout
        assert client.get("/backups").json["backups"] == []
        made = loads(run(env, "backup", "--json").stdout)
        assert [b["id"] for b in client.get("/backups").json["backups"]] == [made["id"]]


def test_two_first_backups_at_once_share_the_repository_the_winner_made(tmp_path: Path) -> None:
    """Two first writes of a new deployment race: the loser's guard finds the winner's
    repository in the catalog and refused it as "another repository" (seen as a flaky
    scheduler test, whose daily and compliance backups fired together). The repository is
    there now, in the bucket this write opens: the loser uses it."""
    settings = Settings.from_env(
        {
            "STORAGE_URL": f"file://{tmp_path}/bucket",
            "BACKUP_ENCRYPTION_KEY": "a passphrase long enough for the check",
        }
    )
    storage = open_storage(settings.storage)
    made: list[str] = []

    def the_other_process_wins() -> None:
        made.append(open_repository(storage, settings, create=True).id)
        raise NotFound("no Permafrost repository here, but the catalog knows another one")

    repo = open_repository(storage, settings, create=True, before_create=the_other_process_wins)

    assert repo.id == made[0]
    stored = json.loads((tmp_path / "bucket" / "permafrost.json").read_text())
    assert stored["id"] == made[0]
