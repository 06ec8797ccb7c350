"""A configuration error is not an integrity result: `verify` (and the restore worker's tasks,
which the scheduler's verify job queues) with a wrong key or another STORAGE_URL records "could
not verify", leaves the backup as it was, and alerts as a configuration problem naming the
setting, never verification_failed."""

from __future__ import annotations

from typing import Any

import psycopg

from monitor.alerts.evaluator import Evaluator
from permafrost.repo import crypto
from tests.conftest import run
from tests.helpers import loads
from tests.services import Cluster
from tests.test_alerts import SMTPServer, make_settings, smtp  # noqa: F401 (the fixture)


def backup(env: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = loads(run(env, "backup", "--json").stdout)
    return record


def state(env: dict[str, str], backup_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = loads(run(env, "show", backup_id, "--json").stdout)
    return shown


def test_it_records_a_wrong_key_as_could_not_verify_and_alerts_the_setting(
    env: dict[str, str],
    smtp: SMTPServer,  # noqa: F811
) -> None:
    record = backup(env)
    wrong = {**env, "BACKUP_ENCRYPTION_KEY": crypto.generate_key()}
    result = run(wrong, "verify", record["id"], check=False)
    assert result.returncode == 4
    [line] = result.stderr.strip().splitlines()
    assert "BACKUP_ENCRYPTION_KEY" in line

    shown = state(env, record["id"])
    assert shown["status"] == "completed" and shown["verification"] is None
    [check] = shown["verifications"]
    assert check["status"] == "unverified" and check["setting"] == "BACKUP_ENCRYPTION_KEY"
    assert check["error"].startswith("could not verify: ")
    listed = run(env, "list").stdout
    assert "failed" not in listed

    settings = make_settings(env, smtp.port)
    evaluator = Evaluator(settings)
    evaluator.run_once()
    subjects = smtp.mailbox.subjects()
    assert not [s for s in subjects if "verif" in s and "CRITICAL" in s]
    assert not smtp.mailbox.about(f"verification_failed:{settings.source.databases[0]}")
    [mail] = smtp.mailbox.about("verify_config:BACKUP_ENCRYPTION_KEY")
    assert str(mail["Subject"]).startswith(
        "[permafrost] WARNING: backups cannot be verified: check BACKUP_ENCRYPTION_KEY"
    )

    # With the right key again the next verification runs, and the alert resolves.
    run(env, "verify", record["id"])
    assert state(env, record["id"])["verification"] == "verified"
    outcome = evaluator.run_once()
    assert outcome is not None
    assert outcome.applied.resolved == ["verify_config:BACKUP_ENCRYPTION_KEY"]
    evaluator.stop()


def test_another_storage_url_is_could_not_verify_too(env: dict[str, str]) -> None:
    record = backup(env)
    elsewhere = {**env, "STORAGE_URL": env["STORAGE_URL"] + "-typo"}
    result = run(elsewhere, "verify", record["id"], check=False)
    assert result.returncode == 3, result.stderr
    assert "STORAGE_URL" in result.stderr, result.stderr
    shown = state(env, record["id"])
    assert shown["status"] == "completed" and shown["verification"] is None
    # Looked up in the repository STORAGE_URL opens, the backup is not there: nothing is
    # recorded against it, and the line says which setting to check.
    assert shown["verifications"] == []
    every = run(elsewhere, "verify", "--all-unverified", check=False)
    assert every.returncode == 3, "a setting, not a corrupt backup (exit 5)"
    assert "FAILED" not in every.stdout and "STORAGE_URL" in every.stderr
    assert state(env, record["id"])["verification"] is None


def test_the_restore_workers_verification_with_a_wrong_key_leaves_the_backup_as_it_was(
    env: dict[str, str], pg: Cluster, metadata_db: str
) -> None:
    record = backup(env)
    run(env, "verify", record["id"], "--queue")
    wrong = {**env, "BACKUP_ENCRYPTION_KEY": crypto.generate_key()}
    run(wrong, "restore-worker", "--once", check=False)
    with psycopg.connect(pg.url(metadata_db)) as conn:
        [(status, error)] = conn.execute(
            "SELECT status, error FROM permafrost.tasks WHERE kind = 'verify'"
        ).fetchall()
    assert status == "failed" and "BACKUP_ENCRYPTION_KEY" in error
    shown = state(env, record["id"])
    assert shown["status"] == "completed" and shown["verification"] is None
    assert [v["status"] for v in shown["verifications"]] == ["unverified"]
