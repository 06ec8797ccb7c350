"""The fleet at size: 500 databases on 20 sources, 100,000 backups, a year of history.

Starts a throwaway PostgreSQL cluster for the metadata store and fills it, in SQL, as the
catalog would hold a SOURCES_FILE fleet after a year: 20 sources (`databases: all`, 25
databases each, recorded in source_databases as the scheduler's listings record them, 5 of them
gone), 100,000 backups (200 per database over 365 days: standard, compliance each 30th, 2 %
failed, those older than 30 days and not compliance `deleted` by retention, a fifth verified),
a job run per backup plus daily verify/retention runs, 2,000 verifications and 40 alerts.

Then two measurements, each against a baseline taken in the same run:

- the monitor (`permafrost monitor`, gunicorn as in the container) on a loopback port:
  p50/p95 of `/`, `/?source=NAME` and `/metrics` over sequential requests; baseline: a static
  file from the same server.
- the scheduler's tick, in process, with the real `scheduler.service.Service` built from the
  same SOURCES_FILE: what its leader does every HEARTBEAT (30 s: `_next_runs` over APScheduler's
  jobs and the heartbeat row), every 2 s on an empty queue (the task reader's claim), and once
  per leadership (the catch-up check over every job); baseline: `SELECT 1`.

Peak RSS of the monitor's processes and of the in-process scheduler are printed too (for
deploy/kubernetes' requests).

    .venv/bin/python bench/fleet.py [--requests 100] [--ticks 200] [--only monitor|scheduler]
    # the monitor of another checkout side by side (a "before"), request by request:
    git archive COMMIT | tar -x -C /tmp/before
    .venv/bin/python bench/fleet.py --only monitor --compare /tmp/before
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from permafrost.catalog.store import connect  # noqa: E402
from permafrost.config.settings import Secret, Settings  # noqa: E402
from tests.services import Cluster, free_port  # noqa: E402

PERMAFROST = str(Path(sys.executable).parent / "permafrost")
AUTH_USER, AUTH_PASSWORD = "bench", "bench-password-1"
SOURCES, PER_SOURCE, BACKUPS = 20, 25, 100_000
DATABASES = SOURCES * PER_SOURCE

# g = 0 .. BACKUPS-1; database g % 500, its (g / 500)-th backup, about every 1.8 days.
FILL = f"""
INSERT INTO source_databases (source, database, name, first_seen, last_seen, missing_since)
SELECT 'src' || s, 'db' || d, 'src' || s || '.db' || d, now() - interval '400 days',
       CASE WHEN d = 0 AND s < 5 THEN now() - interval '3 days' ELSE now() END,
       CASE WHEN d = 0 AND s < 5 THEN now() - interval '2 days' END
FROM generate_series(0, {SOURCES - 1}) s, generate_series(0, {PER_SOURCE - 1}) d;

INSERT INTO backups (id, database, kind, tier, status, started_at, finished_at, size_bytes,
                     dump_bytes, description, manifest_key, error, verification_status,
                     verified_at, deleted_at)
SELECT to_char(t, 'YYYYMMDD"T"HH24MISS"Z"') || '-' || lpad(to_hex(g), 6, '0'),
       'src' || (g % {DATABASES}) / {PER_SOURCE} || '.db' || (g % {DATABASES}) % {PER_SOURCE},
       'logical', tier,
       CASE WHEN g % 50 = 7 THEN 'failed'
            WHEN tier = 'standard' AND t < now() - interval '30 days' THEN 'deleted'
            ELSE 'completed' END,
       t, t + (30 + (g * 7919) % 3000) * interval '1 s',
       (1e6 * (1 + (g % {DATABASES}) % 97) * (1 + g / {BACKUPS}.0))::bigint,
       (4e6 * (1 + (g % {DATABASES}) % 97) * (1 + g / {BACKUPS}.0))::bigint,
       CASE WHEN tier = 'compliance' THEN 'monthly compliance' ELSE 'nightly' END, 'k',
       CASE WHEN g % 50 = 7 THEN 'pg_dump: error: connection to server lost' END,
       CASE WHEN g % 5 = 0 AND g % 50 <> 7 THEN 'verified' END,
       CASE WHEN g % 5 = 0 AND g % 50 <> 7 THEN t + interval '1 day' END,
       CASE WHEN tier = 'standard' AND t < now() - interval '30 days'
            THEN t + interval '30 days' END
FROM generate_series(0, {BACKUPS - 1}) g,
     LATERAL (SELECT now() - interval '2 hours'
                 - (g / {DATABASES}) * interval '43 hours 48 minutes'
                 - ((g % {DATABASES}) * 13) * interval '1 s' AS t,
                     CASE WHEN (g / {DATABASES}) % 30 = 0 THEN 'compliance'
                          ELSE 'standard' END AS tier) x;

INSERT INTO job_runs (job, database, backup_id, started_at, finished_at, status, error, details)
SELECT CASE WHEN tier = 'compliance' THEN 'compliance_backup' ELSE 'backup' END, database, id,
       started_at, finished_at,
       CASE WHEN status = 'failed' THEN 'failed' ELSE 'succeeded' END, error,
       jsonb_build_object('bytes', size_bytes)
FROM backups;

INSERT INTO job_runs (job, database, started_at, finished_at, status, details)
SELECT job, NULL, now() - d * interval '1 day' + interval '3 hours',
       now() - d * interval '1 day' + interval '3 hours 20 minutes', 'succeeded', '{{}}'
FROM generate_series(1, 365) d, unnest(ARRAY['verify', 'retention', 'lifecycle']) job;

INSERT INTO verifications (backup_id, kind, started_at, finished_at, status, details)
SELECT id, 'test_restore', verified_at - interval '5 min', verified_at, 'verified',
       jsonb_build_object('bytes_per_second', 50000000)
FROM backups WHERE verification_status = 'verified' ORDER BY started_at DESC LIMIT 2000;

INSERT INTO alerts (key, severity, summary, details, status, first_seen, last_seen,
                    resolved_at)
SELECT 'backup_failed:src' || a % {SOURCES} || '.db' || a, 'critical',
       'the last backup of src' || a % {SOURCES} || '.db' || a || ' failed',
       jsonb_build_object('source', 'src' || a % {SOURCES}),
       CASE WHEN a < 8 THEN 'active' ELSE 'resolved' END,
       now() - a * interval '7 days', now() - a * interval '7 days' + interval '1 day',
       CASE WHEN a >= 8 THEN now() - a * interval '7 days' + interval '1 day' END
FROM generate_series(0, 34) a;

INSERT INTO alerts (key, severity, summary, details, first_seen, last_seen)
SELECT 'database_gone:src' || s || ':db0', 'critical',
       'database db0 of source src' || s || ' is gone from its server',
       jsonb_build_object('source', 'src' || s), now() - interval '2 days', now()
FROM generate_series(0, 4) s
"""


def sources_file(directory: Path) -> Path:
    path = directory / "sources.yaml"
    lines = ["sources:"]
    for s in range(SOURCES):
        # Never contacted: the monitor and the scheduler's tick read the catalog's listings.
        lines += [
            f"  - name: src{s}",
            f"    url: postgresql://backup@127.0.0.1:{20000 + s}/postgres",
            "    databases: all",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def fill(url: str) -> None:
    catalog = connect(Secret(url))
    for statement in FILL.split(";\n"):
        if statement.strip():
            catalog.conn.execute(statement)
    catalog.conn.execute("VACUUM ANALYZE")
    catalog.close()


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def timed_http(url: str, accept: str, count: int) -> list[float]:
    login = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    headers = {"Accept": accept, "Authorization": f"Basic {login}"}
    out = []
    for _ in range(count):
        request = urllib.request.Request(url, headers=headers)
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            assert response.status == 200, response.status
        out.append((time.perf_counter() - start) * 1000)
    return out


def timed_call(step: Callable[[], object], count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        out.append((time.perf_counter() - start) * 1000)
    return out


def table(rows: dict[str, list[float]], floor_name: str) -> None:
    floor = p95(rows[floor_name])
    print(f"| {'what':44} | {'p50 ms':>8} | {'p95 ms':>8} | {'p95 / baseline':>14} |")
    print(f"|{'-' * 46}|{'-' * 10}|{'-' * 10}|{'-' * 16}|")
    for name, values in rows.items():
        print(
            f"| {name:44} | {statistics.median(values):8.1f} | {p95(values):8.1f} "
            f"| {p95(values) / floor:14.1f} |"
        )


def tree_rss_kb(pid: int) -> int:
    """The resident set of a process and its children now (gunicorn's master and workers)."""
    out = subprocess.run(
        ["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return sum(int(x) for x in out)


def start_monitor(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen(
        [PERMAFROST, "monitor", "--bind", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            timed_http(base + "/static/style.css", "text/css", 1)
            break
        except OSError:
            time.sleep(0.2)
    return server, base


def bench_monitor(env: dict[str, str], requests: int, compare: str | None) -> None:
    """Each page `requests` times; with `compare` (another checkout's root), a second monitor
    runs that code against the same store and the two are asked in turn, request by request,
    so both see the same noise (the "before" of docs/PERFORMANCE.md)."""
    # Each monitor runs its own checkout's code (PYTHONPATH first), not what the venv installed.
    servers = {"": start_monitor(env | {"PYTHONPATH": str(ROOT)})}
    if compare:
        servers[" [before]"] = start_monitor(env | {"PYTHONPATH": compare})
    try:
        pages = [
            ("static file (baseline)", "/static/style.css", "text/html"),
            ("/ (overview, 500 databases)", "/", "text/html"),
            ("/?source=src7 (25 databases)", "/?source=src7", "text/html"),
            ("/metrics", "/metrics", "text/plain"),
        ]
        results: dict[str, list[float]] = {}
        peak = 0
        for name, path, accept in pages:
            for tag, (_, base) in servers.items():
                timed_http(base + path, accept, 4)  # warm each worker's connection and caches
                results[name + tag] = []
            for _ in range(requests):
                for tag, (_, base) in servers.items():
                    results[name + tag] += timed_http(base + path, accept, 1)
            peak = max(peak, tree_rss_kb(servers[""][0].pid))
        print(f"\nmonitor: {requests} sequential requests each, gunicorn (as in the container)")
        table(results, "static file (baseline)")
        print(f"monitor RSS (master + workers) after the requests: {peak / 1024:.0f} MiB")
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)


def bench_scheduler(env: dict[str, str], ticks: int) -> None:
    from permafrost.catalog.heartbeats import Role
    from permafrost.catalog.store import connect
    from permafrost.logs import sayer
    from scheduler.service import Service, _next_runs

    settings = Settings.from_env(env)
    service = Service(settings, sayer("bench"))
    catalog = connect(Secret(env["METADATA_DATABASE_URL"]))
    sched = service._start_jobs()
    sched.pause()  # the jobs' triggers are computed; none may fire during the bench
    try:
        specs = len(service.specs)
        results = {
            "SELECT 1 (baseline)": timed_call(lambda: catalog.conn.execute("SELECT 1"), ticks),
            "heartbeat tick (_next_runs + heartbeat row)": timed_call(
                lambda: service.election.beat(catalog, Role.LEADER, _next_runs(sched)), ticks
            ),
            "task poll (claim on an empty queue)": timed_call(
                lambda: catalog.claim(["backup"], service.instance), ticks
            ),
            "catch-up check (every job, leadership start)": timed_call(
                lambda: [
                    service._ran_since(catalog, spec, cron.previous_before(now, grace) or now)
                    for spec, cron in service.specs
                    for now, grace in [(_now(service), _grace(settings))]
                ],
                max(5, ticks // 20),
            ),
        }
        print(f"\nscheduler, in process: {specs} scheduled jobs, {ticks} ticks")
        table(results, "SELECT 1 (baseline)")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(
            f"bench process peak RSS (the scheduler's objects + this script): {peak / 1024:.0f} MiB"
        )
    finally:
        sched.shutdown(wait=False)
        catalog.close()


def _now(service: object) -> object:
    from datetime import datetime

    return datetime.now(service.zone)  # type: ignore[attr-defined]


def _grace(settings: Settings) -> object:
    from datetime import timedelta

    return timedelta(seconds=settings.schedules.misfire_grace)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--only", choices=["monitor", "scheduler"])
    parser.add_argument("--compare", help="another checkout's root: its monitor, side by side")
    args = parser.parse_args()
    cluster = Cluster("bench-fleet").start()
    work = Path(tempfile.mkdtemp(prefix="permafrost-bench-fleet-"))
    try:
        url = cluster.url(cluster.create_database("meta"))
        started = time.perf_counter()
        fill(url)
        print(
            f"catalog filled: {SOURCES} sources, {DATABASES} databases, {BACKUPS:,} backups, "
            f"~{BACKUPS + 1095:,} job runs, 2,000 verifications, 40 alerts "
            f"in {time.perf_counter() - started:.1f} s"
        )
        (work / "bucket").mkdir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "METADATA_DATABASE_URL": url,
            "STORAGE_URL": f"file://{work / 'bucket'}",
            "SOURCES_FILE": str(sources_file(work)),
            "DASHBOARD_USER": AUTH_USER,
            "DASHBOARD_PASSWORD": AUTH_PASSWORD,
            "ALERT_CHECK_INTERVAL": "3600",
        }
        if args.only != "scheduler":
            bench_monitor(env, args.requests, args.compare)
        if args.only != "monitor":
            bench_scheduler(env, args.ticks)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
