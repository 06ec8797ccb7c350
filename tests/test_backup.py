"""`permafrost backup`, end to end: a real cluster, a real S3 server, the real command."""

from __future__ import annotations

import os
import pty
import subprocess
import time

from permafrost.repo import crypto
from tests.conftest import PERMAFROST, make_sample_database, run
from tests.helpers import get_object, loads, objects, pending_uploads, table_digest
from tests.services import Cluster, S3Server


def test_it_backs_up_and_plain_pg_restore_brings_back_every_row(
    env: dict[str, str], pg: Cluster, s3: S3Server, bucket: str, source_db: str, tmp_path
) -> None:
    record = loads(
        run(env, "backup", "--json", "--description", "before upgrade", "--tag", "manual").stdout
    )
    assert record["database"] == source_db
    assert (record["tier"], record["status"], record["kind"]) == (
        "standard",
        "completed",
        "logical",
    )
    assert record["size_bytes"] > 0 and record["tags"] == ["manual"]

    listed = loads(run(env, "list", "--json").stdout)
    assert [r["id"] for r in listed] == [record["id"]]
    shown = loads(run(env, "show", record["id"], "--json").stdout)
    assert shown["description"] == "before upgrade"
    counts = {(c["schema"], c["table"]): c["rows"] for c in shown["manifest"]["row_counts"]}
    assert counts[("public", "customers")] == 2000
    assert counts[("billing", "invoices")] == 500
    assert counts[("public", "Mixed Case")] == 3
    assert "verified" in run(env, "verify", record["id"]).stdout

    data_key = shown["manifest"]["objects"]["data"]
    (tmp_path / "data.pfe").write_bytes(get_object(s3, bucket, data_key))
    run(env, "decrypt", str(tmp_path / "data.pfe"), "-o", str(tmp_path / "dump"))
    target = pg.create_database(f"{source_db}_restored")
    bin_dir = pg.bin
    subprocess.run(
        [str(bin_dir / "pg_restore"), "--no-owner", "-d", pg.url(target), str(tmp_path / "dump")],
        check=True,
        capture_output=True,
    )
    assert table_digest(pg, target) == table_digest(pg, source_db)
    pg.drop_database(target)


def test_the_stored_object_shows_none_of_the_plaintext(
    env: dict[str, str], s3: S3Server, bucket: str
) -> None:
    record = loads(run(env, "backup", "--json").stdout)
    stored = b"".join(get_object(s3, bucket, k) for k in objects(s3, bucket) if k.endswith(".pfe"))
    data = get_object(s3, bucket, record["manifest_key"].replace("manifest.json", "data.pfe"))
    assert record["size_bytes"] == len(data) and data in stored  # and the globals beside it
    for plaintext in (b"secret-note-", b"example.com", b"customer ", b"PGDMP", b"CREATE TABLE"):
        assert plaintext not in stored


def test_decrypt_reads_a_backup_straight_from_the_bucket(
    env: dict[str, str], pg: Cluster, source_db: str
) -> None:
    run(env, "backup")
    dump = subprocess.run(
        [PERMAFROST, "decrypt", "--backup", "latest"], env=env, capture_output=True, check=True
    ).stdout
    assert dump.startswith(b"PGDMP")
    target = pg.create_database(f"{source_db}_piped")
    subprocess.run(
        [str(pg.bin / "pg_restore"), "--no-owner", "-d", pg.url(target)],
        input=dump,
        check=True,
        capture_output=True,
    )
    assert table_digest(pg, target) == table_digest(pg, source_db)
    pg.drop_database(target)


def test_it_backs_up_every_configured_database(
    env: dict[str, str], pg: Cluster, source_db: str
) -> None:
    second = make_sample_database(pg)
    env = {**env, "DATABASE_URL": pg.url(""), "DB_NAME": f"{source_db},{second}"}
    records = loads(run(env, "backup", "--json", "--tier", "compliance").stdout)
    assert sorted(r["database"] for r in records) == sorted([source_db, second])
    assert {r["tier"] for r in records} == {"compliance"}
    assert len(loads(run(env, "list", "--tier", "compliance", "--json").stdout)) == 2
    assert len(loads(run(env, "list", "--database", second, "--json").stdout)) == 1
    assert len(loads(run(env, "list", "--limit", "1", "--json").stdout)) == 1
    result = run(env, "verify", "latest", check=False)
    assert result.returncode == 2 and "ambiguous" in result.stderr
    run(env, "verify", "latest", "--database", second)
    pg.drop_database(second)


def test_a_failed_dump_leaves_no_backup_and_is_recorded(
    env: dict[str, str], pg: Cluster, s3: S3Server, bucket: str, source_db: str
) -> None:
    # Two large tables: the dump is killed while copying the second, after parts have uploaded.
    pg.execute(
        "CREATE TABLE a_big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v "
        "FROM generate_series(1, 400000) g; CREATE TABLE z_big AS TABLE a_big;",
        source_db,
    )
    proc = subprocess.Popen(
        [PERMAFROST, "backup"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _terminate_dump_during(pg, "z_big", proc)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 7, stderr
    assert stderr.count("\n") == 1 and "pg_dump" in stderr and "Traceback" not in stderr
    assert [k for k in objects(s3, bucket) if not k.endswith("permafrost.json")] == []
    assert pending_uploads(s3, bucket) == []
    failed = loads(run(env, "list", "--status", "failed", "--json").stdout)
    assert len(failed) == 1 and "pg_dump" in failed[0]["error"]
    assert loads(run(env, "list", "--status", "completed", "--json").stdout) == []


def _terminate_dump_during(pg: Cluster, table: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        rows = pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = 'pg_dump' AND query LIKE '%{table}%'"
        )
        if rows:
            return
        time.sleep(0.02)
    raise AssertionError("the dump finished before it could be interrupted")


def test_an_unreachable_source_fails_in_one_line(
    env: dict[str, str], s3: S3Server, bucket: str, refused: int
) -> None:
    env = {**env, "DATABASE_URL": f"postgresql://u:p@127.0.0.1:{refused}/nothing"}
    result = run(env, "backup", check=False)
    assert result.returncode == 7
    assert result.stderr.startswith("permafrost: error: cannot connect to database nothing")
    assert result.stderr.count("\n") == 1 and "p@" not in result.stderr
    failed = loads(run(env, "list", "--status", "failed", "--json").stdout)
    assert "cannot connect" in failed[0]["error"]


def test_an_unreachable_bucket_fails_in_one_line(env: dict[str, str], refused: int) -> None:
    env = {**env, "S3_ENDPOINT_URL": f"http://127.0.0.1:{refused}", "S3_MAX_ATTEMPTS": "2"}
    result = run(env, "backup", check=False)
    assert result.returncode == 6
    assert "cannot reach the bucket" in result.stderr and result.stderr.count("\n") == 1


def test_a_wrong_key_is_refused_before_any_work(
    env: dict[str, str], s3: S3Server, bucket: str
) -> None:
    run(env, "init")
    before = objects(s3, bucket)
    wrong = {**env, "BACKUP_ENCRYPTION_KEY": crypto.generate_key()}
    started = time.monotonic()
    result = run(wrong, "backup", check=False)
    elapsed = time.monotonic() - started
    assert result.returncode == 4, result.stderr
    assert "is not a key of the repository" in result.stderr
    assert result.stderr.count("\n") == 1
    assert objects(s3, bucket) == before
    assert loads(run(env, "list", "--json").stdout) == []  # not even a failed run
    print(f"wrong key refused in {elapsed:.2f} s")


def test_a_passphrase_works_as_the_key(env: dict[str, str], tmp_path) -> None:
    env = {**env, "BACKUP_ENCRYPTION_KEY": "correct horse battery staple"}
    run(env, "backup")
    run(env, "verify", "latest")
    run(env, "decrypt", "--backup", "latest", "-o", str(tmp_path / "dump"))
    assert (tmp_path / "dump").read_bytes().startswith(b"PGDMP")
    short = run({**env, "BACKUP_ENCRYPTION_KEY": "short"}, "backup", check=False)
    assert short.returncode == 4 and "BACKUP_ENCRYPTION_KEY" in short.stderr


def test_keys_rotate_and_old_backups_still_open(env: dict[str, str]) -> None:
    old = loads(run(env, "backup", "--json").stdout)
    rotated = {
        **env,
        "BACKUP_ENCRYPTION_KEY": crypto.generate_key(),
        "BACKUP_ENCRYPTION_OLD_KEYS": env["BACKUP_ENCRYPTION_KEY"],
    }
    new = loads(run(rotated, "backup", "--json").stdout)
    run(rotated, "verify", old["id"])
    run(rotated, "verify", new["id"])
    new_only = {**rotated, "BACKUP_ENCRYPTION_OLD_KEYS": ""}
    run(new_only, "verify", new["id"])
    result = run(new_only, "verify", old["id"], check=False)
    assert result.returncode == 4 and "BACKUP_ENCRYPTION_OLD_KEYS" in result.stderr


def test_it_backs_up_to_a_local_directory(env: dict[str, str], tmp_path) -> None:
    env = {**env, "STORAGE_URL": f"file://{tmp_path}/bucket"}
    record = loads(run(env, "backup", "--json").stdout)
    assert (tmp_path / "bucket" / record["manifest_key"]).is_file()
    run(env, "verify", "latest")
    assert not list((tmp_path / "bucket").rglob(".tmp-*"))


def test_init_is_idempotent(env: dict[str, str]) -> None:
    assert "repository initialised" in run(env, "init").stdout
    assert "already initialised" in run(env, "init").stdout


def test_it_shows_progress_on_a_terminal(env: dict[str, str]) -> None:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [PERMAFROST, "backup"], env=env, stdout=subprocess.PIPE, stderr=secondary
    )
    os.close(secondary)
    output = b""
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:
            break
        if not data:
            break
        output += data
    proc.wait(timeout=60)
    os.close(primary)
    assert proc.returncode == 0
    assert b"backup " in output and b"/s, 00:0" in output


def test_settings_can_come_from_an_env_file(env: dict[str, str], tmp_path) -> None:
    path = tmp_path / "permafrost.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items() if k not in ("PATH", "HOME")))
    bare = {"PATH": env["PATH"], "HOME": env["HOME"]}
    record = loads(run(bare, "--env-file", str(path), "backup", "--json").stdout)
    listed = loads(run({**bare, "PERMAFROST_ENV_FILE": str(path)}, "list", "--json").stdout)
    assert [r["id"] for r in listed] == [record["id"]]
    missing = run(bare, "--env-file", str(tmp_path / "nope.env"), "list", check=False)
    assert missing.returncode == 2 and "nope.env" in missing.stderr
