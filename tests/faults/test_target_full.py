"""The restore target runs out of space: a target server whose files may not grow past 4 MB
(RLIMIT_FSIZE on its processes, which PostgreSQL meets as a full disk: "could not extend
file"). The restore fails with one line, drops its staging database, and leaves no target."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import make_sample_database, run
from tests.faults.conftest import Ledger
from tests.helpers import loads
from tests.services import PASSWORD, SUPERUSER, Cluster, _as_owner

LIMIT = 4 * 1024 * 1024
BLOB = """
CREATE TABLE blob AS SELECT g, md5(g::text) || md5((g * 7)::text) AS m
FROM generate_series(1, 150000) g;
"""


class SmallDisk(Cluster):
    """A cluster with 1 MB WAL segments whose server cannot write a file past LIMIT."""

    def _initdb(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres")
        subprocess.run(
            [
                *_as_owner(),
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
                "--wal-segsize=1",
            ],
            check=True,
            capture_output=True,
        )
        with (self.data / "postgresql.conf").open("a") as handle:
            handle.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "min_wal_size = 4MB\nmax_wal_size = 8MB\nmax_connections = 20\n"
            )

    def start(self) -> SmallDisk:
        subprocess.run(
            [
                "prlimit",
                f"--fsize={LIMIT}",
                "--",
                *_as_owner(),
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        return self


@pytest.fixture
def small() -> Iterator[SmallDisk]:
    cluster = SmallDisk("small-disk").start()
    yield cluster
    cluster.destroy()


def test_a_target_out_of_space_fails_the_restore_and_leaves_nothing(
    env: dict[str, str], pg: Cluster, small: SmallDisk, ledger: Ledger
) -> None:
    db = make_sample_database(pg, extra_sql=BLOB)
    denv = {**env, "DATABASE_URL": env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + db}
    backup = loads(run(denv, "backup", "--json").stdout)
    result = run(
        denv,
        "restore",
        backup["id"],
        "--target-db",
        "full_disk",
        "--target-url",
        small.url("postgres"),
        check=False,
    )
    assert result.returncode == 7, result.stderr
    assert "could not extend file" in result.stderr and "out of disk space" in result.stderr
    assert result.stderr.count("\n") == 1 and "pg_restore" in result.stderr, result.stderr
    names = [r[0] for r in small.execute("SELECT datname FROM pg_database")]
    assert not [n for n in names if n.startswith("full_disk")], names  # staging dropped too
    assert small.execute("SELECT 1") == [(1,)]  # the target server is still up
    pg.drop_database(db)
    ledger.record("postgresql: restore target out of space", injected=1, survived=1)
