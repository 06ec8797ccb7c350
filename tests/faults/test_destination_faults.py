"""Storage faults on the HTTP destinations: Azure Blob (Azurite) and Google Cloud Storage
(gcp-storage-emulator), each behind the fault proxy that breaks requests.

Transient faults (500s, reset connections, responses cut midway) are survived: the backup
completes and restores to identical rows. A persistent upload failure fails cleanly: one line,
exit 6, no manifest written. (SFTP is not HTTP: the proxy does not fit it.)

gcp-storage-emulator answers a resumable upload's session URL with its own address, so the
chunks of an object larger than one chunk (16 MiB) would bypass the proxy; the parts here
(5 MiB) are single requests, which all go through it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from permafrost.config.env import Secret
from permafrost.config.storage import AzureSettings, GcsSettings, StorageSettings
from permafrost.storage import Storage, open_storage
from tests.conftest import make_sample_database, run
from tests.destinations import AZURITE_ACCOUNT, AZURITE_KEY
from tests.faults.conftest import Ledger, blob
from tests.faults.proxy import FaultProxy, Plan
from tests.helpers import loads, table_digest
from tests.services import Cluster
from tests.test_destinations import base_env, unique


@pytest.fixture(scope="module")
def big_db(pg: Cluster) -> str:
    # About 14 MB of dump, 6 MB stored: a multipart upload of two parts, ranged downloads.
    return make_sample_database(pg, extra_sql=blob(120000))


class Destination:
    """A fresh container or bucket on the destination's server, reached through a proxy."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.name = unique("pf").replace("_", "-")
        if kind == "azure":
            server = request.getfixturevalue("azurite")
            server.create_container(self.name)
            self.upstream = f"http://127.0.0.1:{server.port}"
        else:
            server = request.getfixturevalue("gcs_emulator")
            server.create_bucket(self.name)
            self.upstream = server.endpoint
        self.proxy = FaultProxy(self.upstream)

    def env(self) -> dict[str, str]:
        if self.kind == "azure":
            return {
                "STORAGE_URL": f"azure://{self.name}/backups",
                "AZURE_STORAGE_ACCOUNT": AZURITE_ACCOUNT,
                "AZURE_STORAGE_KEY": AZURITE_KEY,
                "AZURE_STORAGE_ENDPOINT": f"{self.proxy.url}/{AZURITE_ACCOUNT}",
                "S3_MAX_ATTEMPTS": "6",
            }
        return {
            "STORAGE_URL": f"gs://{self.name}/backups",
            "GCS_ENDPOINT_URL": self.proxy.url,
            "S3_MAX_ATTEMPTS": "6",
        }

    def storage(self) -> Storage:
        """The destination itself, around the proxy, to look at what was left."""
        if self.kind == "azure":
            azure = AzureSettings(
                account=AZURITE_ACCOUNT,
                key=Secret(AZURITE_KEY),
                endpoint=f"{self.upstream}/{AZURITE_ACCOUNT}",
            )
            return open_storage(StorageSettings(url=f"azure://{self.name}", azure=azure))
        gcs = GcsSettings(endpoint=self.upstream)
        return open_storage(StorageSettings(url=f"gs://{self.name}", gcs=gcs))


@pytest.fixture(params=["azure", "gcs"])
def destination(request: pytest.FixtureRequest) -> Iterator[Destination]:
    made = Destination(request.param, request)
    yield made
    made.proxy.stop()


def test_transient_faults_are_survived_and_the_backup_restores_identically(
    destination: Destination,
    pg: Cluster,
    big_db: str,
    metadata_db: str,
    tmp_path: Path,
    ledger: Ledger,
) -> None:
    env = {**base_env(pg, big_db, metadata_db, tmp_path), **destination.env()}
    proxy = destination.proxy
    target = f"{big_db}_{destination.kind}"
    seed = zlib.crc32(destination.kind.encode())
    try:
        proxy.set(Plan("error500", rate=0.2, nth={3}, seed=seed))
        backup = loads(run(env, "backup", "--json").stdout)
        proxy.set(Plan("reset", rate=0.2, nth={2}, seed=seed + 1))
        run(env, "verify", backup["id"])
        proxy.set(Plan("cut", rate=0.3, nth={2}, method="GET", seed=seed + 2))
        run(env, "restore", backup["id"], "--target-db", target)
    finally:
        proxy.clear()
    injected = proxy.total_injected()
    assert set(proxy.injected) == {"error500", "reset", "cut"}, proxy.injected
    identical = table_digest(pg, target) == table_digest(pg, big_db)
    pg.drop_database(target)
    assert identical
    ledger.record(
        f"storage ({destination.kind}): transient faults", injected=injected, survived=injected
    )


def test_a_persistent_upload_failure_fails_cleanly(
    destination: Destination, pg: Cluster, big_db: str, metadata_db: str, tmp_path: Path
) -> None:
    env = {**base_env(pg, big_db, metadata_db, tmp_path), **destination.env()}
    env["S3_MAX_ATTEMPTS"] = "2"  # the sooner to give up: each destination backs off for long
    run(env, "init")
    # Every write fails: Azure writes with PUT, the GCS JSON API uploads with POST.
    proxy = destination.proxy
    proxy.set(Plan("error500", rate=1.0, method="PUT" if destination.kind == "azure" else "POST"))
    try:
        failed = run(env, "backup", check=False)
    finally:
        proxy.clear()
    assert failed.returncode == 6, failed.stderr
    assert failed.stderr.count("\n") == 1 and "permafrost: error:" in failed.stderr
    storage = destination.storage()
    assert not [o.key for o in storage.list("backups/") if o.key.endswith("manifest.json")]
    assert list(storage.list_multipart("backups/")) == []
