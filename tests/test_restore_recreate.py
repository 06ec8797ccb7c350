"""Recreating a dropped production database in place, through the configured connection."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import PERMAFROST, run
from tests.helpers import loads, table_digest
from tests.services import Cluster


def _databases(pg: Cluster) -> set[str]:
    return {row[0] for row in pg.execute("SELECT datname FROM pg_database")}


def test_it_recreates_a_dropped_source_database_with_yes(env, pg, source_db) -> None:
    before = table_digest(pg, source_db)
    record = loads(run(env, "backup", "--json").stdout)
    pg.drop_database(source_db)

    asked = run(env, "restore", "latest", "--target-db", source_db, check=False)
    assert asked.returncode == 2, asked.stderr
    [line] = asked.stderr.strip().splitlines()
    assert "add --yes" in line and source_db in line and "nothing was changed" in line
    assert source_db not in _databases(pg)

    done = run(env, "restore", "latest", "--target-db", source_db, "--yes")
    assert f"restored backup {record['id']} into {source_db}" in done.stdout
    assert table_digest(pg, source_db) == before


def test_it_recreates_a_dropped_source_database_when_its_name_is_typed(env, pg, source_db) -> None:
    before = table_digest(pg, source_db)
    run(env, "backup")
    pg.drop_database(source_db)
    wrong = _on_a_terminal(env, ["restore", "latest", "--target-db", source_db], "nope\n")
    assert wrong.returncode == 2 and "not confirmed" in wrong.stderr
    assert source_db not in _databases(pg)
    typed = _on_a_terminal(env, ["restore", "latest", "--target-db", source_db], source_db + "\n")
    assert typed.returncode == 0, typed.stderr
    assert "Type its name to go on" in typed.stdout
    assert table_digest(pg, source_db) == before


def test_an_existing_source_database_is_still_refused(env, pg, source_db) -> None:
    run(env, "backup")
    pg.execute("CREATE TABLE keep_me (v text); INSERT INTO keep_me VALUES ('precious')", source_db)
    result = run(env, "restore", "latest", "--target-db", source_db, "--yes", check=False)
    assert result.returncode == 2
    assert "refusing to restore over" in result.stderr
    assert pg.execute("SELECT v FROM keep_me", source_db) == [("precious",)]


def _on_a_terminal(
    env: dict[str, str], args: list[str], typed: str
) -> subprocess.CompletedProcess[str]:
    """Run permafrost with a pseudo-terminal as its stdin, typing `typed` into it."""
    leader, follower = os.openpty()
    try:
        os.write(leader, typed.encode())
        return subprocess.run(
            [PERMAFROST, *args],
            env=env,
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        os.close(follower)
        os.close(leader)
