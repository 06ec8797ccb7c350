"""`permafrost restore`: what comes back, what is refused, and what is never touched."""

from __future__ import annotations

import re
import subprocess

import pytest

from permafrost.repo import crypto
from permafrost.repo.manifest import parse
from tests.conftest import KEY, run
from tests.helpers import flip_byte, get_object, loads, put_object, table_digest
from tests.services import Cluster


@pytest.fixture
def backup(env: dict[str, str]) -> dict:
    record = loads(run(env, "backup", "--json").stdout)
    return loads(run(env, "show", record["id"], "--json").stdout)


@pytest.fixture
def target(pg: Cluster, source_db: str):
    name = f"{source_db}_t"
    yield name
    pg.drop_database(name)


def databases(pg: Cluster) -> set[str]:
    return {row[0] for row in pg.execute("SELECT datname FROM pg_database")}


def test_it_restores_every_row_and_says_so(env, pg, source_db, backup, target, metadata_db):
    result = run(env, "restore", "latest", "--target-db", target)
    assert table_digest(pg, target) == table_digest(pg, source_db)
    assert re.search(r"public\.customers +2000 +2000\n", result.stdout)
    assert f"restored backup {backup['id']} into {target}" in result.stdout
    assert not [d for d in databases(pg) if "_pfrestore_" in d]
    audit = pg.execute(
        "SELECT action, target, details->>'result' FROM permafrost.audit_log", metadata_db
    )
    assert audit == [("restore", backup["id"], "succeeded")]


def test_an_existing_target_is_refused_and_left_unchanged(env, pg, backup, target) -> None:
    pg.create_database(target)
    pg.execute("CREATE TABLE keep_me (v text); INSERT INTO keep_me VALUES ('precious')", target)
    result = run(env, "restore", "latest", "--target-db", target, check=False)
    assert result.returncode == 9
    assert "already exists and was left as it is" in result.stderr
    assert "--drop-existing" in result.stderr
    assert pg.execute("SELECT v FROM keep_me", target) == [("precious",)]


def test_drop_existing_replaces_after_a_safety_backup_that_restores(
    env, pg, source_db, backup, target
) -> None:
    pg.create_database(target)
    pg.execute("CREATE TABLE keep_me (v text); INSERT INTO keep_me VALUES ('precious')", target)
    refused = run(env, "restore", "latest", "--target-db", target, "--drop-existing", check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert pg.execute("SELECT v FROM keep_me", target) == [("precious",)]

    result = run(env, "restore", backup["id"], "--target-db", target, "--drop-existing", "--yes")
    assert table_digest(pg, target) == table_digest(pg, source_db)
    safety = [r for r in loads(run(env, "list", "--json", "--database", target).stdout)]
    assert len(safety) == 1 and safety[0]["tags"] == ["safety-backup"]
    assert f"safety backup {safety[0]['id']}" in result.stdout

    env_target = {**env, "DATABASE_URL": pg.url(target), "DB_NAME": target}
    run(env_target, "restore", safety[0]["id"], "--target-db", f"{target}_undo")
    assert pg.execute("SELECT v FROM keep_me", f"{target}_undo") == [("precious",)]
    pg.drop_database(f"{target}_undo")


def test_selective_restores_bring_back_exactly_what_was_asked(env, pg, backup, target) -> None:
    result = run(
        env,
        "restore",
        "latest",
        "--target-db",
        target,
        "--table",
        "billing.invoices",
        "--table",
        "Mixed Case",
    )
    tables = set(table_digest(pg, target))
    assert tables == {"billing.invoices", "public.Mixed Case"}
    assert pg.execute("SELECT count(*) FROM billing.invoices", target) == [(500,)]
    assert "1 foreign keys point at tables outside the selection" in result.stdout
    pkey = pg.execute("SELECT conname FROM pg_constraint WHERE conname = 'invoices_pkey'", target)
    assert pkey == [("invoices_pkey",)]

    pg.drop_database(target)
    run(env, "restore", "latest", "--target-db", target, "--schema", "public")
    assert set(table_digest(pg, target)) == {
        "public.customers",
        "public.Mixed Case",
        "public.empty_table",
    }
    indexes = pg.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'customers' ORDER BY 1", target
    )
    assert indexes == [("customers_created",), ("customers_email_key",), ("customers_pkey",)]


def test_schema_only_then_data_only(env, pg, source_db, backup, target) -> None:
    run(env, "restore", "latest", "--target-db", target, "--schema-only")
    assert {count for count, _ in table_digest(pg, target).values()} == {0}
    assert len(table_digest(pg, target)) == 4
    run(
        env,
        "restore",
        "latest",
        "--target-db",
        target,
        "--data-only",
        "--yes",
        "--no-safety-backup",
    )
    assert table_digest(pg, target) == table_digest(pg, source_db)


def test_unknown_tables_are_refused_by_name(env, backup, target) -> None:
    result = run(env, "restore", "latest", "--target-db", target, "--table", "nope", check=False)
    assert result.returncode == 2 and "table 'nope' is not in backup" in result.stderr


def test_a_row_count_mismatch_fails_and_leaves_no_target(env, pg, s3, bucket, backup, target):
    manifest = parse(get_object(s3, bucket, backup["manifest_key"]), None, "m")
    body = manifest.body()
    for row in body["row_counts"]:
        if row["table"] == "customers":
            row["rows"] += 1  # the manifest now promises one customer more
    key = crypto.MasterKey(crypto.raw_key(KEY))  # type: ignore[arg-type]
    from permafrost.repo.manifest import _from_body

    put_object(s3, bucket, backup["manifest_key"], _from_body(body).to_json(key))
    result = run(env, "restore", "latest", "--target-db", target, check=False)
    assert result.returncode == 5, result.stderr
    assert "restored rows differ from the manifest" in result.stderr
    assert re.search(r"public\.customers +2001 +2000\n", result.stdout)
    assert target not in databases(pg)
    assert not [d for d in databases(pg) if "_pfrestore_" in d]
    shown = loads(run(env, "show", backup["id"], "--json").stdout)
    assert shown["verification"] == "failed"


def test_a_corrupt_backup_never_creates_the_target(env, pg, s3, bucket, backup, target):
    data_key = backup["manifest"]["objects"]["data"]
    data = get_object(s3, bucket, data_key)
    put_object(s3, bucket, data_key, flip_byte(data, 300))
    result = run(env, "restore", "latest", "--target-db", target, check=False)
    assert result.returncode == 5 and "failed authentication" in result.stderr
    assert target not in databases(pg)


def test_dry_run_changes_nothing(env, pg, backup, target) -> None:
    result = run(env, "restore", "latest", "--target-db", target, "--dry-run")
    assert "download backup" in result.stdout and "dry run" in result.stdout
    assert target not in databases(pg)


def test_the_source_and_the_metadata_store_are_protected(
    env, pg, source_db, metadata_db, backup
) -> None:
    over_source = run(
        env, "restore", "latest", "--target-db", source_db, "--drop-existing", "--yes", check=False
    )
    assert (
        over_source.returncode == 2
        and "the database this backup was taken from" in over_source.stderr
    )
    over_meta = run(
        env,
        "restore",
        "latest",
        "--target-db",
        metadata_db,
        "--drop-existing",
        "--yes",
        check=False,
    )
    assert over_meta.returncode == 2 and "metadata store" in over_meta.stderr
    for bad in ("x; DROP TABLE customers", "../x", 'a"b'):
        hostile = run(env, "restore", "latest", "--target-db", bad, check=False)
        assert hostile.returncode == 2 and "cannot be used" in hostile.stderr


def test_the_source_can_be_replaced_when_named_explicitly(env, pg, source_db, backup) -> None:
    pg.execute("DELETE FROM billing.invoices", source_db)
    run(
        env,
        "restore",
        "latest",
        "--target-db",
        source_db,
        "--target-url",
        pg.url("postgres"),
        "--drop-existing",
        "--yes",
    )
    assert pg.execute("SELECT count(*) FROM billing.invoices", source_db) == [(500,)]


def test_an_unreachable_target_is_one_line(env, backup, target, refused) -> None:
    url = f"postgresql://u:secret-pw@127.0.0.1:{refused}/postgres"
    result = run(env, "restore", "latest", "--target-db", target, "--target-url", url, check=False)
    assert result.returncode == 7 and "restore target unreachable" in result.stderr
    assert "secret-pw" not in result.stderr and result.stderr.count("\n") == 1


def test_too_little_temporary_space_is_refused(env, pg, backup, target, tmp_path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        result = run(
            {**env, "RESTORE_TMPDIR": str(small)},
            "restore",
            "latest",
            "--target-db",
            target,
            "--jobs",
            "2",  # only a parallel restore downloads to a temporary file first
            check=False,
        )
    finally:
        subprocess.run(["umount", str(small)], check=False)
    assert result.returncode == 10 and "RESTORE_TMPDIR" in result.stderr
    assert target not in databases(pg)


def test_a_failing_pg_restore_is_summarised_and_rolled_back(env, pg, source_db, backup, target):
    run(env, "restore", "latest", "--target-db", target)  # the rows are already there
    before = table_digest(pg, target)
    result = run(
        env,
        "restore",
        "latest",
        "--target-db",
        target,
        "--data-only",
        "--yes",
        "--no-safety-backup",
        check=False,
    )
    assert result.returncode == 7, result.stderr
    assert "pg_restore failed on" in result.stderr and "duplicate key" in result.stderr
    assert result.stderr.count("\n") == 1
    assert table_digest(pg, target) == before
