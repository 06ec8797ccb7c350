"""/metrics: each copy destination against the primary (COPY_STORAGE_URLS), labelled by
`destination`: how far it lags (catalog/copy_lag.py), how many backups it lacks, and the newest
backup it holds a verified copy of. No destination configured: no samples."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily, Metric

from permafrost.catalog.copy_lag import CopyLag, copy_lags
from permafrost.catalog.store import Catalog
from permafrost.config.copies import CopySettings


def families(catalog: Catalog, copies: CopySettings) -> Iterator[Metric]:
    if not copies.destinations:
        return
    yield from copy_families(copy_lags(catalog, copies), copies.max_lag, datetime.now(UTC))


def copy_families(lags: list[CopyLag], max_lag: int, now: datetime) -> Iterator[Metric]:
    lag = GaugeMetricFamily(
        "permafrost_copy_lag_seconds",
        "How far each copy destination lags: the age of the oldest completed backup it holds "
        "no verified copy of (0: it holds them all).",
        labels=["destination"],
    )
    missing = GaugeMetricFamily(
        "permafrost_copy_missing_backups",
        "Completed backups (of the tiers it copies) each copy destination holds no verified "
        "copy of.",
        labels=["destination"],
    )
    newest = GaugeMetricFamily(
        "permafrost_copy_newest_backup_timestamp_seconds",
        "When the newest backup each copy destination holds a verified copy of finished, as a "
        "Unix time (no sample: none yet).",
        labels=["destination"],
    )
    for row in lags:
        lag.add_metric([row.destination], row.lag_seconds(now))
        missing.add_metric([row.destination], row.missing)
        if row.newest_at is not None:
            newest.add_metric([row.destination], row.newest_at.timestamp())
    yield from (lag, missing, newest)
    yield GaugeMetricFamily(
        "permafrost_copy_max_lag_seconds",
        "COPY_MAX_LAG: the lag above which the copy_lag alert fires.",
        value=max_lag,
    )
