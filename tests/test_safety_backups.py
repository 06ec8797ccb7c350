"""Safety backups (taken by `restore --drop-existing`) are a purpose of their own: marked in
`list`, no card on the dashboard, no staleness alert, their own retention. A backup of a
database that is not configured is refused, by the API (400 and the configured names) and by
`permafrost backup --database` (exit 2, the same line)."""

from __future__ import annotations

import base64
import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitor.alerts.rules import evaluate
from monitor.app import create_app
from permafrost.config.settings import RetentionSettings, Settings
from permafrost.context import Context
from permafrost.retention.plan import Action, Item, plan
from tests.conftest import run
from tests.helpers import loads
from tests.services import Cluster

TOKEN = "t0ken-for-tests-only-0123456789"


@pytest.fixture
def denv(env: dict[str, str], source_db: str) -> dict[str, str]:
    return {**env, "DB_NAME": source_db, "MONITOR_API_TOKEN": TOKEN}


def safety_backup(
    denv: dict[str, str], source_db: str, *, own_backup: bool = False
) -> tuple[str, dict[str, Any]]:
    """A restore over an existing database, which takes a safety backup of it first."""
    target = f"{source_db}_restored"
    run(denv, "backup")
    run(denv, "restore", "latest", "--target-db", target)
    own: dict[str, Any] = {"id": None}
    if own_backup:
        server = denv["DATABASE_URL"].rsplit("/", 1)[0] + "/"  # DB_NAME then names both
        both = {**denv, "DATABASE_URL": server, "DB_NAME": f"{source_db},{target}"}
        own = loads(run(both, "backup", "--database", target, "--json").stdout)
    run(denv, "restore", "latest", "--database", source_db, "--target-db", target,
        "--drop-existing", "--yes")  # fmt: skip
    [safety] = [
        r
        for r in loads(run(denv, "list", "--json").stdout)
        if r["database"] == target and r["id"] != own["id"]
    ]
    return target, safety


def test_it_marks_safety_backups_and_gives_them_no_card_and_no_staleness_alert(
    denv: dict[str, str], pg: Cluster, source_db: str
) -> None:
    try:
        target, safety = safety_backup(denv, source_db)
        assert safety["purpose"] == "safety"
        listed = run(denv, "list").stdout
        [line] = [row for row in listed.splitlines() if row.startswith(safety["id"])]
        assert f"safety backup of {target}" in line
        assert f"safety backup of {target}" in run(denv, "show", safety["id"]).stdout

        settings = Settings.from_env(denv)
        client = create_app(settings, evaluate=False).test_client()
        page = client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
        assert f'data-database="{source_db}"' in page
        assert f'data-database="{target}"' not in page

        # Days later, with no backup since: the database's own backup is stale, the safety
        # backup's database is not a database of ours.
        later = datetime.now(UTC) + timedelta(days=3)
        stale = {f.key for f in evaluate(Context(settings), later) if f.key.startswith("backup_")}
        assert stale == {f"backup_stale:{source_db}"}

        retention = loads(run(denv, "retention", "--json").stdout)
        [kept] = [d for d in retention["backups"] if d["id"] == safety["id"]]
        assert kept["reasons"] == ["safety backup: 0 days old, under SAFETY_RETENTION_DAYS=14"]
    finally:
        pg.drop_database(f"{source_db}_restored")


def test_latest_is_a_databases_own_backup_not_the_newer_safety_backup(
    denv: dict[str, str], pg: Cluster, source_db: str
) -> None:
    try:
        target, safety = safety_backup(denv, source_db, own_backup=True)
        latest = loads(run(denv, "show", "latest", "--database", target, "--json").stdout)
        assert latest["id"] != safety["id"] and latest["purpose"] == "backup"
    finally:
        pg.drop_database(f"{source_db}_restored")


def item(backup_id: str, days_ago: int, *, safety: bool = False) -> Item:
    now = datetime(2026, 6, 30, 12, tzinfo=UTC)
    return Item(backup_id, "shop", "standard", "logical", now - timedelta(days=days_ago),
                safety=safety)  # fmt: skip


def test_it_keeps_safety_backups_for_their_own_days_and_outside_min_keep() -> None:
    now = datetime(2026, 6, 30, 12, tzinfo=UTC)
    items = [
        item("own-old", 200),
        item("safety-new", 1, safety=True),
        item("safety-13", 13, safety=True),
        item("safety-15", 15, safety=True),
    ]
    decided = {d.item.id: d for d in plan(items, RetentionSettings(min_keep=1), now)}
    assert decided["own-old"].keep, "safety backups take no min-keep place"
    assert decided["own-old"].reasons[0] == "min-keep: one of the newest 1"
    assert decided["safety-new"].action == Action.KEEP
    assert decided["safety-13"].action == Action.KEEP
    assert decided["safety-15"].action == Action.DELETE
    assert decided["safety-15"].reasons == [
        "expired: safety backup 15 days old, over SAFETY_RETENTION_DAYS=14"
    ]
    seven = {d.item.id: d for d in plan(items, RetentionSettings(safety_days=7), now)}
    assert seven["safety-13"].action == Action.DELETE


def test_it_refuses_a_backup_of_a_database_that_is_not_configured(
    denv: dict[str, str], source_db: str
) -> None:
    client = create_app(Settings.from_env(denv), evaluate=False).test_client()
    refused = client.post(
        "/backup/run-now", json={"database": "nosuch"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert refused.status_code == 400
    assert refused.json["configured"] == [source_db]
    line = refused.json["error"]
    assert line.startswith("database 'nosuch' is not configured for backups") and source_db in line
    assert client.get("/tasks/1").status_code == 404, "nothing was queued"

    # The dashboard's "back up now" form refuses it the same way.
    guarded = {**denv, "DASHBOARD_USER": "oncall", "DASHBOARD_PASSWORD": "pw-123456"}
    dashboard = create_app(Settings.from_env(guarded), evaluate=False).test_client()
    login = {"Authorization": "Basic " + base64.b64encode(b"oncall:pw-123456").decode()}
    page = dashboard.get("/", headers=login).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None, "the overview offers its forms"
    form = {"database": "nosuch", "csrf_token": token.group(1)}
    answer = dashboard.post("/ui/run-now", data=form, headers=login)
    assert answer.status_code == 400 and line in html.unescape(answer.get_data(as_text=True))
    assert client.get("/tasks/1").status_code == 404, "nothing was queued from the form"

    cli = run(denv, "backup", "--database", "nosuch", check=False)
    assert cli.returncode == 2
    assert cli.stderr.strip().splitlines() == [f"permafrost: error: {line}"]
    assert loads(run(denv, "list", "--json").stdout) == [], "no failed backup to alert on"
