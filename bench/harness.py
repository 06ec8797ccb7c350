"""What the benchmarks share: the kept cluster, the database builder, and measuring a command.

bench/backup.py and bench/restore.py both run against the database built here, and time their
commands with `measure` (GNU time for the peak RSS, /proc for the tree and the host's CPU).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.services import Cluster, free_port, pg_bin  # noqa: E402

BIN = Path(sys.executable).parent
GNU_TIME = "/usr/bin/time"  # Debian package `time`
PERMAFROST = str(BIN / "permafrost")
BUCKET = "bench"
S3_PREFIX = "bench"
META_DB = "permafrost_meta"
MB = 1_000_000
GB = 1_000_000_000

# Loading is the slow part of the first run: a larger WAL allowance avoids checkpoint storms,
# and shared_buffers closer to a real server's makes the dump read the way it would in production.
CLUSTER_SETTINGS = {
    "shared_buffers": "'256MB'",
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'30min'",
}

# Below this many busy cores the machine counts as quiet enough to time something.
QUIET_CORES = 0.3


# --- the database ---------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE customers (
    id integer PRIMARY KEY, name text NOT NULL, email text NOT NULL, country text,
    created_at timestamptz NOT NULL, balance numeric(14, 2) NOT NULL);
INSERT INTO customers
SELECT g, 'Customer ' || g,
       'user' || g || '@example.' || (ARRAY['com', 'org', 'net', 'io'])[1 + g % 4],
       (ARRAY['DE', 'FR', 'US', 'GB', 'NL', 'SE', 'JP', 'BR', 'IN', 'CA'])[1 + (g * 7) % 10],
       timestamptz '2020-01-01' + g * interval '17 minutes',
       round((random() * 10000)::numeric, 2)
FROM generate_series(1, 100000) g;
CREATE TABLE orders (
    id bigint PRIMARY KEY, customer_id integer NOT NULL, status text NOT NULL,
    total numeric(12, 2) NOT NULL, currency char(3) NOT NULL, placed_at timestamptz NOT NULL,
    payment_ref text NOT NULL, shipping jsonb NOT NULL, note text);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_placed ON orders (placed_at);
CREATE TABLE events (
    id bigint PRIMARY KEY, order_id bigint NOT NULL, kind text NOT NULL,
    occurred_at timestamptz NOT NULL, payload jsonb NOT NULL, message text NOT NULL);
CREATE INDEX events_occurred ON events (occurred_at);
"""

# One batch: {n} orders from id {first}, and two events per order. Free text is drawn from a
# small vocabulary and mixed with hex tokens and random numbers, so the dump compresses about
# as well as real application data (4-5x with zstd -3), neither all-random nor all-repeated.
BATCH = """
WITH v AS (
  SELECT ARRAY['delivery', 'package', 'customer', 'requested', 'the', 'a', 'to', 'of', 'and',
    'window', 'please', 'leave', 'at', 'door', 'call', 'before', 'arrival', 'gift', 'wrap',
    'fragile', 'handle', 'with', 'care', 'back', 'office', 'reception', 'weekend', 'morning',
    'evening', 'signature', 'required', 'neighbour', 'garage', 'box', 'invoice', 'attached',
    'discount', 'applied', 'order', 'priority', 'standard', 'express', 'return', 'label',
    'printed', 'warehouse', 'north', 'south', 'east', 'west', 'item', 'missing', 'replacement',
    'sent', 'refund', 'issued', 'thanks'] AS w)
INSERT INTO orders
SELECT g, 1 + (random() * 99999)::int,
       (ARRAY['pending', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded'])
           [1 + (random() * 5)::int],
       round((random() * 500)::numeric + 5, 2),
       (ARRAY['EUR', 'USD', 'GBP'])[1 + g % 3],
       timestamptz '2022-01-01' + g * interval '9 seconds' + random() * interval '5 seconds',
       'pay_' || md5(random()::text),
       jsonb_build_object(
         'street', (1 + g % 400) || ' '
             || (ARRAY['Main St', 'High St', 'Park Ave', 'Oak Rd', 'Elm St'])[1 + g % 5],
         'city', (ARRAY['Berlin', 'Paris', 'Austin', 'London', 'Utrecht', 'Malmo', 'Osaka'])
             [1 + g % 7],
         'zip', lpad(((random() * 99999)::int)::text, 5, '0'),
         'carrier', (ARRAY['dhl', 'ups', 'fedex', 'postnl'])[1 + g % 4],
         'tracking', upper(substr(md5(g::text), 1, 16)),
         'weight_kg', round((random() * 30)::numeric, 3),
         'items', jsonb_build_array(
             jsonb_build_object('sku', 'SKU-' || (random() * 20000)::int, 'qty', 1 + g % 3),
             jsonb_build_object('sku', 'SKU-' || (random() * 20000)::int, 'qty', 1 + g % 2))),
       (SELECT string_agg(w[1 + floor(random() * array_length(w, 1))::int], ' ')
        FROM v, generate_series(1, 4 + g % 20))
FROM generate_series({first}, {first} + {n} - 1) g;

WITH v AS (
  SELECT ARRAY['user', 'session', 'started', 'ended', 'clicked', 'viewed', 'page', 'product',
    'cart', 'checkout', 'payment', 'authorised', 'declined', 'retry', 'timeout', 'from',
    'mobile', 'desktop', 'app', 'browser', 'via', 'campaign', 'email', 'search', 'banner',
    'referral', 'added', 'removed', 'item', 'quantity', 'updated', 'coupon', 'applied',
    'rejected', 'address', 'validated'] AS w)
INSERT INTO events
SELECT g, {first} + (g % {n}),
       (ARRAY['view', 'click', 'cart', 'checkout', 'payment', 'login'])[1 + (random() * 5)::int],
       timestamptz '2022-01-01' + g * interval '3 seconds',
       jsonb_build_object(
         'ip', '10.' || (g % 256) || '.' || (random() * 255)::int || '.' || (random() * 255)::int,
         'user_agent', (ARRAY[
             'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0',
             'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Safari/604.1',
             'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Gecko/20100101 Firefox/125.0'])
             [1 + g % 3],
         'session', md5((g / 7)::text),
         'duration_ms', (random() * 30000)::int,
         'score', random()),
       (SELECT string_agg(w[1 + floor(random() * array_length(w, 1))::int], ' ')
        FROM v, generate_series(1, 3 + g % 9))
FROM generate_series(2 * {first} - 1, 2 * ({first} + {n} - 1)) g;
"""

# About what one order (with its two events and its share of the indexes) adds to the database;
# only used to choose a batch size, the loop itself measures.
BYTES_PER_ORDER = 1400


class BenchCluster(Cluster):
    """The benchmark's cluster, in a fixed directory so a built database outlives the run."""

    def __init__(self, root: Path) -> None:  # deliberately not Cluster's temporary directory
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.bin = pg_bin()
        self.settings = CLUSTER_SETTINGS
        self.initdb_args: tuple[str, ...] = ()  # what Cluster.__init__ (not called) would set
        self.start_prefix: tuple[str, ...] = ()
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            _give_to_postgres(root)
            self._initdb()
            # The port changes on every run (a free one is picked): it lives in its own file.
            with (self.data / "postgresql.conf").open("a") as handle:
                handle.write("include_if_exists = 'bench_port.conf'\n")
        port_conf = self.data / "bench_port.conf"
        port_conf.write_text(f"port = {self.port}\n")
        _give_to_postgres(port_conf)

    def start(self) -> BenchCluster:
        if (self.data / "postmaster.pid").exists():
            self.stop()  # left running by an interrupted run
        super().start()
        return self


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(path, owner.pw_uid, owner.pw_gid)


def database_name(size_gb: float) -> str:
    return f"bench_{round(size_gb * 1000)}mb"


def ensure_database(cluster: BenchCluster, data_dir: Path, size_gb: float) -> tuple[str, int]:
    """The benchmark database of about `size_gb`, reused when a marker says it was built."""
    name = database_name(size_gb)
    marker = data_dir / f"{name}.json"
    exists = bool(cluster.execute(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))
    if marker.exists() and exists:
        size = database_size(cluster, name)
        print(f"reusing database {name}: {size / GB:.2f} GB (marker {marker})")
        return name, size
    marker.unlink(missing_ok=True)
    cluster.drop_database(name)
    size = build_database(cluster, name, int(size_gb * GB))
    marker.write_text(json.dumps({"database": name, "size_gb": size_gb, "bytes": size}) + "\n")
    return name, size


def database_size(cluster: Cluster, name: str) -> int:
    return int(cluster.execute(f"SELECT pg_database_size('{name}')")[0][0])


def build_database(cluster: BenchCluster, name: str, target: int) -> int:
    free = shutil.disk_usage(cluster.root).free
    if free < 3 * target:
        sys.exit(f"need {3 * target / GB:.1f} GB free in {cluster.root}, have {free / GB:.1f}")
    print(f"building database {name} of about {target / GB:.2f} GB ...", flush=True)
    started = time.monotonic()
    cluster.create_database(name)
    cluster.execute(SCHEMA, name)
    # About 40 batches whatever the size: the last one overshoots by at most ~2.5%.
    batch = max(2_000, min(200_000, target // BYTES_PER_ORDER // 40))
    first, size, shown = 1, database_size(cluster, name), 0
    while size < target - batch * BYTES_PER_ORDER // 2:
        cluster.execute(BATCH.format(first=first, n=batch), name)
        first += batch
        size = database_size(cluster, name)
        if size * 10 // target > shown:
            shown = size * 10 // target
            print(f"  {size / GB:.2f} GB, {first - 1} orders", flush=True)
    # Set hint bits and statistics now, so neither the first dump nor autovacuum does it later.
    cluster.execute("VACUUM (FREEZE, ANALYZE)", name)
    cluster.execute("CHECKPOINT")
    size = database_size(cluster, name)
    print(f"built {name}: {size / GB:.2f} GB in {time.monotonic() - started:.0f} s")
    return size


# --- measuring a command --------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    cpu_s: float
    host_cpu_s: float
    peak_mb: float
    tree_mb: float
    quiet: bool  # False: the machine was busy with something else when this started


@dataclass(frozen=True)
class Sample(Measurement):
    variant: str
    run: int
    output_bytes: int


class TreeSampler:
    """The largest total RSS of a process and its descendants, sampled from /proc."""

    INTERVAL = 0.2

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / MB

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self.peak = max(self.peak, self._tree_rss())

    def _tree_rss(self) -> int:
        children: dict[int, list[int]] = {}
        for pid, ppid in _parents():
            children.setdefault(ppid, []).append(pid)
        total, todo = 0, [self.pid]
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, []))
            # A process may end between the listing and the read.
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * self._page
        return total


def _parents() -> list[tuple[int, int]]:
    pairs = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            # The command name is in parentheses and may contain anything, so split after it.
            pairs.append((int(entry.name), int(stat.rsplit(")", 1)[1].split()[1])))
    return pairs


def host_busy() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores, steal excluded)."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(limit: float = 120.0) -> bool:
    """Wait until the machine is nearly idle: on a shared host, another job skews the timing."""
    deadline = time.monotonic() + limit
    while True:
        before = host_busy()
        time.sleep(1.0)
        busy = host_busy() - before
        if busy < QUIET_CORES:
            return True
        if time.monotonic() > deadline:
            print(f"  (machine still busy, {busy:.1f} cores in use: measuring anyway)")
            return False


def measure(
    argv: list[str], env: dict[str, str], log: Path, quiet_limit: float = 120.0
) -> Measurement:
    """Run a command under GNU time and measure it.

    A child's ru_maxrss starts from the high-water mark of the process it was forked from
    (Linux carries it across exec), so a command spawned straight from this Python process
    would report at least this process's own ~70 MB. GNU time is a tiny C process: what it
    reports (%M) is the command's own peak.
    """
    quiet = wait_for_quiet(quiet_limit)
    peak_file = log.with_suffix(".maxrss")
    wrapped = [GNU_TIME, "-f", "%M", "-o", str(peak_file), *argv]
    with log.open("wb") as out:
        busy = host_busy()
        started = time.monotonic()
        proc = subprocess.Popen(wrapped, env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        host = host_busy() - busy
        tree = sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} ... exited {proc.returncode}:\n{log.read_text()[-2000:]}")
    peak_kib = int(peak_file.read_text().split()[-1])  # %M is in KiB
    cpu = usage.ru_utime + usage.ru_stime  # time's own and its reaped descendants'
    return Measurement(wall, cpu, host, peak_kib * 1024 / MB, tree, quiet)
