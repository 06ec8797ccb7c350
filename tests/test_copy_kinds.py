"""Restoring from a copy of each other kind (Azure Blob on Azurite, Google Cloud Storage on
gcp-storage-emulator, SFTP on sshd): a primary on S3 that archives WAL, a logical and a base
backup copied with their WAL. An object that fails its check on the primary comes from the copy;
with the primary's server stopped, `restore` and `pitr` (and the `wal-fetch` that PostgreSQL runs
for it, reading the copy with the copy's own settings) succeed from the copy and say so."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import run
from tests.helpers import flip_byte, get_object, loads, put_object
from tests.services import Cluster, S3Server
from tests.test_copies_destinations import as_copy
from tests.test_destinations import azure_env, gcs_env, sftp_env
from tests.test_pitr import Archiving

ROWS = ["A1", "A2", "A3", "B1", "B2"]  # A* in both backups, B* only in the WAL after them


class Site:
    def __init__(
        self, kind: str, primary: S3Server, archiving: Archiving, env: dict[str, str], shown: dict
    ) -> None:
        self.kind, self.primary, self.archiving, self.env = kind, primary, archiving, env
        self.logical = shown["id"]
        self.data_key = shown["manifest"]["objects"]["data"]  # on the primary

    def rows(self, database: str) -> list[str]:
        found = self.archiving.cluster.execute("SELECT v FROM t ORDER BY id", database)
        return [row[0] for row in found]


def destination(kind: str, request: pytest.FixtureRequest) -> dict[str, str]:
    if kind == "azure":
        return azure_env(request.getfixturevalue("azurite"))
    if kind == "gs":
        return gcs_env(request.getfixturevalue("gcs_emulator"))
    return sftp_env(request.getfixturevalue("sshd"))


@pytest.fixture(scope="module", params=["azure", "gs", "sftp"])
def site(
    request: pytest.FixtureRequest, pg: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    primary = S3Server()  # its own server, so that the test can stop it
    metadata = pg.create_database(f"meta_copykinds_{uuid.uuid4().hex[:8]}")
    archiving = Archiving(primary, pg.url(metadata))
    entry, variables = as_copy(1, "dr", destination(request.param, request))
    env = archiving.env(
        tmp_path_factory.mktemp("copykinds"),
        S3_MAX_ATTEMPTS="2",
        COPY_STORAGE_URLS=entry,
        **variables,
    )
    src = archiving.cluster
    db = src.create_database("shop")
    env["DATABASE_URL"] = src.url(db)
    src.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)", db)
    src.execute("INSERT INTO t (v) VALUES ('A1'), ('A2'), ('A3')", db)
    logical = loads(run(env, "backup", "--json").stdout)
    loads(run(env, "backup", "--kind", "base", "--json").stdout)
    src.execute("INSERT INTO t (v) VALUES ('B1'), ('B2')", db)
    archiving.switch_and_wait()
    copied = run(env, "copy", "--all-missing").stdout
    assert "dr: 2 backups copied and verified" in copied, copied
    shown = loads(run(env, "show", logical["id"], "--json").stdout)
    yield Site(request.param, primary, archiving, env, shown)
    src.destroy()
    if primary.proc.poll() is None:
        primary.stop()
    pg.drop_database(metadata)


def pitr(site: Site, *extra: str) -> str:
    into = f"pitr_{site.kind}_{uuid.uuid4().hex[:6]}"
    cluster = site.archiving.cluster
    out = run(
        site.env,
        "pitr",
        "--latest",
        "--target-db",
        into,
        "--target-url",
        cluster.url("postgres"),
        *extra,
    )
    assert "point-in-time recovery complete" in out.stdout, out.stdout + out.stderr
    try:
        assert site.rows(into) == ROWS, site.kind
    finally:
        cluster.drop_database(into)
    return out.stderr


def restore(site: Site, backup: str) -> str:
    into = f"restored_{site.kind}_{uuid.uuid4().hex[:6]}"
    out = run(site.env, "restore", backup, "--target-db", into)
    try:
        assert site.rows(into) == ROWS[:3], site.kind
    finally:
        site.archiving.cluster.drop_database(into)
    return out.stderr


def fell_back(said: str) -> str:
    """The one line that says the primary failed and which copy was read instead."""
    lines = [x for x in said.splitlines() if "reading from copy dr" in x and "instead" in x]
    assert lines, said
    assert "the primary repository" in lines[0]
    return lines[0]


def test_each_kind_of_copy_answers_for_the_primary(site: Site) -> None:
    bucket = site.archiving.bucket
    # (b) The logical backup's data object damaged on the primary: restored from the copy.
    data = get_object(site.primary, bucket, site.data_key)
    put_object(site.primary, bucket, site.data_key, flip_byte(data, len(data) - 20))
    line = fell_back(restore(site, site.logical))
    assert "failed:" in line, line

    # pitr --from the copy, the primary still up: wal-fetch reads the copy with its settings.
    said = pitr(site, "--from", "dr")
    assert "reading from copy dr" in said

    # (a) The primary's server stopped: restore and pitr from the copy, each saying so.
    site.primary.stop()
    fell_back(restore(site, site.logical))
    fell_back(pitr(site))
