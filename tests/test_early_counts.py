"""Row counts taken while pg_restore loads (restore/early_counts.py), against a real server: a
table counts as checked only when its COPY was seen, has ended, its rows are committed and equal
the manifest's, and only when the counting session lasted to the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial

import psycopg
import pytest

from permafrost.repo.manifest import TableCount
from restore.early_counts import POLL_S, EarlyCounts
from tests.conftest import unique
from tests.services import Cluster

ROWS = 1000
TABLES = [TableCount("public", "loaded", ROWS), TableCount("public", "other", 5)]
EXPECTED = {(t.schema, t.table): t.rows for t in TABLES}
SEEN = POLL_S * 4  # long enough for the watcher to see a COPY begin, or end


@pytest.fixture
def database(pg: Cluster) -> Iterator[str]:
    name = pg.create_database(unique("early"))
    pg.execute("CREATE TABLE loaded (v int); CREATE TABLE other (v int)", name)
    yield name
    pg.drop_database(name)


def _counter(pg: Cluster, database: str) -> EarlyCounts:
    return EarlyCounts(partial(pg.connect, database), TABLES, EXPECTED).start()


def _copy(conn: psycopg.Connection, table: str, rows: int) -> None:
    """A COPY FROM STDIN that stays open long enough to be seen in pg_stat_progress_copy."""
    with conn.cursor().copy(f"COPY {table} (v) FROM STDIN") as copy:
        for value in range(rows // 2):
            copy.write_row((value,))
        time.sleep(SEEN)
        for value in range(rows // 2, rows):
            copy.write_row((value,))


def test_a_table_loaded_and_committed_is_counted_while_the_load_goes_on(
    pg: Cluster, database: str
) -> None:
    counter = _counter(pg, database)
    with pg.connect(database) as loader:  # autocommit: the COPY commits as it ends
        _copy(loader, "loaded", ROWS)
        time.sleep(SEEN)
    assert counter.stop() == {("public", "loaded"): ROWS}  # "other" was never loaded


def test_a_copy_whose_rows_are_not_committed_yet_is_left_to_the_count_after(
    pg: Cluster, database: str
) -> None:
    counter = _counter(pg, database)
    with pg.connect(database) as loader:
        loader.autocommit = False
        _copy(loader, "loaded", ROWS)
        time.sleep(SEEN)  # the COPY has ended, its rows are not committed: counted as 0
        loader.commit()
        time.sleep(SEEN)
    assert counter.stop() == {}
    assert pg.execute("SELECT count(*) FROM loaded", database) == [(ROWS,)]


def test_a_count_that_differs_from_the_manifest_is_not_taken(pg: Cluster, database: str) -> None:
    counter = _counter(pg, database)
    with pg.connect(database) as loader:
        _copy(loader, "loaded", ROWS - 1)
        time.sleep(SEEN)
    assert counter.stop() == {}


def test_nothing_counted_is_used_when_the_session_did_not_last(pg: Cluster, database: str) -> None:
    # What a restore starting again from a copy does: DROP DATABASE ... WITH (FORCE) ends every
    # session in the staging database; here its session alone is ended.
    counter = _counter(pg, database)
    with pg.connect(database) as loader:
        _copy(loader, "loaded", ROWS)
        time.sleep(SEEN)
        loader.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        time.sleep(SEEN)
    assert counter.stop() == {}
