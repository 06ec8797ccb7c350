"""The restore target runs out of space: a target server whose files may not grow past 4 MB
(RLIMIT_FSIZE on its processes, which PostgreSQL meets as a full disk: "could not extend
file"). The restore fails with one line, drops its staging database, and leaves no target."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import make_sample_database, run
from tests.faults.conftest import Ledger, blob
from tests.helpers import loads
from tests.services import Cluster

LIMIT = 4 * 1024 * 1024


@pytest.fixture
def small() -> Iterator[Cluster]:
    # 1 MB WAL segments, and a server that cannot write any file past LIMIT.
    cluster = Cluster(
        "small-disk",
        {"min_wal_size": "4MB", "max_wal_size": "8MB"},
        initdb_args=("--wal-segsize=1",),
        start_prefix=("prlimit", f"--fsize={LIMIT}", "--"),
    ).start()
    yield cluster
    cluster.destroy()


def test_a_target_out_of_space_fails_the_restore_and_leaves_nothing(
    env: dict[str, str], pg: Cluster, small: Cluster, ledger: Ledger
) -> None:
    db = make_sample_database(pg, extra_sql=blob(150000))
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
