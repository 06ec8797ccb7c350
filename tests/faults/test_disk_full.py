"""The temporary directory fills up during a restore: simulated with a file-size limit
(RLIMIT_FSIZE, with SIGXFSZ ignored, so a write past it fails with EFBIG as a full disk fails
with ENOSPC). The restore says so (exit 10), removes its partial dump, and creates nothing.
Only a restore with --jobs above 1 downloads to a temporary file (a streamed one is in
tests/test_restore_stream.py)."""

from __future__ import annotations

import resource
import signal
import subprocess
from pathlib import Path

from tests.conftest import PERMAFROST, make_sample_database, run
from tests.faults.conftest import Ledger, blob
from tests.helpers import loads
from tests.services import Cluster


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))


def test_the_temporary_directory_filling_up_fails_the_restore_cleanly(
    env: dict[str, str], pg: Cluster, tmp_path: Path, ledger: Ledger
) -> None:
    db = make_sample_database(pg, extra_sql=blob(60000))
    denv = {**env, "DATABASE_URL": env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + db}
    backup = loads(run(denv, "backup", "--json").stdout)
    assert backup["dump_size_bytes"] > 2 * 1024 * 1024  # bigger than the limit
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    target = f"{db}_never"
    result = subprocess.run(
        [PERMAFROST, "restore", backup["id"], "--target-db", target, "--jobs", "2"],
        env={**denv, "RESTORE_TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        timeout=300,
    )
    assert result.returncode == 10, result.stderr
    assert "filled up" in result.stderr and result.stderr.count("\n") == 1
    assert list(scratch.iterdir()) == []  # the partial dump is gone
    names = [r[0] for r in pg.execute("SELECT datname FROM pg_database")]
    assert not [n for n in names if n.startswith(target)]
    pg.drop_database(db)
    ledger.record("postgresql: temporary directory full during a restore", injected=1, survived=1)
