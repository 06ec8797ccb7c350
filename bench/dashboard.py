"""The dashboard and API with 10,000 backups in the catalog: p50 and p95 latency per page.

Starts a throwaway PostgreSQL cluster for the metadata store, fills it with 10,000 backups,
20,000 job runs and 2,000 verifications, serves `permafrost monitor` (gunicorn, as in the
container) on a loopback port, and times sequential requests. The baseline, measured in the
same run, is a static file from the same server: the ratios say what the pages cost beyond
the server's own floor.

    .venv/bin/python bench/dashboard.py [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from permafrost.catalog.store import connect  # noqa: E402
from permafrost.config.settings import Secret  # noqa: E402
from tests.services import Cluster, free_port  # noqa: E402

PERMAFROST = str(Path(sys.executable).parent / "permafrost")
AUTH_USER, AUTH_PASSWORD = "bench", "bench-password-1"

FILL = """
INSERT INTO backups (id, database, kind, tier, status, started_at, finished_at, size_bytes,
                     dump_bytes, description, manifest_key, verification_status, verified_at)
SELECT to_char(t, 'YYYYMMDD"T"HH24MISS"Z"') || '-' || lpad(to_hex(g), 6, '0'),
       'db' || (g % 8), 'logical', CASE WHEN g % 30 = 0 THEN 'compliance' ELSE 'standard' END,
       CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'completed' END, t, t + interval '4 min',
       (1e9 + g * 1000)::bigint, (3e9 + g * 3000)::bigint, 'nightly', 'k',
       CASE WHEN g % 5 = 0 THEN 'verified' END, CASE WHEN g % 5 = 0 THEN t + interval '1 h' END
FROM generate_series(1, 10000) g, LATERAL (SELECT now() - g * interval '3 hours' AS t) x;
INSERT INTO job_runs (job, database, backup_id, started_at, finished_at, status, details)
SELECT CASE WHEN g % 2 = 0 THEN 'backup' ELSE 'retention' END, 'db' || (g % 8), NULL,
       now() - g * interval '90 minutes', now() - g * interval '90 minutes' + interval '3 min',
       'succeeded', '{}'
FROM generate_series(1, 20000) g;
INSERT INTO verifications (backup_id, kind, started_at, finished_at, status, details)
SELECT id, 'test_restore', verified_at - interval '5 min', verified_at, 'verified',
       jsonb_build_object('bytes_per_second', 50000000)
FROM backups WHERE verification_status = 'verified' LIMIT 2000;
"""


def fill(cluster: Cluster, database: str) -> None:
    catalog = connect(Secret(cluster.url(database)))
    for statement in FILL.split(";"):
        if statement.strip():
            catalog.conn.execute(statement)
    catalog.conn.execute("ANALYZE")
    catalog.close()


def timed(url: str, accept: str, count: int) -> list[float]:
    import base64

    login = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    headers = {"Accept": accept, "Authorization": f"Basic {login}"}
    out = []
    for _ in range(count):
        request = urllib.request.Request(url, headers=headers)
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            assert response.status == 200
        out.append((time.perf_counter() - start) * 1000)
    return out


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    cluster = Cluster("bench-dashboard").start()
    bucket = tempfile.mkdtemp(prefix="permafrost-bench-bucket-")
    try:
        database = cluster.create_database("meta")
        started = time.perf_counter()
        fill(cluster, database)
        seconds = time.perf_counter() - started
        print(f"catalog filled: 10,000 backups, 20,000 job runs in {seconds:.1f} s")
        port = free_port()
        env = {
            "PATH": "/usr/bin:/bin",
            "METADATA_DATABASE_URL": cluster.url(database),
            "STORAGE_URL": f"file://{bucket}",
            "DB_NAME": ",".join(f"db{n}" for n in range(8)),
            "DASHBOARD_USER": AUTH_USER,
            "DASHBOARD_PASSWORD": AUTH_PASSWORD,
            "ALERT_CHECK_INTERVAL": "3600",
        }
        server = subprocess.Popen(
            [PERMAFROST, "monitor", "--bind", f"127.0.0.1:{port}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                timed(base + "/static/style.css", "text/css", 1)
                break
            except OSError:
                time.sleep(0.2)
        pages = [
            ("static file (baseline)", "/static/style.css", "text/css"),
            ("/ (overview)", "/", "text/html"),
            ("/backups (page 1, HTML)", "/backups", "text/html"),
            ("/backups?page=150 (HTML)", "/backups?page=150", "text/html"),
            ("/backups (JSON)", "/backups", "application/json"),
            ("/status (JSON)", "/status", "application/json"),
            ("/metrics", "/metrics", "text/plain"),
        ]
        results = {}
        for name, path, accept in pages:
            timed(base + path, accept, 5)  # warm each worker's connection and caches
            results[name] = timed(base + path, accept, args.requests)
        floor = p95(results["static file (baseline)"])
        print(f"{args.requests} sequential requests each, gunicorn 2 workers x 4 threads")
        print(f"{'page':30} {'p50 ms':>8} {'p95 ms':>8} {'p95 / baseline':>15}")
        for name, values in results.items():
            print(
                f"{name:30} {statistics.median(values):8.1f} {p95(values):8.1f} "
                f"{p95(values) / floor:15.1f}"
            )
        server.terminate()
        server.wait(timeout=30)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
