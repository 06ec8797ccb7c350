"""The server's globals beside each backup, and `restore --globals` onto a fresh server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import run
from tests.helpers import loads, table_digest
from tests.services import Cluster


@pytest.fixture
def roles(pg: Cluster, source_db: str) -> Iterator[dict[str, str]]:
    """Roles with a membership, a setting and a grant on the source database's tables."""
    tag = uuid.uuid4().hex[:8]
    names = {"reader": f"app_reader_{tag}", "alice": f"alice_{tag}"}
    reader, alice = names["reader"], names["alice"]
    pg.execute(
        f"CREATE ROLE {reader} NOLOGIN; CREATE ROLE {alice} LOGIN PASSWORD 'pw-{tag}';"
        f"GRANT {reader} TO {alice}; ALTER ROLE {alice} SET work_mem = '7MB';"
    )
    pg.execute(
        f"GRANT USAGE ON SCHEMA billing TO {reader};"
        f"GRANT SELECT ON customers, billing.invoices TO {reader}",
        source_db,
    )
    yield names
    pg.drop_database(source_db)
    pg.execute(f"DROP ROLE IF EXISTS {alice}; DROP ROLE IF EXISTS {reader}")


@pytest.fixture
def fresh() -> Iterator[Cluster]:
    cluster = Cluster("fresh").start()
    yield cluster
    cluster.destroy()


def test_a_fresh_server_gets_the_roles_then_the_database_and_its_grants(
    env, pg, source_db, roles, fresh
) -> None:
    reader, alice = roles["reader"], roles["alice"]
    record = loads(run(env, "backup", "--json").stdout)
    manifest = loads(run(env, "show", record["id"], "--json").stdout)["manifest"]
    assert manifest["objects"]["globals"].endswith("/globals.pfe")
    assert manifest["globals"]["role_passwords"] is False

    dry = run(env, "restore", "--globals", "--target-url", fresh.url("postgres"), "--dry-run")
    assert (
        "would create" in dry.stdout and alice in dry.stdout and "nothing was changed" in dry.stdout
    )
    assert fresh.execute(f"SELECT count(*) FROM pg_roles WHERE rolname = '{alice}'") == [(0,)]
    wrong = run(env, "restore", "--globals", "--target-db", "x", check=False)
    assert wrong.returncode == 2 and "takes no --target-db" in wrong.stderr

    applied = run(env, "restore", "--globals", "--target-url", fresh.url("postgres"))
    assert f"applied the globals of backup {record['id']}" in applied.stdout
    assert "role postgres exists" in applied.stdout and "skipped" in applied.stdout
    assert fresh.execute(
        "SELECT r.rolname, m.rolname FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid"
        f" JOIN pg_roles m ON m.oid = a.member WHERE m.rolname = '{alice}'"
    ) == [(reader, alice)]
    assert fresh.execute(
        f"SELECT rolcanlogin, rolconfig FROM pg_roles WHERE rolname = '{alice}'"
    ) == [(True, ["work_mem=7MB"])]

    again = run(env, "restore", "--globals", record["id"], "--target-url", fresh.url("postgres"))
    assert f"role {alice} exists" in again.stdout and "0 roles created" in again.stdout

    run(env, "restore", "latest", "--target-db", source_db, "--target-url", fresh.url("postgres"))
    assert table_digest(fresh, source_db) == table_digest(pg, source_db)
    granted = fresh.execute(
        f"SELECT has_table_privilege('{alice}', 'billing.invoices', 'SELECT'),"
        f" has_table_privilege('{alice}', 'customers', 'UPDATE')",
        source_db,
    )
    assert granted == [(True, False)]


def test_globals_that_cannot_be_taken_warn_and_the_backup_goes_on(
    env, pg, source_db, metadata_db
) -> None:
    env = {**env, "BACKUP_ROLE_PASSWORDS": "true"}
    user = f"plain_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE ROLE {user} LOGIN PASSWORD 'pw-plain-1'")
    pg.execute(
        f"GRANT USAGE ON SCHEMA billing TO {user};"
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public, billing TO {user};"
        f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public, billing TO {user}",
        source_db,
    )
    try:
        url = f"postgresql://{user}:pw-plain-1@127.0.0.1:{pg.port}/{source_db}"
        result = run({**env, "DATABASE_URL": url}, "backup", "--json")
        record = loads(result.stdout)
        assert "globals (roles, tablespaces) were not stored" in result.stderr
        assert "BACKUP_ROLE_PASSWORDS" in result.stderr
        [(details,)] = pg.execute(
            f"SELECT details FROM permafrost.job_runs WHERE backup_id = '{record['id']}'",
            metadata_db,
        )
        assert details["globals_stored"] is False
        assert "were not stored" in details["warnings"][0]
        shown = loads(run(env, "show", record["id"], "--json").stdout)
        assert shown["status"] == "completed" and "globals" not in shown["manifest"]["objects"]
        missing = run(env, "restore", "--globals", record["id"], check=False)
        assert missing.returncode == 3 and "has no globals stored" in missing.stderr
    finally:
        pg.drop_database(source_db)
        pg.execute(f"DROP ROLE IF EXISTS {user}")
