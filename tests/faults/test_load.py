"""Load: 10,000 backups in the catalog and 50 concurrent API and dashboard clients against
`permafrost monitor` (gunicorn, as in the container) for a bounded time on loopback. No answer
may be a 5xx; the p95 latency is recorded (the figures, not a timed assertion)."""

from __future__ import annotations

import base64
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.dashboard import fill
from tests.conftest import PERMAFROST
from tests.faults.conftest import Ledger
from tests.services import Cluster, serve_http

CLIENTS = 50
SECONDS = 30
PAGES = [
    ("/", "text/html"),
    ("/backups", "text/html"),
    ("/backups?page=100", "text/html"),
    ("/backups?per_page=200", "application/json"),
    ("/status", "application/json"),
    ("/metrics", "text/plain"),
    ("/backup/next-backup", "application/json"),
    ("/health", "application/json"),
]


def test_fifty_clients_against_ten_thousand_backups_get_no_5xx(
    pg: Cluster, tmp_path: Path, ledger: Ledger
) -> None:
    database = pg.create_database("load_meta")
    fill(pg, database)
    env = {
        "PATH": "/usr/bin:/bin",
        "METADATA_DATABASE_URL": pg.url(database),
        "STORAGE_URL": f"file://{tmp_path / 'bucket'}",
        "DB_NAME": ",".join(f"db{n}" for n in range(8)),
        "DASHBOARD_USER": "load",
        "DASHBOARD_PASSWORD": "load-password",
        "ALERT_CHECK_INTERVAL": "0",
    }

    def start(port: int) -> subprocess.Popen[bytes]:
        bind = ["--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "8"]
        return subprocess.Popen(
            [PERMAFROST, "monitor", *bind],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    server, port = serve_http(start)
    login = "Basic " + base64.b64encode(b"load:load-password").decode()
    base = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + SECONDS

    def client(n: int) -> None:
        i = n
        while time.monotonic() < stop_at:
            path, accept = PAGES[i % len(PAGES)]
            i += 1
            request = urllib.request.Request(
                base + path, headers={"Accept": accept, "Authorization": login}
            )
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 599  # no answer at all counts as a server failure
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    server.terminate()
    server.wait(timeout=30)
    pg.drop_database(database)
    total = sum(statuses.values())
    assert total > 200, statuses
    assert {s for s in statuses if s >= 500} == set(), statuses
    assert set(statuses) == {200}, statuses
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(f"{total} requests from {CLIENTS} clients in {SECONDS} s, p95 {p95:.0f} ms")
    ledger.record(
        f"load: {CLIENTS} clients for {SECONDS} s, 10,000 backups (p95 {p95:.0f} ms)",
        injected=total,
        survived=total,
    )
