"""Secrets: run backup, restore and the monitor with known secret values, then look for them
everywhere an operator or an attacker could read: command output, job runs, error messages,
the audit log, /status, /metrics, /alerts and every dashboard page."""

from __future__ import annotations

import base64

import psycopg

from monitor.app import create_app
from permafrost.config.settings import Settings
from tests.conftest import KEY, run
from tests.faults.conftest import Ledger
from tests.helpers import loads
from tests.services import PASSWORD, Cluster

TOKEN = "Sekrit-api-token-7f3a9c1e5b"
DASH = "Sekrit-dashboard-pw-8d2b"
SMTP = "Sekrit-smtp-pw-4e6f"
HOOK = "https://hooks.example.com/services/Sekrit-hook-token-1c9d"


def test_no_secret_appears_anywhere(
    env: dict[str, str], pg: Cluster, metadata_db: str, ledger: Ledger
) -> None:
    env = {
        **env,
        "MONITOR_API_TOKEN": TOKEN,
        "DASHBOARD_USER": "ops",
        "DASHBOARD_PASSWORD": DASH,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": "1",  # refuses: the error is recorded, without the password
        "SMTP_USER": "mailer",
        "SMTP_PASSWORD": SMTP,
        "SMTP_TLS": "none",
        "ALERT_EMAIL": "oncall@example.com",
        "ALERT_WEBHOOK_URL": HOOK,
    }
    secrets = [KEY, PASSWORD, TOKEN, DASH, SMTP, HOOK, "Sekrit"]
    texts: list[str] = []
    backup = run(env, "backup", "--json")
    texts += [backup.stdout, backup.stderr]
    backup_id = loads(backup.stdout)["id"]
    restored = run(env, "restore", backup_id, "--target-db", f"{metadata_db}_copy")
    texts += [restored.stdout, restored.stderr]
    pg.drop_database(f"{metadata_db}_copy")
    failing = run(  # a failure's message must not carry the password either
        {**env, "DATABASE_URL": env["DATABASE_URL"].rsplit("/", 1)[0] + "/no_such_db"},
        "backup",
        check=False,
    )
    texts += [failing.stdout, failing.stderr]
    assert failing.returncode != 0
    settings = Settings.from_env({**env, "ALERT_CHECK_INTERVAL": "0"})
    from monitor.alerts.evaluator import Evaluator

    Evaluator(settings).run_once()  # opens backup_failed; the email and webhook fail
    app = create_app(settings, evaluate=False)
    client = app.test_client()
    login = {"Authorization": "Basic " + base64.b64encode(f"ops:{DASH}".encode()).decode()}
    for path in ("/status", "/metrics", "/alerts", "/backups", f"/backup/{backup_id}", "/health"):
        texts.append(client.get(path).get_data(as_text=True))
    for path in ("/", "/backups", f"/backup/{backup_id}", "/alerts", "/ui/jobs", "/openapi.json"):
        texts.append(
            client.get(path, headers={**login, "Accept": "text/html"}).get_data(as_text=True)
        )
    with psycopg.connect(pg.url(metadata_db)) as conn:
        for table in (
            "job_runs",
            "backups",
            "audit_log",
            "alerts",
            "alert_notifications",
            "tasks",
            "verifications",
        ):
            rows = conn.execute(f"SELECT row_to_json(t)::text FROM permafrost.{table} t").fetchall()
            texts += [r[0] for r in rows]
        notify_errors = conn.execute(
            "SELECT notify_error FROM permafrost.alerts WHERE notify_error IS NOT NULL"
        ).fetchall()
    assert notify_errors, "the failed email should have been recorded"
    found = [(s, t[:200]) for t in texts for s in secrets if s in t]
    assert found == []
    ledger.record("secrets: places checked", injected=len(texts), survived=len(texts))
