"""The monitor when the metadata store or the source goes away: connections checked out healthy
after a restart, the outage alerts it sends by itself (real SMTP), and the page it shows."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.app import create_app
from permafrost.config.settings import Settings
from tests.services import Cluster, _as_owner


@pytest.fixture
def store() -> Iterator[Cluster]:
    cluster = Cluster("meta-restart").start()
    cluster.create_database("permafrost")
    yield cluster
    cluster.destroy()


def pg_ctl_restart(cluster: Cluster) -> None:
    """`pg_ctl restart`, as an operator runs it: every session of the server ends."""
    pg_ctl = [*_as_owner(), str(cluster.bin / "pg_ctl"), "-D", str(cluster.data)]
    subprocess.run(
        [*pg_ctl, "-m", "fast", "-l", str(cluster.root / "log"), "-w", "-t", "60", "restart"],
        check=True,
        capture_output=True,
    )


def test_it_answers_the_first_requests_after_a_restart_of_the_store(
    store: Cluster, tmp_path: Path
) -> None:
    settings = Settings.from_env(
        {
            "METADATA_DATABASE_URL": store.url("permafrost"),
            "STORAGE_URL": f"file://{tmp_path / 'bucket'}",
            "MONITOR_STATE_DIR": str(tmp_path / "state"),
        }
    )
    client = create_app(settings, evaluate=False).test_client()
    for path in ("/status", "/alerts", "/metrics"):
        assert client.get(path).status_code == 200, path
    pg_ctl_restart(store)
    for path in ("/status", "/alerts", "/metrics", "/status"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_data(as_text=True))
