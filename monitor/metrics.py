"""`/metrics`: the metadata store as Prometheus sees it, read afresh at every scrape.

The scheduler and the restore worker are other processes, so nothing here counts events as
they happen: each scrape runs a handful of aggregate queries over the store (one pass over
`backups`, one over the job runs, two over the verifications, the small tables as they are)
and turns the rows into metric families on a registry of its own. Nothing loops over backups in
Python, so a scrape stays fast with tens of thousands of catalogued backups (about 30 ms with
10,000 backups and 20,000 job runs, 200 ms with ten times as many).

Names follow Prometheus' conventions: base units (seconds, bytes), `_timestamp_seconds` for
Unix times, `_total` for the one counter. For base backups the `database` label holds the
cluster name, as the catalog does. A metric with nothing to report has no sample (no backup of
a database yet: no `permafrost_backup_last_success_timestamp_seconds` for it), except
`permafrost_alerts_active` (and `_silenced`, `_acknowledged`, the part of it that is silenced or
acknowledged), which always has its three severities, and the run counter, which has all three
outcomes for every database and kind that has run at all.

A failing store raises CatalogUnavailable out of `render`, and the route answers 503: a scrape
that fails is what Prometheus' own `up` and `absent(permafrost_up)` alert on.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from monitor import exposition, metrics_copies, metrics_drills
from monitor.alerts.findings import Severity
from permafrost.backup.recovery import ASSUMED_RATE
from permafrost.catalog import metrics as store_metrics
from permafrost.catalog.chains import newest_chains
from permafrost.catalog.records import ChainStats
from permafrost.catalog.store import Catalog
from permafrost.config.fleet import Fleet, load_fleet
from permafrost.config.settings import Settings

__all__ = ["CONTENT_TYPE", "RATE_SAMPLES", "SEVERITIES", "StoreCollector", "render"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
SEVERITIES = tuple(Severity)  # each always has a sample, 0 when none is active
RUN_STATUSES = ("succeeded", "failed", "aborted")
MUTED = {  # the gauges beside permafrost_alerts_active, each with its three severities
    "silenced": "silenced now (no email until the silence ends)",
    "acknowledged": "acknowledged (no more reminders)",
}
RUN_KINDS = {
    "backup": "logical",
    "compliance_backup": "logical",
    "base_backup": "base",
    "incremental_backup": "base",
}
PER_BACKUP = ["database", "kind"]
RATE_SAMPLES = 5  # the newest test restores whose median is the rate (Catalog.restore_rates)


def render(catalog: Catalog, settings: Settings) -> bytes:
    """The exposition text for one scrape; CatalogUnavailable when the store does not answer.
    Written by monitor/exposition.py: generate_latest's text, faster at 5,000 samples."""
    return exposition.text(list(StoreCollector(catalog, settings).collect()))


@dataclass
class _Snapshot:
    """What one scrape read from the store, already shaped by labels."""

    newest: list[tuple[str, str, float, int | None, float | None]] = field(default_factory=list)
    # database, kind, the source server's version, the client's
    versions: list[tuple[str, str, str, str]] = field(default_factory=list)
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    failures: dict[tuple[str, str], float] = field(default_factory=dict)
    runs: dict[tuple[str, str, str], int] = field(default_factory=dict)
    storage: list[tuple[str, float, float]] = field(default_factory=list)
    wal: list[tuple[str, float]] = field(default_factory=list)
    wal_queue: list[tuple[str, float, float]] = field(default_factory=list)
    verified: list[tuple[str, float]] = field(default_factory=list)
    heartbeat: float | None = None
    alerts: dict[str, int] = field(default_factory=dict)
    muted: dict[tuple[str, str], int] = field(default_factory=dict)  # (state, severity)
    recovery: dict[str, float] = field(default_factory=dict)
    chains: list[ChainStats] = field(default_factory=list)  # each cluster's newest chain


def _read(catalog: Catalog, settings: Settings) -> _Snapshot:
    """Run the scrape's queries and shape their rows by labels."""
    snap = _Snapshot()
    newest: dict[tuple[str, str], list[_Newest]] = defaultdict(list)
    for db, kind, tier, status, count, last_at, *picked in store_metrics.backup_groups(catalog):
        snap.counts[(db, tier, status)] = snap.counts.get((db, tier, status), 0) + count
        if status in ("failed", "interrupted"):  # interrupted: its process died mid-way
            snap.failures[(db, kind)] = max(last_at, snap.failures.get((db, kind), last_at))
        if picked[0] is not None:
            newest[(db, kind)].append(_Newest(*picked))
    for (db, kind), tiers in sorted(newest.items()):
        n = max(tiers, key=lambda t: (t.started_at, t.id))
        snap.newest.append((db, kind, n.finished_at, n.size_bytes, n.duration))
        if n.server_version:
            snap.versions.append((db, kind, n.server_version, n.tool_version or ""))
    snap.runs = _run_counts(
        store_metrics.finished_run_counts(catalog, settings.cluster_name, list(RUN_KINDS)),
        {s.name for s in settings.source.sqlite},
    )
    snap.storage = [(tier, size, n) for tier, size, n in store_metrics.storage_totals(catalog)]
    snap.wal = [(cluster, at) for cluster, at in store_metrics.wal_archived_times(catalog)]
    snap.wal_queue = list(store_metrics.wal_queues(catalog))
    snap.verified = [(db, at) for db, at in store_metrics.verified_times(catalog)]
    snap.heartbeat = store_metrics.leader_heartbeat(catalog)
    snap.alerts = store_metrics.active_alert_counts(catalog)
    snap.muted = catalog.muted_alert_counts()
    snap.chains = newest_chains(catalog)
    dumps = _recovery_backups(newest)
    rates = store_metrics.restore_rate_rows(catalog, RATE_SAMPLES) if dumps else []
    snap.recovery = _recovery(dumps, rates)
    return snap


def _run_counts(
    rows: Iterable[tuple[str, str, str, int]], sqlite: set[str]
) -> dict[tuple[str, str, str], int]:
    """Finished runs by (database, kind, status): the logical jobs' counts added up (a SQLite
    file's backup jobs are kind sqlite)."""
    runs: dict[tuple[str, str, str], int] = defaultdict(int)
    for job, db, status, count in rows:
        kind = "sqlite" if db in sqlite and job != "base_backup" else RUN_KINDS[job]
        runs[(db, kind, status)] += count
    return dict(runs)


@dataclass(frozen=True)
class _Newest:
    """A tier's newest completed backup of a database and kind, and its newest verified one."""

    started_at: datetime
    id: str
    finished_at: float
    size_bytes: int | None
    duration: float | None
    dump_bytes: int
    verified_started_at: datetime | None
    verified_id: str | None
    verified_dump_bytes: int
    server_version: str | None = None  # the source server's, as that backup saw it
    tool_version: str | None = None  # of the pg_dump or pg_basebackup that took it


def _recovery_backups(newest: dict[tuple[str, str], list[_Newest]]) -> list[tuple[str, int]]:
    """The dump size of the backup a recovery would use, as recovery.usable_backups
    picks it: the newest verified completed logical backup of a database, else its newest."""
    dumps = []
    for (db, kind), tiers in sorted(newest.items()):
        if kind != "logical":
            continue
        verified = [t for t in tiers if t.verified_started_at is not None]
        if verified:
            v = max(verified, key=lambda t: (t.verified_started_at, t.verified_id))
            dumps.append((db, v.verified_dump_bytes))
        else:
            n = max(tiers, key=lambda t: (t.started_at, t.id))
            dumps.append((db, n.dump_bytes))
    return dumps


def _recovery(
    dumps: Iterable[tuple[str, int]], rates: Iterable[tuple[Any, ...]]
) -> dict[str, float]:
    """Seconds to restore each database: dump bytes over the median measured rate (of that
    database, else of any), else the assumed rate, as permafrost.backup.recovery.estimate does."""
    own: dict[str, list[float]] = defaultdict(list)
    anywhere: list[float] = []
    for db, rate, in_database, in_all in rates:
        if not rate:
            continue
        if in_database:
            own[db].append(rate)
        if in_all:
            anywhere.append(rate)
    fallback = statistics.median(anywhere) if anywhere else ASSUMED_RATE
    return {
        db: dump_bytes / (statistics.median(own[db]) if own.get(db) else fallback)
        for db, dump_bytes in dumps
    }


# --- the collector -----------------------------------------------------------------------------


class StoreCollector(Collector):
    """Reads the store when Prometheus scrapes; yields the permafrost_* families."""

    def __init__(self, catalog: Catalog, settings: Settings) -> None:
        self.catalog, self.settings = catalog, settings

    def collect(self) -> Iterator[Metric]:
        snap = _read(self.catalog, self.settings)
        fleet = load_fleet(self.settings)
        families = [
            *_families(snap),
            *metrics_drills.families(self.catalog),
            *metrics_copies.families(self.catalog, self.settings.copies),
        ]
        if fleet.from_file is not None:  # the fleet of one's series stay as they were
            owners: dict[str, str] = {}  # each name's source, looked up once per scrape
            families = [with_source(f, fleet, owners) for f in families]
        yield from families


def with_source(family: Metric, fleet: Fleet, owners: dict[str, str] | None = None) -> Metric:
    """A SOURCES_FILE fleet's series: each per-database (or per-cluster) sample labelled by
    its source too, so one source can be selected, summed or alerted on. `owners` memoizes
    the lookups across families (bench/fleet.py: 500 databases make thousands of samples)."""
    clusters = {s.cluster: s.name for s in fleet.sources if s.cluster}
    owners = {} if owners is None else owners
    for sample in family.samples:
        if "database" in sample.labels:
            name = sample.labels["database"]
            if name not in owners:
                owners[name] = clusters.get(name) or fleet.owner(name) or ""
            sample.labels["source"] = owners[name]
        elif "cluster" in sample.labels:
            sample.labels["source"] = clusters.get(sample.labels["cluster"], "")
    return family


def _families(snap: _Snapshot) -> Iterator[Metric]:
    yield from _newest_families(snap)
    yield from _count_families(snap)
    yield from _storage_families(snap)
    yield from _progress_families(snap)
    yield from _risk_families(snap)
    yield from _chain_families(snap)
    yield GaugeMetricFamily(
        "permafrost_up", "1 when the metadata store answered this scrape's queries.", value=1
    )


def _chain_families(snap: _Snapshot) -> Iterator[Metric]:
    """Each cluster's newest chain of base backups: a full and its incrementals."""
    families = {
        "members": GaugeMetricFamily(
            "permafrost_base_chain_members",
            "Base backups in each cluster's newest chain: its full and the incrementals "
            "taken against it (a restore needs every one).",
            labels=["cluster"],
        ),
        "stored_bytes": GaugeMetricFamily(
            "permafrost_base_chain_bytes",
            "Stored size (compressed and encrypted) of every member of the newest chain.",
            labels=["cluster"],
        ),
        "changed_bytes": GaugeMetricFamily(
            "permafrost_base_chain_changed_bytes",
            "Bytes the newest chain's members carry: the full's whole size and each "
            "incremental's changed blocks and new files (before compression).",
            labels=["cluster"],
        ),
    }
    for chain in snap.chains:
        for attribute, family in families.items():
            family.add_metric([chain.cluster], getattr(chain, attribute))
    yield from families.values()


def _newest_families(snap: _Snapshot) -> Iterator[Metric]:
    """The newest completed backup of each database and kind: when, how big, how long."""
    last_success = GaugeMetricFamily(
        "permafrost_backup_last_success_timestamp_seconds",
        "When the newest completed backup of each database (or, for base backups, cluster) "
        "finished, as a Unix time.",
        labels=PER_BACKUP,
    )
    last_size = GaugeMetricFamily(
        "permafrost_backup_last_size_bytes",
        "Stored size (compressed and encrypted) of the newest completed backup.",
        labels=PER_BACKUP,
    )
    last_duration = GaugeMetricFamily(
        "permafrost_backup_last_duration_seconds",
        "How long the newest completed backup took, start to finish.",
        labels=PER_BACKUP,
    )
    for db, kind, at, size, duration in snap.newest:
        last_success.add_metric([db, kind], at)
        if size is not None:
            last_size.add_metric([db, kind], size)
        if duration is not None:
            last_duration.add_metric([db, kind], duration)
    yield from (last_success, last_size, last_duration)
    yield _version_family(snap)


def _version_family(snap: _Snapshot) -> Metric:
    """An info metric: the source server's version and the client's, as the newest backup saw."""
    family = GaugeMetricFamily(
        "permafrost_source_server_version",
        "Always 1: the labels are the source server's PostgreSQL version (and major) and the "
        "version of the pg_dump or pg_basebackup that took the newest completed backup of each "
        "database (or, for base backups, cluster).",
        labels=[*PER_BACKUP, "version", "major", "client_version"],
    )
    for db, kind, server, tool in snap.versions:
        version = server.split()[0] if server.strip() else server
        family.add_metric([db, kind, version, version.split(".")[0], tool], 1)
    return family


def _count_families(snap: _Snapshot) -> Iterator[Metric]:
    """The newest failure, the catalogued backups, the finished runs."""
    last_failure = GaugeMetricFamily(
        "permafrost_backup_last_failure_timestamp_seconds",
        "When the newest failed backup of each database (or cluster) failed, as a Unix time.",
        labels=PER_BACKUP,
    )
    for (db, kind), at in sorted(snap.failures.items()):
        last_failure.add_metric([db, kind], at)
    yield last_failure

    backups = GaugeMetricFamily(
        "permafrost_backups",
        "Catalogued backups by database, tier and status (running, completed, failed, "
        "interrupted, and "
        "deleted: rows kept after retention or an operator removed the objects; only "
        'status="completed" exist in the bucket).',
        labels=["database", "tier", "status"],
    )
    for (db, tier, status), count in sorted(snap.counts.items()):
        backups.add_metric([db, tier, status], count)
    yield backups

    runs = CounterMetricFamily(
        "permafrost_backup_runs",
        "Finished backup job runs (backup and compliance_backup are kind logical, base_backup "
        "kind base) by outcome, from the job history.",
        labels=["database", "kind", "status"],
    )
    for db, kind in sorted({(db, kind) for db, kind, _ in snap.runs}):
        for status in RUN_STATUSES:
            runs.add_metric([db, kind, status], snap.runs.get((db, kind, status), 0))
    yield runs


def _storage_families(snap: _Snapshot) -> Iterator[Metric]:
    """The bucket per tier, as the retention job last measured it."""
    storage_bytes = GaugeMetricFamily(
        "permafrost_storage_bytes",
        "Bytes stored in the bucket per tier, as the retention job last measured them.",
        labels=["tier"],
    )
    storage_objects = GaugeMetricFamily(
        "permafrost_storage_objects",
        "Objects stored in the bucket per tier, as the retention job last measured them.",
        labels=["tier"],
    )
    for tier, stored, objects in sorted(snap.storage):
        storage_bytes.add_metric([tier], stored)
        storage_objects.add_metric([tier], objects)
    yield from (storage_bytes, storage_objects)


def _progress_families(snap: _Snapshot) -> Iterator[Metric]:
    """WAL archived, verifications passed, the scheduler's heartbeat."""
    wal = GaugeMetricFamily(
        "permafrost_wal_last_archived_timestamp_seconds",
        "When the newest WAL segment of each cluster reached the bucket, as a Unix time.",
        labels=["cluster"],
    )
    for cluster, at in sorted(snap.wal):
        wal.add_metric([cluster], at)
    yield wal
    yield from _wal_queue_families(snap)

    verified = GaugeMetricFamily(
        "permafrost_verification_last_success_timestamp_seconds",
        "When a backup of each database (or cluster) last passed a verification (integrity or "
        "test restore), as a Unix time.",
        labels=["database"],
    )
    for db, at in sorted(snap.verified):
        verified.add_metric([db], at)
    yield verified

    heartbeat = GaugeMetricFamily(
        "permafrost_scheduler_heartbeat_timestamp_seconds",
        "The leading scheduler's newest heartbeat, as a Unix time (no sample: no leader).",
    )
    if snap.heartbeat is not None:
        heartbeat.add_metric([], snap.heartbeat)
    yield heartbeat


def _risk_families(snap: _Snapshot) -> Iterator[Metric]:
    """Active alerts, and how long a recovery would take."""
    alerts = GaugeMetricFamily(
        "permafrost_alerts_active",
        "Active alerts (the monitor's evaluator and the jobs raise them) by severity.",
        labels=["severity"],
    )
    for severity in SEVERITIES:
        alerts.add_metric([str(severity)], snap.alerts.get(severity, 0))
    yield alerts
    for state, meaning in MUTED.items():
        muted = GaugeMetricFamily(
            f"permafrost_alerts_{state}",
            f"Active alerts {meaning}, by severity (also counted in permafrost_alerts_active).",
            labels=["severity"],
        )
        for severity in SEVERITIES:
            muted.add_metric([str(severity)], snap.muted.get((state, str(severity)), 0))
        yield muted

    recovery = GaugeMetricFamily(
        "permafrost_recovery_time_estimate_seconds",
        "Estimated time to restore each database's best backup (newest verified, else newest): "
        "its dump size over the median rate of the newest test restores (of that database, "
        f"else any), or {ASSUMED_RATE // 2**20} MiB/s until one is measured.",
        labels=["database"],
    )
    for db, seconds in sorted(snap.recovery.items()):
        recovery.add_metric([db], seconds)
    yield recovery


def _wal_queue_families(snap: _Snapshot) -> Iterator[Metric]:
    """The WAL waiting in pg_wal to be archived (the wal_queue alert's figures)."""
    segments = GaugeMetricFamily(
        "permafrost_wal_ready_segments",
        "WAL files marked ready in pg_wal, not yet archived, as wal-push last counted them.",
        labels=["cluster"],
    )
    size = GaugeMetricFamily(
        "permafrost_wal_ready_bytes",
        "The bytes of those WAL files.",
        labels=["cluster"],
    )
    for cluster, waiting, stored in sorted(snap.wal_queue):
        segments.add_metric([cluster], waiting)
        size.add_metric([cluster], stored)
    yield from (segments, size)
