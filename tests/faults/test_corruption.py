"""Corruption beyond a flipped byte: two backups' data objects swapped, a manifest moved into
another backup's folder, a data object deleted, one cut in half. verify and restore detect each
with a specific error and never create or touch the target."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import run
from tests.faults.conftest import Ledger
from tests.helpers import loads
from tests.services import Cluster


def test_swapped_moved_deleted_and_cut_objects_are_refused(
    env: dict[str, str], pg: Cluster, source_db: str, tmp_path: Path, ledger: Ledger
) -> None:
    bucket = tmp_path / "bucket"
    cenv = {**env, "STORAGE_URL": f"file://{bucket}"}
    first = loads(run(cenv, "backup", "--json").stdout)["id"]
    pg.execute(
        "INSERT INTO customers (name) SELECT 'later ' || g FROM generate_series(1, 50) g", source_db
    )
    second = loads(run(cenv, "backup", "--json").stdout)["id"]
    folder = bucket / "standard" / source_db
    a, b = folder / first, folder / second
    pristine = {p: p.read_bytes() for p in (a / "data.pfe", b / "data.pfe", a / "manifest.json")}

    def restore_refused(backup_id: str, expect: str) -> None:
        target = f"{source_db}_never"
        verify = run(cenv, "verify", backup_id, check=False)
        assert verify.returncode in (3, 5), verify.stderr
        assert expect in verify.stderr, verify.stderr
        restore = run(cenv, "restore", backup_id, "--target-db", target, check=False)
        assert restore.returncode in (3, 5), restore.stderr
        names = [r[0] for r in pg.execute("SELECT datname FROM pg_database")]
        assert not [n for n in names if n.startswith(target)], names  # nothing created

    cases = 0
    # 1. The two data objects swapped.
    (a / "data.pfe").write_bytes(pristine[b / "data.pfe"])
    (b / "data.pfe").write_bytes(pristine[a / "data.pfe"])
    restore_refused(first, "truncated or replaced")
    restore_refused(second, "truncated or replaced")
    cases += 2
    for path, data in pristine.items():
        path.write_bytes(data)
    # 2. A manifest moved into another backup's folder.
    shutil.copyfile(a / "manifest.json", b / "manifest.json.bak")
    (b / "manifest.json").replace(tmp_path / "b-manifest")
    shutil.copyfile(a / "manifest.json", b / "manifest.json")
    restore_refused(second, "moved or swapped")
    cases += 1
    (tmp_path / "b-manifest").replace(b / "manifest.json")
    (b / "manifest.json.bak").unlink()
    # 3. A data object deleted.
    (a / "data.pfe").unlink()
    restore_refused(first, "missing")
    cases += 1
    # 4. A data object cut in half.
    (a / "data.pfe").write_bytes(pristine[a / "data.pfe"][: len(pristine[a / "data.pfe"]) // 2])
    restore_refused(first, "truncated or replaced")
    cases += 1
    (a / "data.pfe").write_bytes(pristine[a / "data.pfe"])
    # Put back, both verify again: nothing was changed by the refusals.
    assert "verified" in run(cenv, "verify", first).stdout
    assert "verified" in run(cenv, "verify", second).stdout
    ledger.record("corruption: swapped, moved, deleted, cut", injected=cases, survived=cases)
