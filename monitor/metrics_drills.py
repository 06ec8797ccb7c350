"""/metrics: the PITR drills (restore/drills/), from each cluster's newest successful drill.

No sample for a cluster that has never had a successful drill: `absent()` and the age of
`permafrost_pitr_drill_last_success_timestamp_seconds` are what to alert on in Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from permafrost.catalog.records import DrillRecord, DrillStatus
from permafrost.catalog.store import Catalog


def families(catalog: Catalog) -> Iterator[Metric]:
    yield from drill_families(catalog.newest_drills(DrillStatus.SUCCEEDED))


def drill_families(drills: list[DrillRecord]) -> Iterator[Metric]:
    last = GaugeMetricFamily(
        "permafrost_pitr_drill_last_success_timestamp_seconds",
        "When the newest successful PITR drill of each cluster finished, as a Unix time.",
        labels=["cluster"],
    )
    recovery = GaugeMetricFamily(
        "permafrost_pitr_drill_recovery_seconds",
        "How long the newest successful PITR drill's recovery took: download and unpack of the "
        "base backup, then WAL replay to the target.",
        labels=["cluster"],
    )
    rpo = GaugeMetricFamily(
        "permafrost_pitr_drill_rpo_seconds",
        "The recovery point the newest successful PITR drill found: its start minus the newest "
        "archived WAL (what losing the server then would have lost).",
        labels=["cluster"],
    )
    for drill in drills:
        finished = drill.finished_at or drill.started_at
        last.add_metric([drill.cluster], finished.timestamp())
        if drill.recovery_seconds is not None:
            recovery.add_metric([drill.cluster], drill.recovery_seconds)
        if drill.rpo_seconds is not None:
            rpo.add_metric([drill.cluster], drill.rpo_seconds)
    yield from (last, recovery, rpo)
