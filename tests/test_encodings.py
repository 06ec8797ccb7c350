"""Databases in SQL_ASCII, which older clusters still have: psycopg reads their text as bytes
unless the connection asks for UTF8 (a snapshot id read b'...' and the backup failed; `list`
against a SQL_ASCII metadata store crashed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import run, unique
from tests.helpers import loads
from tests.services import Cluster


def sql_ascii(pg: Cluster, prefix: str) -> str:
    name = unique(prefix)
    pg.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0 LOCALE 'C'")
    return name


@pytest.fixture
def ascii_dbs(pg: Cluster) -> Iterator[tuple[str, str]]:
    source, meta = sql_ascii(pg, "ascii_src"), sql_ascii(pg, "ascii_meta")
    pg.execute(
        "CREATE TABLE notes (id int PRIMARY KEY, body text);"
        "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 100) g;",
        source,
    )
    yield source, meta
    for name in (source, meta, f"{source}_r"):
        pg.drop_database(name)


def test_a_sql_ascii_source_and_metadata_store_back_up_list_and_restore(
    pg: Cluster, env: dict[str, str], ascii_dbs: tuple[str, str]
) -> None:
    source, meta = ascii_dbs
    env = {**env, "DATABASE_URL": pg.url(source), "METADATA_DATABASE_URL": pg.url(meta)}
    made = loads(run(env, "backup", "--json").stdout)
    listed = run(env, "list", "--json")
    assert made["id"] in listed.stdout
    run(env, "restore", made["id"], "--target-db", f"{source}_r")
    rows = "SELECT id, convert_to(body, 'UTF8') FROM notes ORDER BY id"  # bytes on both sides
    assert pg.execute(rows, f"{source}_r") == pg.execute(rows, source)
    assert len(pg.execute(rows, source)) == 100
