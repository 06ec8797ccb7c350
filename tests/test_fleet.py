"""SOURCES_FILE: the fleet read from YAML, the fleet of one from the old variables, and a bad
file refused with its line and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from permafrost.config.fleet import BackupKind, forget_cached, load_fleet
from permafrost.config.settings import Settings
from permafrost.errors import ConfigError, PermafrostError

ISSUE_FORM = """\
sources:
  - name: orders-eu
    url: postgresql://backup@10.0.0.5:5432/postgres   # password from password_file or PGPASSFILE
    password_file: {secret}
    databases: all
    exclude: [scratch]
    cluster: orders-eu          # physical backups and WAL, when enabled for this source
  - name: billing
    url: postgresql://backup@billing-db:5432/postgres
    databases: [billing, ledger]
"""


def _fleet(tmp_path: Path, text: str, **env: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    forget_cached()
    return load_fleet(Settings.from_env({"SOURCES_FILE": str(path), **env}))


def _refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _fleet(tmp_path, text)
    return str(caught.value)


def test_it_reads_the_form_in_the_issue(tmp_path: Path) -> None:
    secret = tmp_path / "orders-eu"
    secret.write_text("s3cret\n")
    fleet = _fleet(tmp_path, ISSUE_FORM.format(secret=secret))
    orders, billing = fleet.sources
    assert (orders.name, billing.name) == ("orders-eu", "billing")
    assert orders.lists_all and orders.exclude == ("scratch",)
    assert orders.cluster == "orders-eu" and BackupKind.BASE in orders.kinds
    assert orders.server.password is not None and orders.server.password.reveal() == "s3cret"
    assert orders.server.host == "10.0.0.5" and orders.server.user == "backup"
    assert orders.maintenance_db == "postgres"
    assert billing.databases == ("billing", "ledger")
    assert billing.server.password is None  # libpq's PGPASSFILE then
    assert billing.cluster is None and BackupKind.BASE not in billing.kinds
    # two sources' databases of one name never meet: each is SOURCE.DATABASE
    assert orders.catalog_name("app") == "orders-eu.app"
    assert fleet.source_of("billing.ledger") is billing
    server = billing.server_for(["billing.ledger"])
    assert server.conninfo("billing.ledger")["dbname"] == "ledger"


def test_it_reads_host_port_user_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    fleet = _fleet(
        tmp_path,
        """\
sources:
  - name: legacy
    host: db.internal
    port: 6543
    user: backup
    password_file: pw
    databases: [shop]
    plain_names: true
    kinds: [logical]
    schedules: {backup: "30 3 * * *"}
    retention: {daily: 14, min_keep: 5}
""",
    )
    (legacy,) = fleet.sources
    assert legacy.server.conninfo("shop") == {
        "dbname": "shop",
        "host": "db.internal",
        "port": "6543",
        "user": "backup",
    }
    assert legacy.catalog_name("shop") == "shop"  # the keys it had before the file
    assert legacy.kinds == {BackupKind.LOGICAL}
    assert legacy.schedules.backup == "30 3 * * *"
    assert legacy.schedules.compliance == "0 1 1 * *"  # the rest as the environment says
    assert (legacy.retention.daily, legacy.retention.min_keep, legacy.retention.weekly) == (
        14,
        5,
        4,
    )


def test_it_makes_the_old_variables_a_fleet_of_one() -> None:
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://u@h/shop", "DB_NAME": "shop", "CLUSTER_NAME": "prod"}
    )
    (one,) = load_fleet(settings).sources
    assert one.name == "prod" and one.databases == ("shop",) and one.cluster == "prod"
    assert one.catalog_name("shop") == "shop"  # keys and catalog rows as before


BAD = [
    ("sources:\n  - name: a\n    databases: all\n", "line 2, sources[0] (a).url: missing"),
    (
        "sources:\n  - name: a\n    url: postgresql://h/p\n    databases: everything\n",
        "line 4, sources[0] (a).databases: expected `all` or a list of names, got 'everything'",
    ),
    (
        "sources:\n  - name: a\n    url: postgresql://h/p\n    databases: all\n    colour: red\n",
        "line 5, sources[0].colour: unknown field",
    ),
    (
        "sources:\n  - name: a.b\n    url: postgresql://h/p\n    databases: all\n",
        "line 2, sources[0].name: 'a.b' is not a source name",
    ),
    (
        "sources:\n  - name: a\n    url: mysql://h/p\n    databases: all\n",
        "line 3, sources[0] (a).url:",
    ),
    (
        "sources:\n  - name: a\n    url: postgresql://h/p\n    databases: all\n"
        "  - name: a\n    url: postgresql://h/q\n    databases: all\n",
        "line 5, sources[1].name: 'a' is used twice (first on line 2)",
    ),
    (
        "sources:\n  - name: a\n    url: postgresql://h/p\n    databases: all\n"
        "    schedules:\n      backup: every night\n",
        "line 6, sources[0] (a).schedules.backup:",
    ),
    (
        "sources:\n  - name: a\n    url: postgresql://h/p\n    databases: all\n"
        "    kinds: [logical, base]\n",
        "line 5, sources[0] (a).kinds: base and incremental backups need the source's cluster",
    ),
    (
        "sources:\n  - name: a\n    url: postgresql://h/p\n    databases: all\n"
        "    password_file: /nonexistent/pw\n",
        "line 5, sources[0] (a).password_file: /nonexistent/pw cannot be read",
    ),
    ("sources:\n  - name: a\n    url: [\n", "line 4: not YAML"),
    ("sources: []\n", "line 1, sources: names no server"),
    (
        "sources:\n  - name: a\n    url: postgresql://h/p\n    databases: all\n    wal: receive\n",
        "line 5, sources[0] (a).wal: receive archives a cluster's WAL: name it with the "
        "source's cluster:",
    ),
    (
        "sources:\n  - name: a\n    url: postgresql://h/p\n    databases: all\n"
        "    cluster: a\n    wal: stream\n",
        "line 6, sources[0] (a).wal: 'stream' is not one of receive, push, off",
    ),
    (
        "sources:\n  - name: a\n    url: postgresql://h/p\n    databases: all\n"
        "    retention: {daily: -1}\n",
        "line 5, sources[0] (a).retention.daily: '-1' is not a whole number",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_it_refuses_a_bad_file_naming_the_line_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = _refusal(tmp_path, text)
    assert message.startswith(f"SOURCES_FILE {tmp_path / 'sources.yaml'}, ")
    assert expected in message


def test_it_refuses_db_name_beside_a_sources_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SOURCES_FILE=.* and DB_NAME"):
        _fleet(
            tmp_path,
            "sources:\n  - name: a\n    url: postgresql://h/p\n    databases: all\n",
            DB_NAME="shop",
        )


def test_it_refuses_a_bad_file_at_start_up_with_the_config_exit_code(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n  - name: a\n    url: postgresql://h/p\n    databases: al\n")
    done = subprocess.run(
        [sys.executable, "-m", "permafrost", "list"],
        env={"SOURCES_FILE": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr  # ConfigError's code (permafrost/cli.py)
    assert f"SOURCES_FILE {path}, line 4, sources[0] (a).databases" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_sources_retention_decides_for_its_databases_only(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from permafrost.config.fleet import retention_for
    from permafrost.retention.plan import Action, Item, plan

    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n"
        "  - name: short\n    url: postgresql://h/p\n    databases: [app]\n"
        "    retention: {daily: 2, weekly: 0, min_keep: 1}\n    cluster: short-pg\n"
        "  - name: usual\n    url: postgresql://h/p\n    databases: [app]\n"
    )
    forget_cached()
    settings = Settings.from_env({"SOURCES_FILE": str(path)})
    now = datetime(2026, 11, 22, 5, tzinfo=UTC)
    items = [
        Item(
            id=f"{now - timedelta(days=d):%Y%m%dT%H%M%SZ}-00000{i}",
            database=name,
            tier="standard",
            kind="logical",
            started_at=now - timedelta(days=d, hours=3),
        )
        for i, name in enumerate(("short.app", "usual.app"))
        for d in range(5)
    ]
    decided = plan(items, settings.retention, now, "UTC", retention_for(settings))
    kept = {
        name: sum(1 for d in decided if d.item.database == name and d.action == Action.KEEP)
        for name in ("short.app", "usual.app")
    }
    assert kept == {"short.app": 2, "usual.app": 5}  # daily 2 there, RETENTION_DAILY=7 here
    assert retention_for(settings)("short-pg").daily == 2  # its cluster's base backups too


def test_a_sources_retention_longer_than_the_tier_is_refused(tmp_path: Path) -> None:
    message = _refusal(
        tmp_path,
        "sources:\n  - name: a\n    url: postgresql://h/p\n    databases: all\n"
        "    retention: {weekly: 8}\n",
    )
    assert "line 5, sources[0] (a).retention: keeps standard backups 56 days" in message
    assert "STANDARD_TIER_DAYS=30" in message


def test_each_sources_wal_is_its_own_or_wal_archiving(tmp_path: Path) -> None:
    from permafrost.config.fleet import chosen_cluster, cluster_settings
    from permafrost.wal.supervisor import streamed_clusters

    text = """\
sources:
  - name: east
    url: postgresql://backup@east-db/postgres
    databases: [app]
    cluster: east
  - name: west
    host: west-db
    database: maintenance
    databases: [app]
    cluster: west
    wal: off
  - name: north
    url: postgresql://backup@north-db/postgres
    databases: [app]
    cluster: north
    wal: push
  - name: logical-only
    url: postgresql://backup@other-db/postgres
    databases: [app]
"""
    fleet = _fleet(tmp_path, text, WAL_ARCHIVING="receive")
    assert [s.wal for s in fleet.sources] == ["receive", "off", "push", "off"]
    settings = Settings.from_env(
        {"SOURCES_FILE": str(tmp_path / "sources.yaml"), "WAL_ARCHIVING": "receive"}
    )
    assert streamed_clusters(settings) == ("east",)
    assert [s.name for s in fleet.archived("push")] == ["north"]
    assert fleet.clusters() == ("east", "west", "north")
    assert fleet.clusters(archived=True) == ("east", "north")  # `backup --kind base --all`
    # wal: off turns the source's base backups off too, as WAL_ARCHIVING=off does
    west = fleet.source("west")
    assert west.schedules.wal_archiving == "off"
    on_west = cluster_settings(settings, "west")
    assert (on_west.cluster_name, on_west.source.host) == ("west", "west-db")
    assert on_west.source.databases == ("maintenance",)  # where cluster-level work connects
    assert cluster_settings(settings, "main").source == settings.source  # not a source's
    assert chosen_cluster(settings, None, "north") == "north"
    with pytest.raises(PermafrostError, match="source logical-only has no cluster"):
        chosen_cluster(settings, None, "logical-only")
    with pytest.raises(PermafrostError, match="--cluster and --source both"):
        chosen_cluster(settings, "east", "west")
    with pytest.raises(PermafrostError, match=r"which cluster\? CLUSTER_NAME=main is no source's"):
        chosen_cluster(settings, None, None)  # main is none of the file's clusters: asked
    assert chosen_cluster(settings, "main", None) == "main"  # named: an old archive, say
    off = _fleet(tmp_path, text)  # WAL_ARCHIVING=off: only the sources that say so
    assert [s.wal for s in off.sources] == ["off", "off", "push", "off"]


def test_the_lifecycle_check_covers_a_sources_own_wal_and_base_schedule(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from permafrost.retention.lifecycle.keeps import check_settings

    text = (
        "sources:\n  - name: east\n    url: postgresql://h/p\n    databases: [app]\n"
        "    cluster: east\n    wal: receive\n    schedules: {base_backup: '0 1 1 * *'}\n"
    )
    _fleet(tmp_path, text)  # WAL_ARCHIVING=off: only east archives, with monthly base backups
    settings = Settings.from_env({"SOURCES_FILE": str(tmp_path / "sources.yaml")})
    verdict = check_settings(settings, datetime(2026, 12, 6, tzinfo=UTC))
    assert any(p.startswith("WAL_RETENTION_DAYS=30 is shorter than") for p in verdict.problems)
    assert not [n for n in verdict.notes if n.startswith("WAL_ARCHIVING=off")]
    forget_cached()


def test_the_scheduler_streams_switches_and_drills_each_sources_cluster(tmp_path: Path) -> None:
    from scheduler.service import Service

    text = (
        "sources:\n"
        "  - name: east\n    url: postgresql://h/p\n    databases: [app]\n    cluster: east\n"
        "  - name: north\n    url: postgresql://h/p\n    databases: [app]\n    cluster: north\n"
        "    wal: push\n"
        "  - name: west\n    url: postgresql://h/p\n    databases: [app]\n    cluster: west\n"
        "    wal: off\n"
    )
    _fleet(tmp_path, text, WAL_ARCHIVING="receive")
    env = {"SOURCES_FILE": str(tmp_path / "sources.yaml"), "WAL_ARCHIVING": "receive"}
    lines = Service(Settings.from_env(env), lambda *a, **k: None).describe()
    assert "wal-receive:east: streamed by the leader" in lines
    assert "wal_switch:north: every minute (WAL archived by archive_command)" in lines
    assert not [line for line in lines if ":west" in line and "backup:@west" not in line], lines
    assert [line.split(":")[1] for line in lines if line.startswith("pitr_drill:")] == [
        "east",
        "north",
    ]
    forget_cached()
