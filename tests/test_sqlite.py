"""SQLite files as sources: a consistent backup while the application writes, the named checks
each failing on its own damage, restores to a file (safety backup, lock refusal, WAL mode).

One bucket, one metadata store and the files of the module serve every test; each test takes the
backups it damages or restores, so their order does not matter.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import zstandard

from permafrost import layout
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.repo import crypto
from permafrost.repo.manifest import Manifest, TableCount
from permafrost.repo.pipeline import open_bytes
from permafrost.repo.reader import read_manifest
from tests.conftest import bucket_env, run, unique
from tests.helpers import flip_byte, loads
from tests.services import Cluster, S3Server

WRITER = r"""
import os, sqlite3, sys, time
path, mode, stop = sys.argv[1:4]
conn = sqlite3.connect(path, timeout=60, isolation_level=None)
conn.execute(f"PRAGMA journal_mode={mode}")
seq = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
print("writing", flush=True)
while not os.path.exists(stop):
    seq += 1
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO events (seq, payload) VALUES (?, randomblob(300))", (seq,))
    conn.execute("UPDATE counters SET value = ?, writes = writes + 1 WHERE name = 'events'", (seq,))
    conn.execute("COMMIT")
    time.sleep(0.002)  # an application between requests: a rollback-journal reader gets its turn
"""

HOLDER = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE counters SET writes = writes + 1")
print("holding", flush=True)
time.sleep(120)
"""


def make_file(path: Path, mode: str, rows: int = 3000) -> None:
    """An application's file: events with a sequence, a counter kept in the same transactions,
    a parent/child pair with a foreign key, an index, a schema version."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA journal_mode={mode}")
        conn.executescript(
            """
            CREATE TABLE events (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
            CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER, writes INTEGER);
            CREATE TABLE owners (id INTEGER PRIMARY KEY, label TEXT NOT NULL);
            CREATE TABLE pets (id INTEGER PRIMARY KEY, owner INTEGER REFERENCES owners (id),
                               name TEXT NOT NULL);
            CREATE INDEX pets_name ON pets (name);
            INSERT INTO counters VALUES ('events', 0, 0);
            PRAGMA user_version = 7;
            """
        )
        conn.executemany(
            "INSERT INTO events (seq, payload) VALUES (?, randomblob(300))",
            [(n,) for n in range(1, rows + 1)],
        )
        conn.execute("UPDATE counters SET value = ?", (rows,))
        conn.executemany("INSERT INTO owners VALUES (?, ?)", [(n, f"owner {n}") for n in range(50)])
        conn.executemany(
            "INSERT INTO pets VALUES (?, ?, ?)",
            [(n, n % 50, f"pet-name-{n:06d}") for n in range(400)],
        )
        conn.commit()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("apps")
    made = {"wal.db": folder / "wal.db", "journal.db": folder / "journal.db"}
    make_file(made["wal.db"], "wal")
    make_file(made["journal.db"], "delete")
    return made


@pytest.fixture(scope="module")
def senv(
    pg: Cluster, s3: S3Server, files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """DATABASE_URL names one SQLite file and SQLITE_DATABASES another: no PostgreSQL source."""
    bucket = f"pf-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    metadata = pg.create_database(unique("meta"))
    yield {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path_factory.mktemp("home")),
        "DATABASE_URL": f"sqlite://{files['wal.db']}",
        "SQLITE_DATABASES": f"sqlite://{files['journal.db']}",
        "METADATA_DATABASE_URL": pg.url(metadata),
        **bucket_env(s3, bucket),
        "UPLOAD_PART_SIZE_MB": "5",
    }
    pg.drop_database(metadata)


def counts(path: Path) -> dict[str, Any]:
    with contextlib.closing(
        sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
    ) as conn:
        seqs = [row[0] for row in conn.execute("SELECT seq FROM events ORDER BY seq")]
        value, writes = conn.execute("SELECT value, writes FROM counters").fetchone()
        return {
            "integrity": conn.execute("PRAGMA integrity_check").fetchone()[0],
            "seqs": seqs,
            "counter": value,
            "writes": writes,
            "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
        }


def backup(senv: dict[str, str], name: str, *extra: str) -> dict[str, Any]:
    made = loads(run(senv, "backup", "--database", name, "--json", *extra).stdout)
    return loads(run(senv, "show", made["id"], "--json").stdout)


# --- a consistent snapshot while the application writes --------------------------------------


@pytest.mark.parametrize("name", ["wal.db", "journal.db"])
def test_it_backs_up_a_file_being_written_to_a_consistent_prefix(
    senv: dict[str, str], files: dict[str, Path], tmp_path: Path, name: str
) -> None:
    path, stop = files[name], tmp_path / "stop"
    mode = "wal" if name == "wal.db" else "delete"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), mode, str(stop)], stdout=subprocess.PIPE
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"writing\n"
        time.sleep(0.3)
        before = counts(path)["counter"]
        shown = backup(senv, name, "--description", "during writes", "--tag", "writer")
        time.sleep(0.3)
    finally:
        stop.touch()
        assert writer.wait(30) == 0
    after = counts(path)["counter"]

    facts = shown["manifest"]["sqlite"]
    assert shown["kind"] == "sqlite" and shown["database"] == name
    assert facts["path"] == str(path) and facts["user_version"] == 7
    assert facts["journal_mode"] == mode and facts["sqlite_version"] == sqlite3.sqlite_version
    assert facts["page_size"] * facts["page_count"] == shown["dump_size_bytes"]
    assert shown["description"] == "during writes" and shown["tags"] == ["writer"]

    target = tmp_path / "restored.db"
    out = run(senv, "restore", shown["id"], "--target-path", str(target)).stdout
    assert f"restored backup {shown['id']} to {target}" in out
    got = counts(target)
    assert got["integrity"] == "ok"
    n = len(got["seqs"])
    assert got["seqs"] == list(range(1, n + 1)), "a prefix of the writer's transactions"
    assert got["counter"] == n, "the counter moved in the same transactions as the rows"
    assert before < n < after, "the writer committed before, during and after the copy"
    rows = {c["table"]: c["rows"] for c in shown["manifest"]["row_counts"]}
    assert rows == {"counters": 1, "events": n, "owners": 50, "pets": 400}
    assert got["journal_mode"] == mode, "a WAL-mode file comes back in WAL mode and opens"


# --- the named checks, each failing on its own damage ------------------------------------------


def _ctx(senv: dict[str, str]) -> Context:
    return Context(Settings.from_env(senv))


def _manifest(ctx: Context, shown: dict[str, Any]) -> Manifest:
    return read_manifest(ctx.storage, shown["manifest_key"], ctx.repository().keyring)


def _commit(ctx: Context, shown: dict[str, Any], manifest: Manifest) -> None:
    """A re-signed manifest (with the repository's own key) in the bucket and the catalog."""
    ctx.storage.put(shown["manifest_key"], manifest.to_json(ctx.repository().key))
    ctx.catalog().upsert_manifest(manifest, shown["manifest_key"])


def _store(ctx: Context, manifest: Manifest, stored: bytes, **changed: Any) -> Manifest:
    """stored as the data object, and the manifest that says so (its stored hashes true)."""
    ctx.storage.put(manifest.objects["data"], stored)
    return replace(manifest, stored_bytes=len(stored), stored_sha256=_sha(stored), **changed)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _seal(key: crypto.MasterKey, compressed: bytes) -> bytes:
    encryptor = crypto.Encryptor(key, compressed=True)
    return encryptor.update(compressed) + encryptor.finish()


def _plain(ctx: Context, manifest: Manifest) -> bytes:
    return open_bytes(ctx.repository().keyring, ctx.storage.get(manifest.objects["data"]))


def _reseal_file(ctx: Context, manifest: Manifest, plain: bytes, **changed: Any) -> Manifest:
    """A (damaged) file sealed with the project's own format and repository key."""
    compressed = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(plain)
    stored = _seal(ctx.repository().key, compressed)
    return _store(ctx, manifest, stored, dump_bytes=len(plain), dump_sha256=_sha(plain), **changed)


def _page_damaged(plain: bytes, page_size: int) -> bytes:
    """One pet's name changed inside its table page only: every page still reads, every count
    holds, but the index no longer matches the row (only integrity_check can tell)."""
    needle = b"pet-name-000123"
    at = plain.find(needle)
    while at != -1:
        page = at // page_size
        header = page * page_size + (100 if page == 0 else 0)
        if plain[header] == 0x0D:  # a table b-tree leaf page, not the index's (0x0A)
            return plain[:at] + b"PET" + plain[at + 3 :]
        at = plain.find(needle, at + 1)
    raise AssertionError("the pet's row was not found in a table page")


def _foreign_keys_broken(plain: bytes, tmp: Path) -> tuple[bytes, list[TableCount]]:
    path = tmp / "fk.db"
    path.write_bytes(plain)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = delete")
        conn.execute("INSERT INTO pets VALUES (9999, 4242, 'stray')")  # owner 4242: none
        conn.commit()
        rows = [
            TableCount("main", t, conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
            for t in ("counters", "events", "owners", "pets")
        ]
    return path.read_bytes(), rows


def damage(ctx: Context, shown: dict[str, Any], how: str, tmp: Path) -> None:
    m = _manifest(ctx, shown)
    data = ctx.storage.get(m.objects["data"])
    if how == "object present":
        ctx.storage.delete(m.objects["data"])
        return
    if how == "checksum":
        ctx.storage.put(m.objects["data"], flip_byte(data, len(data) // 2))
        return
    if how == "decryption":  # the same file sealed with a key this repository does not hold
        plain = _plain(ctx, m)
        stranger = crypto.MasterKey(secrets.token_bytes(32))
        m = _store(ctx, m, _seal(stranger, zstandard.ZstdCompressor().compress(plain)))
    elif how == "decompression":  # a zstd stream cut short, sealed whole with the right key
        compressed = zstandard.ZstdCompressor().compress(_plain(ctx, m))
        m = _store(ctx, m, _seal(ctx.repository().key, compressed[: len(compressed) // 2]))
    elif how == "integrity_check":
        m = _reseal_file(ctx, m, _page_damaged(_plain(ctx, m), m.sqlite["page_size"]))
    elif how == "foreign_key_check":
        plain, rows = _foreign_keys_broken(_plain(ctx, m), tmp)
        m = _reseal_file(ctx, m, plain, row_counts=rows)
    elif how == "row counts":  # the manifest counted one event more than the file holds
        rows = [replace(c, rows=c.rows + (c.table == "events")) for c in m.row_counts]
        m = replace(m, row_counts=rows)
    _commit(ctx, shown, m)


CHECKS = [
    "object present",
    "checksum",
    "decryption",
    "decompression",
    "integrity_check",
    "foreign_key_check",
    "row counts",
]


def report(stdout: str) -> dict[str, str]:
    """The check lines of `verify`: name → passed, FAILED or skipped."""
    found = {}
    for line in stdout.splitlines():
        for check in CHECKS:
            if line.startswith(f"  {check} "):
                found[check] = line[len(check) + 2 :].split()[0]
    return found


@pytest.fixture(scope="module")
def good(senv: dict[str, str]) -> dict[str, Any]:
    return backup(senv, "journal.db")


def test_a_sound_backup_passes_four_checks_or_all_seven(
    senv: dict[str, str], good: dict[str, Any]
) -> None:
    quick = run(senv, "verify", good["id"]).stdout
    assert report(quick) == dict.fromkeys(CHECKS[:4], "passed")
    full = run(senv, "verify", good["id"], "--test-restore").stdout
    assert report(full) == dict.fromkeys(CHECKS, "passed")
    shown = loads(run(senv, "show", good["id"], "--json").stdout)
    assert shown["verification"] == "verified"
    recorded = shown["verifications"][0]
    assert recorded["kind"] == "test_restore" and recorded["status"] == "verified"
    assert [c["check"] for c in recorded["details"]["checks"]] == CHECKS


@pytest.mark.parametrize("broken", CHECKS)
def test_each_check_fails_on_its_own_damage(
    senv: dict[str, str], tmp_path: Path, broken: str
) -> None:
    shown = backup(senv, "journal.db")
    ctx = _ctx(senv)
    try:
        damage(ctx, shown, broken, tmp_path)
    finally:
        ctx.close()
    result = run(senv, "verify", shown["id"], "--test-restore", check=False)
    code = 4 if broken == "decryption" else 5  # a key it lacks is exit 4, as everywhere
    assert result.returncode == code, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    found = report(result.stdout)
    position = CHECKS.index(broken)
    assert found[broken] == "FAILED", result.stdout
    assert all(found[c] == "passed" for c in CHECKS[:position]), result.stdout
    assert list(found) == CHECKS
    if position < 4:  # plain verify runs the first four, and fails the same one
        quick = run(senv, "verify", shown["id"], check=False)
        assert report(quick.stdout)[broken] == "FAILED" and quick.returncode == code
    after = loads(run(senv, "show", shown["id"], "--json").stdout)
    expected = "unverified" if broken == "decryption" else "failed"
    assert after["verifications"][0]["status"] == expected


# --- restores to a file --------------------------------------------------------------------


def test_it_restores_over_an_existing_file_after_a_safety_backup(
    senv: dict[str, str], good: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "app.db"
    make_file(target, "wal", rows=10)
    Path(f"{target}-wal").write_bytes(b"a leftover of the old file")  # replayed, it would harm
    dry = run(senv, "restore", good["id"], "--target-path", str(target), "--dry-run").stdout
    assert "take a safety backup" in dry and "remove app.db-wal" in dry
    assert "nothing was downloaded or changed" in dry and counts(target)["counter"] == 10

    out = run(senv, "restore", good["id"], "--target-path", str(target), "--yes").stdout
    [safety_id] = [
        line.split()[-1] for line in out.splitlines() if line.startswith("safety backup:")
    ]
    restored = counts(target)
    events = {c["table"]: c["rows"] for c in good["manifest"]["row_counts"]}["events"]
    assert restored["integrity"] == "ok" and restored["counter"] == events
    assert restored["journal_mode"] == "delete" and not Path(f"{target}-wal").exists()
    assert not list(tmp_path.glob(".app.db.permafrost-*")), "no temporary file left"

    safety = loads(run(senv, "show", safety_id, "--json").stdout)
    assert safety["purpose"] == "safety" and safety["kind"] == "sqlite"
    assert safety["manifest"]["sqlite"]["path"] == str(target)
    run(senv, "restore", safety_id, "--target-path", str(target), "--yes", "--no-safety-backup")
    assert counts(target)["counter"] == 10, "the safety backup brings the old file back"


def test_it_refuses_a_file_another_process_is_writing_unless_forced(
    senv: dict[str, str], good: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "busy.db"
    make_file(target, "wal", rows=5)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"holding\n"
        refused = run(
            senv, "restore", good["id"], "--target-path", str(target), "--yes", check=False
        )
        assert refused.returncode == 11, refused.stderr
        assert f"process {holder.pid} holds the WAL write lock" in refused.stderr
        assert "--force" in refused.stderr and "nothing was changed" in refused.stderr
        holder.kill()
        holder.wait()
        assert counts(target)["counter"] == 5
        run(senv, "restore", good["id"], "--target-path", str(target), "--yes", "--force")
        assert counts(target)["counter"] > 5
    finally:
        holder.kill()
        holder.wait()


def test_list_finds_backups_by_tag_and_shows_kind_and_tags(
    senv: dict[str, str], files: dict[str, Path]
) -> None:
    tagged = backup(senv, "wal.db", "--tag", "release-42", "--tag", "pre-deploy",
                    "--description", "before the 4.2 deploy")  # fmt: skip
    both = loads(run(senv, "list", "--tag", "release-42", "--tag", "pre-deploy", "--json").stdout)
    assert [r["id"] for r in both] == [tagged["id"]]
    assert loads(run(senv, "list", "--tag", "release-42", "--tag", "nope", "--json").stdout) == []
    text = run(senv, "list", "--tag", "release-42").stdout
    assert "sqlite" in text and "release-42, pre-deploy" in text and "before the 4.2" in text
    shown = run(senv, "show", tagged["id"]).stdout
    assert "user_version" in shown and str(files["wal.db"]) in shown


def test_a_sqlite_url_is_refused_unless_absolute_and_names_are_unique() -> None:
    from permafrost.errors import ConfigError

    with pytest.raises(ConfigError, match="absolute path"):
        Settings.from_env({"DATABASE_URL": "sqlite://relative/app.db"})
    with pytest.raises(ConfigError, match="used twice"):
        Settings.from_env(
            {"DATABASE_URL": "sqlite:///a/app.db", "SQLITE_DATABASES": "sqlite:///b/app.db"}
        )
    s = Settings.from_env(
        {"DATABASE_URL": "sqlite:///a/app.db", "SQLITE_DATABASES": "sqlite:///b/app.db?name=b"}
    )
    assert s.source.backed_up == ("app.db", "b") and not s.source.postgres
    assert layout.valid_name(s.source.sqlite[1].name)


def test_the_restore_worker_runs_a_queued_test_restore_of_a_sqlite_backup(
    senv: dict[str, str], good: dict[str, Any]
) -> None:
    queued = run(senv, "verify", good["id"], "--test-restore", "--queue").stdout
    assert f"test_restore of {good['id']}" in queued
    run(senv, "restore-worker", "--once")
    shown = loads(run(senv, "show", good["id"], "--json").stdout)
    newest = shown["verifications"][0]
    assert newest["kind"] == "test_restore" and newest["status"] == "verified"
    assert [c["status"] for c in newest["details"]["checks"]] == ["passed"] * len(CHECKS)


def test_doctor_reports_the_files_and_no_server_when_there_is_none(
    senv: dict[str, str], files: dict[str, Path], tmp_path: Path
) -> None:
    out = run(senv, "doctor").stdout
    assert "source: no PostgreSQL server" in out
    assert f"SQLite file journal.db ({files['journal.db']}): readable" in out
    missing = {**senv, "SQLITE_DATABASES": f"sqlite://{tmp_path}/gone.db"}
    refused = run(missing, "doctor", check=False)
    assert refused.returncode == 12 and "gone.db does not exist" in refused.stderr
