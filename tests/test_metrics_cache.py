"""METRICS_CACHE_SECONDS: /metrics rendered once per window in a process, never older."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from monitor import metrics_cache
from monitor.app import create_app
from permafrost.catalog.store import connect
from permafrost.config.settings import Secret, Settings
from permafrost.errors import CatalogUnavailable
from tests.services import Cluster


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_it_scrapes_the_store_again_once_the_window_is_over(
    pg: Cluster, metadata_db: str, tmp_path: Path
) -> None:
    url = pg.url(metadata_db)
    settings = Settings.from_env(
        {
            "METADATA_DATABASE_URL": url,
            "STORAGE_URL": f"file://{tmp_path}",
            "METRICS_CACHE_SECONDS": "5s",
        }
    )
    app = create_app(settings, evaluate=False)
    clock = Clock()
    app.extensions[metrics_cache.EXTENSION].clock = clock
    client = app.test_client()
    assert "shop" not in client.get("/metrics").get_data(as_text=True)
    catalog = connect(Secret(url))
    catalog.conn.execute(
        "INSERT INTO backups (id, database, kind, tier, status, started_at, manifest_key, error)"
        " VALUES ('20260301T020000Z-aaaaaa', 'shop', 'logical', 'standard', 'failed', now(),"
        " 'k', 'disk full')"
    )
    catalog.close()
    clock.now += 4.9  # within the window: the body rendered before the failure
    assert "shop" not in client.get("/metrics").get_data(as_text=True)
    clock.now += 0.1  # 5 s after the render: the failure is there
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'permafrost_backup_last_failure_timestamp_seconds{database="shop",kind="logical"}' in text
    )


def test_it_is_off_by_default(pg: Cluster, metadata_db: str, tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"METADATA_DATABASE_URL": pg.url(metadata_db), "STORAGE_URL": f"file://{tmp_path}"}
    )
    assert settings.monitor.metrics_cache_seconds == 0
    calls = []
    cache = metrics_cache.RenderedCache(settings.monitor.metrics_cache_seconds)
    for _ in range(3):
        cache.get(lambda: calls.append(1) or b"x")
    assert len(calls) == 3


def test_a_failed_render_is_not_kept() -> None:
    clock = Clock()
    cache = metrics_cache.RenderedCache(5, clock)
    assert cache.get(lambda: b"old") == b"old"
    clock.now += 5

    def down() -> bytes:
        raise CatalogUnavailable("the metadata store does not answer")

    with pytest.raises(CatalogUnavailable):
        cache.get(down)
    assert cache.get(lambda: b"new") == b"new"  # not the body from before the outage


def test_threads_of_one_process_render_once_between_them() -> None:
    cache = metrics_cache.RenderedCache(5)
    calls: list[int] = []

    def slow() -> bytes:
        calls.append(1)
        time.sleep(0.2)
        return b"body"

    bodies: list[bytes] = []
    threads = [threading.Thread(target=lambda: bodies.append(cache.get(slow))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bodies == [b"body"] * 8 and len(calls) == 1
