"""The workers' claim with its limits, against a long queue: what keeping the limits costs.

Starts a throwaway PostgreSQL cluster for the metadata store and queues 10,000 backup tasks of
500 databases on 20 sources (500 per source, in id order source by source), with one backup of
each of the first 19 sources running: with MAX_CONCURRENT_PER_SOURCE=1 only the last source's
tasks, the newest in the queue, may be claimed, so the claim reads past 9,500 it may not take.
Timed (median of --runs):

  ping            SELECT 1 on the same connection (the baseline);
  skip-locked     the claim before the limits (the oldest queued task, FOR UPDATE SKIP LOCKED),
                  in a transaction rolled back;
  claim-none      the claim with the limits when every source is at its limit (all 20 running);
  claim-one       the claim with the limits finding the one source with room (then put back).

    .venv/bin/python bench/claims.py [--runs 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from permafrost.catalog.store import connect  # noqa: E402
from permafrost.config.settings import Secret  # noqa: E402
from tests.services import Cluster  # noqa: E402

SOURCES, PER_SOURCE = 20, 500
FILL = f"""
INSERT INTO tasks (kind, payload, source, subject)
SELECT 'backup', jsonb_build_object('job', 'backup', 'database', 'db' || g),
       's' || (g / {PER_SOURCE}), 'logical:db' || (g % 500)
FROM generate_series(0, {SOURCES * PER_SOURCE - 1}) g ORDER BY g
"""
RUNNING = """
INSERT INTO tasks (kind, payload, status, source, subject, worker, started_at)
SELECT 'backup', '{}', 'running', 's' || g, 'logical:running' || g, 'elsewhere', now()
FROM generate_series(0, %s) g
"""
OLD_CLAIM = (
    "SELECT id FROM tasks WHERE status = 'queued' AND kind = ANY(%s)"
    " ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1"
)


def timed(step: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    cluster = Cluster("bench-claims").start()
    try:
        catalog = connect(Secret(cluster.url(cluster.create_database("meta"))))
        conn = catalog.conn
        conn.execute(FILL)
        conn.execute(RUNNING, (SOURCES - 2,))  # the first 19 sources are at their limit
        conn.execute("ANALYZE tasks")

        def old() -> None:
            with conn.transaction(force_rollback=True):
                conn.execute(OLD_CLAIM, (["backup"],)).fetchone()

        def one() -> None:
            task = catalog.claim(["backup"], "bench", 1)
            assert task is not None and task.source == f"s{SOURCES - 1}", task
            conn.execute(
                "UPDATE tasks SET status = 'queued', worker = NULL, attempts = 0 WHERE id = %s",
                (task.id,),
            )
            conn.execute("SELECT pg_advisory_unlock_all()")

        ping = timed(lambda: conn.execute("SELECT 1").fetchone(), args.runs)
        rows = [("ping", ping), ("skip-locked", timed(old, args.runs))]
        rows.append(("claim-one", timed(one, args.runs)))
        conn.execute(RUNNING.replace("%s", "0").replace("'s' || g", f"'s{SOURCES - 1}'"))
        none = timed(lambda: catalog.claim(["backup"], "bench", 1), args.runs)
        assert catalog.claim(["backup"], "bench", 1) is None
        rows.append(("claim-none", none))
        print(f"{SOURCES * PER_SOURCE:,} queued backups on {SOURCES} sources, {args.runs} runs")
        print(f"{'':12} {'median ms':>10} {'x ping':>8}")
        for name, ms in rows:
            print(f"{name:12} {ms:10.2f} {ms / ping:8.1f}")
        catalog.close()
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
