"""Fixtures: a real source cluster, a real S3 server, and a fresh bucket and catalog per test.

`pytest --quick` (`./setup.sh test --quick`) runs only the tests that need none of them: a test
is left out when it uses the `pg` or `s3` fixture (directly or through another fixture, such as
`env`) or is marked slow; one that starts a cluster or an S3 server of its own is skipped when
it tries. Those left out carry the `services` marker, so `-m "not services"` says the same.
The container test (`containers` marker) runs only under `-m containers`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from permafrost.repo import crypto
from tests import destinations, majors, services
from tests.services import Cluster, S3Server

PERMAFROST = str(Path(sys.executable).parent / "permafrost")
KEY = crypto.generate_key()


SERVICE_FIXTURES = frozenset({"pg", "s3"})  # PostgreSQL and the S3 server; the browser tests use pg
# The other destinations' servers (tests/destinations.py) are services too.
SERVICE_FIXTURES |= {"azurite", "gcs_emulator", "sshd"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--quick",
        action="store_true",
        help="only the tests that need no PostgreSQL, S3 server or browser, and are not slow",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("quick"):
        services.refuse_to_start("--quick runs only the tests that need no services")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The container test (tests/containers/) runs only when asked for: `-m containers`, as
    # `./setup.sh test containers` does; it needs a Docker engine and builds images.
    if "containers" not in (config.getoption("markexpr") or ""):
        in_containers = [item for item in items if item.get_closest_marker("containers")]
        config.hook.pytest_deselected(items=in_containers)
        items[:] = [item for item in items if not item.get_closest_marker("containers")]
    for item in items:
        if _needs_services(item):
            item.add_marker(pytest.mark.services)
    if config.getoption("quick"):
        left_out = [item for item in items if _needs_services(item)]
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not _needs_services(item)]


def _needs_services(item: pytest.Item) -> bool:
    uses = set(getattr(item, "fixturenames", ()))
    return bool(uses & SERVICE_FIXTURES) or item.get_closest_marker("slow") is not None


@pytest.fixture(scope="session")
def pg() -> Iterator[Cluster]:
    cluster = Cluster("source").start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def servers(pg: Cluster) -> Iterator[majors.Servers]:
    """`servers(13)`: a running PostgreSQL 13 (13 to 18), started once per session when first
    asked for (tests/majors.py says where each major comes from). Needs `pg`: the metadata
    store of the tests that use these servers lives there."""
    started = majors.Servers()
    yield started
    started.destroy()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if majors.timings:
        terminalreporter.write_sep("-", "PostgreSQL majors: seconds per backup and restore")
        for line in majors.summary():
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.stop()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


SAMPLE = """
CREATE TABLE customers (
    id bigserial PRIMARY KEY, name text NOT NULL, email text UNIQUE,
    profile jsonb, balance numeric(12, 2), created_at timestamptz DEFAULT now());
INSERT INTO customers (name, email, profile, balance, created_at)
SELECT 'customer ' || g, 'c' || g || '@example.com',
       jsonb_build_object('tier', g % 5, 'tags', jsonb_build_array('a', 'b')),
       (g * 3.17)::numeric(12, 2), '2026-01-01'::timestamptz + g * interval '1 minute'
FROM generate_series(1, 2000) g;
CREATE INDEX customers_created ON customers (created_at);
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id int PRIMARY KEY, customer_id bigint REFERENCES customers,
    total numeric, note text);
INSERT INTO billing.invoices SELECT g, 1 + g % 2000, g * 1.5, 'secret-note-' || g
FROM generate_series(1, 500) g;
CREATE TABLE "Mixed Case" (v int);
INSERT INTO "Mixed Case" VALUES (1), (2), (3);
CREATE TABLE empty_table (id int);
"""


def make_sample_database(cluster: Cluster, name: str | None = None, extra_sql: str = "") -> str:
    database = cluster.create_database(name or unique("src"))
    cluster.execute(SAMPLE + extra_sql, database)
    return database


@pytest.fixture
def source_db(pg: Cluster) -> Iterator[str]:
    database = make_sample_database(pg)
    yield database
    pg.drop_database(database)


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"pf-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def metadata_db(pg: Cluster) -> Iterator[str]:
    name = pg.create_database(unique("meta"))
    yield name
    pg.drop_database(name)


def bucket_env(s3: S3Server, bucket: str) -> dict[str, str]:
    """The bucket settings an operator would set for the test S3 server, and the key."""
    return {
        "STORAGE_URL": f"s3://{bucket}/backups",
        "S3_ENDPOINT_URL": s3.url,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "S3_PROVIDER": "generic",
        "BACKUP_ENCRYPTION_KEY": KEY,
    }


@pytest.fixture
def env(
    pg: Cluster, s3: S3Server, bucket: str, source_db: str, metadata_db: str, tmp_path: Path
) -> dict[str, str]:
    """The environment an operator would set: source, bucket, metadata store, key."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DATABASE_URL": pg.url(source_db),
        "METADATA_DATABASE_URL": pg.url(metadata_db),
        **bucket_env(s3, bucket),
        "UPLOAD_PART_SIZE_MB": "5",
    }


def run(
    env: dict[str, str], *args: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the `permafrost` command as an operator would."""
    result = subprocess.run(
        [PERMAFROST, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        input=input.decode() if input else None,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"permafrost {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def azurite() -> Iterator[destinations.Azurite]:
    server = destinations.Azurite()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[destinations.GcsEmulator]:
    server = destinations.GcsEmulator()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sshd() -> Iterator[destinations.SshServer]:
    server = destinations.SshServer()
    yield server
    server.stop()


@pytest.fixture
def refused() -> Iterator[int]:
    """A loopback port where nothing listens, held for the test (see services.refused_port)."""
    with services.refused_port() as port:
        yield port
