"""The tallies /metrics counts from (migration 0025): kept equal to counting the rows, through
inserts, moves between groups, deletes and a scoped connection's writes."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from permafrost.catalog.store import Catalog, connect
from permafrost.config.settings import Secret
from tests.services import Cluster

BACKUP_GROUPS = """
SELECT repository_id, database, kind, tier, status, purpose, count(*)
FROM permafrost.backups GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
"""
BACKUP_TALLIES = """
SELECT repository_id, database, kind, tier, status, purpose, backups
FROM permafrost.backup_tallies WHERE backups <> 0 ORDER BY 1, 2, 3, 4, 5, 6
"""
RUN_GROUPS = """
SELECT job, coalesce(database, ''), status, count(*) FROM permafrost.job_runs
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
RUN_TALLIES = """
SELECT job, database, status, runs FROM permafrost.job_run_tallies WHERE runs <> 0
ORDER BY 1, 2, 3
"""


@pytest.fixture
def catalog(pg: Cluster, metadata_db: str) -> Iterator[Catalog]:
    catalog = connect(Secret(pg.url(metadata_db)))
    yield catalog
    catalog.close()


def backup(catalog: Catalog, n: int, database: str, status: str = "running") -> str:
    backup_id = f"20260301T0200{n:02d}Z-{n:06x}"
    catalog.conn.execute(
        "INSERT INTO backups (id, database, kind, tier, status, started_at, manifest_key)"
        " VALUES (%s, %s, 'logical', 'standard', %s, now(), 'k')",
        (backup_id, database, status),
    )
    return backup_id


def agree(catalog: Catalog) -> None:
    conn = catalog.conn
    assert conn.execute(BACKUP_TALLIES).fetchall() == conn.execute(BACKUP_GROUPS).fetchall()
    assert conn.execute(RUN_TALLIES).fetchall() == conn.execute(RUN_GROUPS).fetchall()


def test_it_counts_backups_as_they_come_move_and_go(catalog: Catalog) -> None:
    ids = [backup(catalog, n, "shop" if n % 2 else "crm") for n in range(10)]
    agree(catalog)
    sql = catalog.conn.execute
    sql(
        "UPDATE backups SET status = 'completed', finished_at = now() WHERE id = ANY(%s)",
        (ids[:6],),
    )
    sql("UPDATE backups SET status = 'failed', error = 'disk full' WHERE id = %s", (ids[6],))
    sql("UPDATE backups SET tier = 'compliance' WHERE id = %s", (ids[0],))
    sql("UPDATE backups SET purpose = 'safety' WHERE id = %s", (ids[1],))
    sql("UPDATE backups SET status = 'deleted' WHERE id = ANY(%s)", (ids[2:4],))
    sql("UPDATE backups SET verified_at = now() WHERE id = %s", (ids[4],))  # no group moves
    sql("DELETE FROM backups WHERE id = ANY(%s)", (ids[7:9],))
    sql(
        "INSERT INTO backups (id, database, kind, tier, status, started_at, manifest_key)"
        " VALUES (%s, 'crm', 'logical', 'standard', 'completed', now(), 'k')"
        " ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status",
        (ids[9],),
    )
    agree(catalog)
    catalog.adopt("repo-1")  # the rows from before repository ids move to a repository
    agree(catalog)
    sql("TRUNCATE backups CASCADE")
    agree(catalog)


def test_it_counts_job_runs_with_and_without_a_database(catalog: Catalog) -> None:
    sql = catalog.conn.execute
    for job, database in [("backup", "shop"), ("base_backup", None), ("retention", None)] * 3:
        sql(
            "INSERT INTO job_runs (job, database, status) VALUES (%s, %s, 'running')",
            (job, database),
        )
    sql("UPDATE job_runs SET status = 'succeeded' WHERE id % 3 = 0")
    sql("UPDATE job_runs SET status = 'failed', error = 'x' WHERE id % 3 = 1")
    sql("DELETE FROM job_runs WHERE id = 2")
    agree(catalog)
    sql("TRUNCATE job_runs")  # no row trigger fires: a statement trigger empties the tally
    agree(catalog)


def test_a_scoped_connection_writes_through_its_views(catalog: Catalog) -> None:
    catalog.scope("repo-1")  # temporary views named like the tables stand in front of them
    backup(catalog, 1, "shop")  # through the view: repository_id defaults to repo-1
    catalog.conn.execute("UPDATE backups SET status = 'completed'")
    seen = catalog.conn.execute("SELECT database, status, backups FROM backup_tallies").fetchall()
    assert seen == [("shop", "completed", 1)] or (
        sorted(seen) == [("shop", "completed", 1), ("shop", "running", 0)]
    )
    catalog.unscope()
    agree(catalog)


def test_opposite_moves_of_the_same_groups_do_not_deadlock(pg: Cluster, metadata_db: str) -> None:
    """Two transactions, each moving a backup between the same two groups in opposite
    directions, and each holding its locks a while: both commit."""
    url = pg.url(metadata_db)
    setup = connect(Secret(url))
    a, b = backup(setup, 1, "shop", "completed"), backup(setup, 2, "shop", "deleted")
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def move(backup_id: str, status: str) -> None:
        try:
            with psycopg.connect(url) as conn:
                conn.execute("SET search_path TO permafrost")
                start.wait()
                conn.execute("UPDATE backups SET status = %s WHERE id = %s", (status, backup_id))
                conn.execute("SELECT pg_sleep(0.5)")
        except BaseException as exc:  # a deadlock is psycopg.errors.DeadlockDetected
            errors.append(exc)

    threads = [
        threading.Thread(target=move, args=(a, "deleted")),
        threading.Thread(target=move, args=(b, "completed")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    agree(setup)
    setup.close()
