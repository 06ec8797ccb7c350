"""/metrics: what Prometheus reads from the metadata store, checked against a real one."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics import CONTENT_TYPE, render
from permafrost.backup.recovery import ASSUMED_RATE, estimate
from permafrost.catalog.jobs import BACKUP_LOCK
from permafrost.catalog.store import Catalog, connect
from permafrost.config.settings import Secret, Settings
from permafrost.context import Context
from permafrost.errors import CatalogUnavailable
from tests.services import Cluster

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "prometheus-alerts.yml"
T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
MiB = 1024 * 1024

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@pytest.fixture
def settings(pg: Cluster, metadata_db: str) -> Settings:
    return Settings.from_env({"METADATA_DATABASE_URL": pg.url(metadata_db)})


@pytest.fixture
def catalog(pg: Cluster, metadata_db: str) -> Iterator[Catalog]:
    catalog = connect(Secret(pg.url(metadata_db)))
    yield catalog
    catalog.close()


def scrape(catalog: Catalog, settings: Settings) -> Samples:
    """Sample name → {sorted labels → value}, through Prometheus' own parser."""
    samples: Samples = {}
    for family in text_string_to_metric_families(render(catalog, settings).decode()):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def bid(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


class Store:
    """Rows as the scheduler, the retention job and the restore worker leave them."""

    def __init__(self, catalog: Catalog) -> None:
        self.sql = catalog.conn.execute

    def backup(
        self,
        database: str,
        started: datetime,
        minutes: float = 5,
        *,
        status: str = "completed",
        tier: str = "standard",
        kind: str = "logical",
        size: int | None = 1000,
        dump: int | None = 4000,
        verified: str | None = None,
    ) -> tuple[str, datetime]:
        backup_id = bid(started)
        finished = started + timedelta(minutes=minutes)
        self.sql(
            "INSERT INTO backups (id, database, kind, tier, status, started_at, finished_at,"
            " size_bytes, dump_bytes, verification_status, error)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                backup_id,
                database,
                kind,
                tier,
                status,
                started,
                None if status == "running" else finished,
                size if status == "completed" else None,
                dump if status == "completed" else None,
                verified,
                "pg_dump: connection refused" if status == "failed" else None,
            ),
        )
        return backup_id, finished

    def verification(
        self,
        backup_id: str,
        finished: datetime,
        *,
        kind: str = "test_restore",
        status: str = "verified",
        rate: float | None = None,
    ) -> None:
        details = {"bytes_per_second": rate} if rate is not None else {}
        self.sql(
            "INSERT INTO verifications (backup_id, kind, started_at, finished_at, status, details)"
            " VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
            (
                backup_id,
                kind,
                finished - timedelta(minutes=3),
                finished,
                status,
                json.dumps(details),
            ),
        )

    def runs(self, job: str, database: str | None, status: str, count: int) -> None:
        self.sql(
            "INSERT INTO job_runs (job, database, status, started_at, finished_at)"
            " SELECT %s, %s, %s, %s::timestamptz - g * interval '1 day',"
            "        %s::timestamptz - g * interval '1 day' + interval '5 minutes'"
            " FROM generate_series(1, %s) g",
            (job, database, status, T0, T0, count),
        )


@pytest.fixture
def populated(catalog: Catalog) -> dict[str, Any]:
    """Two databases (shop and crm) and a base-backed cluster (main), a few days of history."""
    s = Store(catalog)
    facts: dict[str, Any] = {}

    # shop: daily backups, the newest not yet verified; an older one verified by a test restore.
    old_id, _ = s.backup("shop", T0 - timedelta(days=3), dump=3 * 10**9, verified="verified")
    verified_id, verified_done = s.backup(
        "shop", T0 - timedelta(days=2), dump=5 * 10**9, verified="verified"
    )
    _, newest_done = s.backup("shop", T0 - timedelta(days=1), minutes=10, size=2048, dump=8 * 10**9)
    s.backup("shop", T0 - timedelta(days=20), tier="compliance", size=999)
    s.backup("shop", T0 - timedelta(days=40), status="deleted")
    s.backup("shop", T0, status="running")
    assert catalog.try_lock(BACKUP_LOCK, "logical:shop"), "its process is alive: it holds the lock"
    facts.update(shop_done=newest_done, shop_dump=5 * 10**9)
    # Six test restores of shop: the newest five count. A failed one and an integrity check
    # carry rates that must not count.
    rates = [1, 10, 50, 20, 40, 30]  # MiB/s, oldest first
    for n, rate in enumerate(rates):
        s.verification(old_id, T0 - timedelta(days=10 - n), rate=rate * MiB)
    s.verification(verified_id, verified_done + timedelta(hours=1), status="failed", rate=999 * MiB)
    s.verification(verified_id, verified_done + timedelta(hours=2), kind="integrity", rate=1.0)
    facts.update(shop_verified=verified_done + timedelta(hours=2), shop_rate=30 * MiB)

    # crm: a backup that completed, then one that failed; verification failed, never passed.
    crm_id, crm_done = s.backup("crm", T0 - timedelta(days=2), minutes=2, size=512, dump=10**9)
    _, crm_failed = s.backup("crm", T0 - timedelta(days=1), status="failed")
    s.verification(crm_id, crm_done + timedelta(hours=1), kind="integrity", status="failed")
    facts.update(crm_done=crm_done, crm_failed=crm_failed)

    # main: a weekly base backup (the catalog's database column holds the cluster name).
    _, base_done = s.backup(
        "main", T0 - timedelta(days=4), minutes=30, tier="base", kind="base", size=7 * 10**9
    )
    facts.update(base_done=base_done)

    s.runs("backup", "shop", "succeeded", 12)
    s.runs("backup", "shop", "failed", 2)
    s.runs("backup", "shop", "running", 1)
    s.runs("compliance_backup", "shop", "succeeded", 1)
    s.runs("backup", "crm", "succeeded", 3)
    s.runs("backup", "crm", "failed", 1)
    s.runs("base_backup", "main", "succeeded", 4)
    s.runs("base_backup", "main", "aborted", 1)
    s.runs("verify", None, "failed", 5)  # not a backup job

    wal_at = T0 - timedelta(minutes=2)
    s.sql(
        "INSERT INTO wal_archive (cluster, last_segment, last_archived_at, segments, bytes)"
        " VALUES ('main', '000000010000000000000042', %s, 66, 66 * 16777216)",
        (wal_at,),
    )
    leader_at = T0 - timedelta(seconds=20)
    s.sql(
        "INSERT INTO heartbeats (instance, role, host, pid, beat_at) VALUES"
        " ('a', 'leader', 'sched-1', 10, %s), ('b', 'standby', 'sched-2', 11, %s),"
        " ('c', 'stopped', 'sched-3', 12, %s)",
        (leader_at, T0, T0),
    )
    s.sql(
        "INSERT INTO alerts (key, severity, summary, status) VALUES"
        " ('backup:crm', 'critical', 'backup of crm failed', 'active'),"
        " ('wal:main', 'critical', 'WAL lag', 'active'),"
        " ('verify:crm', 'warning', 'crm never verified', 'active'),"
        " ('backup:shop', 'critical', 'backup of shop failed', 'resolved')"
    )
    s.sql(
        "INSERT INTO storage_usage (tier, database, objects, bytes) VALUES"
        " ('standard', 'shop', 14, 28000), ('standard', 'crm', 4, 2000),"
        " ('compliance', 'shop', 2, 999), ('base', 'main', 3, 7000000000),"
        " ('wal', 'main', 66, 1107296256)"
    )
    facts.update(wal_at=wal_at, leader_at=leader_at)
    return facts


def test_a_populated_store_reads_as_an_operator_expects(
    catalog: Catalog, settings: Settings, populated: dict[str, Any]
) -> None:
    m = scrape(catalog, settings)
    p = populated

    last = "permafrost_backup_last_success_timestamp_seconds"
    assert value(m, last, database="shop", kind="logical") == p["shop_done"].timestamp()
    assert value(m, last, database="crm", kind="logical") == p["crm_done"].timestamp()
    assert value(m, last, database="main", kind="base") == p["base_done"].timestamp()
    assert len(m[last]) == 3
    size, duration = "permafrost_backup_last_size_bytes", "permafrost_backup_last_duration_seconds"
    assert value(m, size, database="shop", kind="logical") == 2048
    assert value(m, duration, database="shop", kind="logical") == 600
    assert value(m, duration, database="main", kind="base") == 1800

    failure = "permafrost_backup_last_failure_timestamp_seconds"
    assert m[failure] == {(("database", "crm"), ("kind", "logical")): p["crm_failed"].timestamp()}

    counts = "permafrost_backups"
    assert value(m, counts, database="shop", tier="standard", status="completed") == 3
    assert value(m, counts, database="shop", tier="standard", status="deleted") == 1
    assert value(m, counts, database="shop", tier="standard", status="running") == 1
    assert value(m, counts, database="shop", tier="compliance", status="completed") == 1
    assert value(m, counts, database="crm", tier="standard", status="failed") == 1
    assert value(m, counts, database="main", tier="base", status="completed") == 1

    runs = "permafrost_backup_runs_total"
    assert value(m, runs, database="shop", kind="logical", status="succeeded") == 13
    assert value(m, runs, database="shop", kind="logical", status="failed") == 2
    assert value(m, runs, database="shop", kind="logical", status="aborted") == 0
    assert value(m, runs, database="crm", kind="logical", status="failed") == 1
    assert value(m, runs, database="main", kind="base", status="succeeded") == 4
    assert value(m, runs, database="main", kind="base", status="aborted") == 1
    assert len(m[runs]) == 9  # three outcomes for each of the three; verify runs not counted

    assert m["permafrost_storage_bytes"] == {
        (("tier", "base"),): 7e9,
        (("tier", "compliance"),): 999,
        (("tier", "standard"),): 30000,
        (("tier", "wal"),): 1107296256,
    }
    assert value(m, "permafrost_storage_objects", tier="standard") == 18

    wal = "permafrost_wal_last_archived_timestamp_seconds"
    assert value(m, wal, cluster="main") == p["wal_at"].timestamp()
    verified = "permafrost_verification_last_success_timestamp_seconds"
    assert m[verified] == {(("database", "shop"),): p["shop_verified"].timestamp()}
    heartbeat = "permafrost_scheduler_heartbeat_timestamp_seconds"
    assert m[heartbeat] == {(): p["leader_at"].timestamp()}  # the leader's, not the standby's
    assert m["permafrost_alerts_active"] == {
        (("severity", "critical"),): 2,
        (("severity", "warning"),): 1,
        (("severity", "info"),): 0,
    }
    assert m["permafrost_up"] == {(): 1}


def test_the_recovery_estimate_is_the_one_permafrost_recovery_gives(
    catalog: Catalog, settings: Settings, populated: dict[str, Any]
) -> None:
    m = scrape(catalog, settings)
    estimates = m["permafrost_recovery_time_estimate_seconds"]
    # shop: the newest verified backup's dump over the median of shop's newest five test
    # restores (10, 50, 20, 40, 30 MiB/s: the oldest, 1 MiB/s, is the sixth and does not count).
    assert populated["shop_rate"] == 30 * MiB
    assert value(m, "permafrost_recovery_time_estimate_seconds", database="shop") == (
        pytest.approx(5 * 10**9 / (30 * MiB))
    )
    # crm has no test restore of its own: the newest five of any database give the rate.
    assert value(m, "permafrost_recovery_time_estimate_seconds", database="crm") == (
        pytest.approx(10**9 / (30 * MiB))
    )
    assert set(estimates) == {(("database", "shop"),), (("database", "crm"),)}  # not base
    ctx = Context(settings)
    try:
        for database in ("shop", "crm"):
            expected = estimate(ctx, database).seconds
            assert value(m, "permafrost_recovery_time_estimate_seconds", database=database) == (
                pytest.approx(expected)
            )
    finally:
        ctx.close()


def test_the_assumed_rate_until_a_test_restore_measured_one(
    catalog: Catalog, settings: Settings
) -> None:
    Store(catalog).backup("solo", T0, dump=60 * MiB)
    m = scrape(catalog, settings)
    assert value(m, "permafrost_recovery_time_estimate_seconds", database="solo") == (
        60 * MiB / ASSUMED_RATE
    )


def test_every_metric_the_alert_rules_use_is_exported(
    catalog: Catalog, settings: Settings, populated: dict[str, Any]
) -> None:
    rules = [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]
    used = {name for rule in rules for name in re.findall(r"permafrost_[a-z_]+", rule["expr"])}
    assert used >= {
        "permafrost_backup_last_success_timestamp_seconds",
        "permafrost_backup_last_failure_timestamp_seconds",
        "permafrost_scheduler_heartbeat_timestamp_seconds",
        "permafrost_wal_last_archived_timestamp_seconds",
        "permafrost_verification_last_success_timestamp_seconds",
        "permafrost_alerts_active",
        "permafrost_recovery_time_estimate_seconds",
    }
    # The copy gauges have samples once a copy destination is configured.
    copies = Settings.from_env({"COPY_STORAGE_URLS": "dr=file:///nowhere"}).copies
    assert used - set(scrape(catalog, dataclasses.replace(settings, copies=copies))) == set()
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        assert "permafrost " in rule["annotations"]["runbook"], rule["alert"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_empty_store_still_scrapes(catalog: Catalog, settings: Settings) -> None:
    text = render(catalog, settings).decode()
    assert CONTENT_TYPE.startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["permafrost_up"].samples[0].value == 1
    alerts = {s.labels["severity"]: s.value for s in families["permafrost_alerts_active"].samples}
    assert alerts == {"critical": 0, "warning": 0, "info": 0}
    with_samples = {name for name, f in families.items() if f.samples}
    assert with_samples == {
        "permafrost_up",
        "permafrost_alerts_active",
        "permafrost_alerts_silenced",
        "permafrost_alerts_acknowledged",
    }
    assert all(f.documentation for f in families.values())


def test_a_store_that_stops_answering_raises_catalog_unavailable(
    catalog: Catalog, settings: Settings
) -> None:
    catalog.conn.close()
    with pytest.raises(CatalogUnavailable):
        render(catalog, settings)


def test_the_text_is_generate_latest_s_byte_for_byte(
    catalog: Catalog, settings: Settings, populated: dict[str, Any]
) -> None:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

    from monitor import exposition
    from monitor.metrics import StoreCollector

    families = list(StoreCollector(catalog, settings).collect())
    assert len(families) > 20
    assert exposition.text(families) == exposition.registry_text(families)
    odd = GaugeMetricFamily("permafrost_odd", 'a "doc" with \\ and\nnewline', labels=["database"])
    odd.add_metric(['sh"op\\x\nÿ'], 1.5e-7)
    odd.add_metric(["inf"], float("inf"))
    runs = CounterMetricFamily("permafrost_odd_runs", "counted", labels=["a", "b"])
    runs.add_metric(["2", "1"], 3)
    plain = [odd, runs, GaugeMetricFamily("permafrost_plain", "no labels", value=0)]
    assert exposition.text(plain) == exposition.registry_text(plain)
    timed = GaugeMetricFamily("permafrost_timed", "a timestamp", labels=["x"])
    timed.add_metric(["1"], 2, timestamp=1700000000)
    other = [*plain, timed, InfoMetricFamily("permafrost_build", "info", value={"v": "1"})]
    assert exposition.text(other) == exposition.registry_text(other)  # generate_latest wrote it
