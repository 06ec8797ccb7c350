"""`permafrost plan window`: will tonight's backups fit in BACKUP_WINDOW, and with how many
workers? The simulation against a night worked out by hand, a fleet-sized synthetic night, and
the command, the API and the page on a real catalog."""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient

from monitor.app import create_app
from permafrost.backup.forecast import Limits, Planned, forecast, simulate
from permafrost.backup.tonight import fleet_tonight, tonight, window_opens
from permafrost.config.fleet import forget_cached, load_fleet
from permafrost.config.settings import Settings
from permafrost.errors import ConfigError
from tests.conftest import run
from tests.helpers import loads

# Three sources; A's serial work (110 s) is longer than a 100 s window.
NIGHT = [
    Planned("A", "a1", 60),
    Planned("A", "a2", 30),
    Planned("A", "a3", 20),
    Planned("B", "b1", 50),
    Planned("B", "b2", 40),
    Planned("C", "c1", 10),
]


def _timeline(runs) -> dict[str, tuple[int, float, float]]:
    return {run.item.database: (run.worker, run.start, run.end) for run in runs}


def test_it_schedules_a_night_worked_out_by_hand() -> None:
    # 2 workers, one backup per source at a time, longest first:
    # t=0 a1 (w1) and b1 (w2); t=50 b2 (w2; A is busy); t=60 a2 (w1);
    # t=90 both free: a3 on w1 (longer than c1), c1 on w2.
    result = forecast(NIGHT, Limits(workers=2), window_seconds=100)
    assert _timeline(result.runs) == {
        "a1": (1, 0, 60),
        "b1": (2, 0, 50),
        "b2": (2, 50, 90),
        "a2": (1, 60, 90),
        "a3": (1, 90, 110),
        "c1": (2, 90, 100),
    }
    assert result.finish == 110
    assert [run.item.database for run in result.misses] == ["a3"]  # c1 ends as it closes
    assert result.workers_needed is None
    assert result.bottleneck == ("A", 110)


def test_it_finds_the_fewest_workers_that_fit() -> None:
    # Two at a time per source: 2 workers end at 110 (as above: the second slot of A is never
    # free in time); 3 workers: a1 w1 0-60, b1 w2 0-50, b2 w3 0-40, a2 w3 40-70, c1 w2 50-60,
    # a3 w1 60-80, so the night ends at 80.
    two = forecast(NIGHT, Limits(workers=2, per_source=2), window_seconds=100)
    assert two.finish == 110 and not two.fits
    assert two.workers_needed == 3 and two.bottleneck is None
    three = simulate(NIGHT, Limits(workers=3, per_source=2))
    assert _timeline(three) == {
        "a1": (1, 0, 60),
        "b1": (2, 0, 50),
        "b2": (3, 0, 40),
        "a2": (3, 40, 70),
        "c1": (2, 50, 60),
        "a3": (1, 60, 80),
    }


def test_it_runs_two_at_once_on_a_worker_with_max_concurrent() -> None:
    runs = simulate(NIGHT, Limits(workers=1, per_worker=2, per_source=1))
    assert max(run.end for run in runs) == 110  # A alone is 110 s, serially
    assert {run.worker for run in runs} == {1}


def test_it_leaves_out_what_never_completed_and_says_so() -> None:
    result = forecast([*NIGHT, Planned("C", "new", None)], Limits(workers=3), 200)
    assert [item.database for item in result.unmeasured] == ["new"]
    assert "new" not in _timeline(result.runs)
    nothing = forecast([Planned("C", "new", None)], Limits(), 200)
    assert nothing.runs == [] and nothing.workers_needed is None and nothing.fits


def test_a_fleet_of_500_databases_on_20_sources() -> None:
    rng = random.Random(19)
    night = [Planned(f"src{n % 20:02d}", f"db{n:03d}", rng.uniform(30, 1800)) for n in range(500)]
    started = time.perf_counter()
    result = forecast(night, Limits(workers=4, per_source=2), window_seconds=4 * 3600)
    elapsed = time.perf_counter() - started
    started = time.perf_counter()
    simulate(night, Limits(workers=4, per_source=2))
    one = time.perf_counter() - started
    print(
        f"\n500 databases on 20 sources, 4 workers: ends after {result.finish / 3600:.2f} h, "
        f"{len(result.misses)} miss a 4 h window, {result.workers_needed} workers fit; "
        f"forecast (with the search for the number of workers) took {elapsed * 1000:.0f} ms, "
        f"one simulation {one * 1000:.1f} ms"
    )
    assert len(result.runs) == 500
    assert result.workers_needed is not None and result.workers_needed > 4
    fits = forecast(night, Limits(result.workers_needed, 1, 2), window_seconds=4 * 3600)
    assert fits.fits
    fewer = simulate(night, Limits(result.workers_needed - 1, 1, 2))
    assert max(run.end for run in fewer) > 4 * 3600


def test_it_refuses_a_bad_window_naming_the_variable() -> None:
    for bad in ("1-5", "25:00-05:00", "01:00-01:00", "01:00 to 05:00"):
        with pytest.raises(ConfigError, match="BACKUP_WINDOW"):
            Settings.from_env({"BACKUP_WINDOW": bad})
    overnight = Settings.from_env({"BACKUP_WINDOW": "22:30-04:00"}).window
    assert overnight.seconds == 5.5 * 3600


def test_tonight_is_the_window_open_now_or_the_next() -> None:
    settings = Settings.from_env({"BACKUP_WINDOW": "22:00-04:00"})
    at = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)  # still open since 22:00 yesterday
    assert window_opens(settings, at) == datetime(2026, 12, 6, 22, 0, tzinfo=UTC)
    at = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert window_opens(settings, at) == datetime(2026, 12, 7, 22, 0, tzinfo=UTC)


def test_the_command_the_api_and_the_page_on_a_real_catalog(env, source_db) -> None:
    for _ in range(3):
        run(env, "backup")
    server = env["DATABASE_URL"].rsplit("/", 1)[0] + "/"
    night = {
        **env,
        "DATABASE_URL": server,
        "DB_NAME": f"{source_db},never_backed_up",
        "BACKUP_WINDOW": "01:00-05:00",
    }
    durations = [b["duration_seconds"] for b in loads(run(night, "list", "--json").stdout)]
    forecast_ = loads(run(night, "plan", "window", "--json", "--workers", "2").stdout)
    (backup,) = forecast_["backups"]
    assert backup["database"] == source_db and not backup["misses_window"]
    assert backup["expected_seconds"] == pytest.approx(statistics.median(durations), abs=0.1)
    assert forecast_["fits"] and forecast_["workers_needed"] == 1
    assert forecast_["unmeasured"] == [
        {"source": "main", "database": "never_backed_up", "kind": "logical"}
    ]
    text = run(night, "plan", "window").stdout
    assert "finishes at 01:00" in text and "1 worker would be enough" in text
    assert "never completed, so not counted: main/never_backed_up" in text

    bad = run({**night, "BACKUP_WINDOW": "1am-5am"}, "plan", "window", check=False)
    assert bad.returncode == 2 and "BACKUP_WINDOW" in bad.stderr
    bad = run(night, "plan", "window", "--workers", "0", check=False)
    assert bad.returncode == 2 and "not a number of workers" in bad.stderr

    app = create_app(Settings.from_env(night), evaluate=False)
    client: FlaskClient = app.test_client()
    api = client.get("/window?workers=3").get_json()
    assert api["workers"] == 3 and api["backups"][0]["database"] == source_db
    assert client.get("/window?workers=0").status_code == 400
    page = client.get("/window", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "Will tonight fit?" in page and source_db in page and "never_backed_up" in page


def test_tonight_has_a_base_backup_only_when_its_schedule_fires_in_the_window() -> None:
    env = {"DB_NAME": "shop,ledger", "CLUSTER_NAME": "orders", "WAL_ARCHIVING": "push"}
    durations = {("shop", "logical"): 600.0, ("orders", "base"): 3000.0}
    opens = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)  # a Sunday
    weekly = Settings.from_env({**env, "BASE_BACKUP_SCHEDULE": "30 1 * * 0"})
    assert tonight(weekly, durations, opens) == [
        Planned("orders", "shop", 600.0),
        Planned("orders", "ledger", None),
        Planned("orders", "orders", 3000.0, "base"),
    ]
    monday = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
    assert [i.kind for i in tonight(weekly, durations, monday)] == ["logical", "logical"]
    no_wal = Settings.from_env({**env, "WAL_ARCHIVING": "off"})
    assert [i.kind for i in tonight(no_wal, durations, opens)] == ["logical", "logical"]


def test_a_sources_files_night_and_one_source_of_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n"
        "  - name: east\n    url: postgresql://h/p\n    databases: [shop, ledger]\n"
        "    cluster: east\n"
        "  - name: west\n    url: postgresql://h/p\n    databases: [crm]\n"
        "    cluster: west\n    wal: off\n"  # no WAL: no base backup tonight either
    )
    forget_cached()
    settings = Settings.from_env(
        {
            "SOURCES_FILE": str(path),
            "WAL_ARCHIVING": "receive",
            "BASE_BACKUP_SCHEDULE": "30 1 * * 0",
        }
    )
    fleet = load_fleet(settings)
    durations = {
        ("east.shop", "logical"): 600.0,
        ("east", "base"): 3000.0,
        ("west.crm", "logical"): 60.0,
        ("west", "base"): 100.0,
    }
    sunday = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
    listed = None  # databases listed in the file: the catalog is not read
    assert fleet_tonight(settings, listed, fleet.sources, durations, sunday) == [  # type: ignore[arg-type]
        Planned("east", "east.shop", 600.0),
        Planned("east", "east.ledger", None),
        Planned("east", "east", 3000.0, "base"),
        Planned("west", "west.crm", 60.0),
    ]
    west = fleet.select("west")
    assert fleet_tonight(settings, listed, west, durations, sunday) == [  # type: ignore[arg-type]
        Planned("west", "west.crm", 60.0)
    ]
    forget_cached()
