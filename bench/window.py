"""`plan window`'s catalog read and forecast with 500 databases and 100,000 backups.

Starts a throwaway PostgreSQL cluster for the metadata store, fills it with 100,000 completed
backups of 500 databases (200 each), and times `reads.recent_durations` (the median of each
database's last 7) and the whole `window_forecast` for DB_NAME naming all 500. The baseline,
measured in the same run, is `reads.ping` (SELECT 1) on the same connection.

    .venv/bin/python bench/window.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from permafrost.backup.tonight import window_forecast  # noqa: E402
from permafrost.catalog import reads  # noqa: E402
from permafrost.catalog.store import connect  # noqa: E402
from permafrost.config.settings import Secret, Settings  # noqa: E402
from tests.services import Cluster  # noqa: E402

DATABASES = 500
FILL = f"""
INSERT INTO backups (id, database, kind, tier, status, started_at, finished_at, size_bytes,
                     dump_bytes, description, manifest_key)
SELECT to_char(t, 'YYYYMMDD"T"HH24MISS"Z"') || '-' || lpad(to_hex(g), 6, '0'),
       'db' || (g % {DATABASES}), 'logical', 'standard', 'completed', t,
       t + (30 + g % 1800) * interval '1 s', 1000000, 3000000, 'nightly', 'k'
FROM generate_series(1, 100000) g, LATERAL (SELECT now() - g * interval '1 minute' AS t) x
"""


def timed(step: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    cluster = Cluster("bench-window").start()
    try:
        url = cluster.url(cluster.create_database("meta"))
        catalog = connect(Secret(url))
        catalog.conn.execute(FILL)
        catalog.conn.execute("ANALYZE")
        names = ",".join(f"db{n}" for n in range(DATABASES))
        settings = Settings.from_env({"METADATA_DATABASE_URL": url, "DB_NAME": names})
        now = datetime.now(UTC)
        base = timed(lambda: reads.ping(catalog), args.runs)
        read = timed(lambda: reads.recent_durations(catalog), args.runs)
        whole = timed(lambda: window_forecast(settings, catalog, 4, now), args.runs)
        print(f"{DATABASES} databases, 100,000 backups, median of {args.runs} runs")
        print("| step | ms | × SELECT 1 |\n|---|---|---|")
        for name, ms in (
            ("SELECT 1 (baseline)", base),
            ("reads.recent_durations", read),
            ("window_forecast (read + simulation + search)", whole),
        ):
            print(f"| {name} | {ms:.2f} | {ms / base:.0f} |")
        catalog.close()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
