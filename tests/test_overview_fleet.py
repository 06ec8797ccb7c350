"""The overview of a fleet too big for a dot per backup: the chart by day, `?source=` narrowed
to the source, and the storage panel and the failure a user looks for unchanged."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from monitor.app import create_app
from permafrost.catalog.store import connect
from permafrost.config.settings import Secret, Settings
from tests.services import Cluster

HTML = {"Accept": "text/html"}

# Two sources of 20 databases, a backup of each every day for 40 days (1,600: more than the
# chart's 1,000 dots; a source's 800 are fewer), src1.db7 the largest every day, src0.db3's
# newest failed.
FILL = """
INSERT INTO source_databases (source, database, name, first_seen, last_seen)
SELECT 'src' || s, 'db' || d, 'src' || s || '.db' || d, now() - interval '50 days', now()
FROM generate_series(0, 1) s, generate_series(0, 19) d;

INSERT INTO backups (id, database, kind, tier, status, started_at, finished_at, size_bytes,
                     manifest_key, error)
SELECT to_char(t, 'YYYYMMDD"T"HH24MISS"Z"') || '-'
           || lpad(to_hex(s * 10000 + d * 100 + day), 6, '0'),
       'src' || s || '.db' || d, 'logical', 'standard',
       CASE WHEN s = 0 AND d = 3 AND day = 0 THEN 'failed' ELSE 'completed' END,
       t, t + (60 + d) * interval '1 s',
       CASE WHEN s = 1 AND d = 7 THEN 9000000 ELSE 1000 * (1 + d) END, 'k',
       CASE WHEN s = 0 AND d = 3 AND day = 0 THEN 'pg_dump: error: connection to server lost' END
FROM generate_series(0, 1) s, generate_series(0, 19) d, generate_series(0, 39) day,
     LATERAL (SELECT date_trunc('day', now()) - day * interval '1 day' - interval '12 hours'
                     + d * interval '1 minute' AS t) x
"""


@pytest.fixture
def client(pg: Cluster, metadata_db: str, tmp_path: Path) -> Iterator[FlaskClient]:
    url = pg.url(metadata_db)
    catalog = connect(Secret(url))  # applies the migrations
    for statement in FILL.split(";\n"):
        catalog.conn.execute(statement)
    catalog.conn.execute("VACUUM ANALYZE backups")
    catalog.conn.execute(
        "INSERT INTO job_runs (job, database, started_at, finished_at, status, error)"
        " VALUES ('backup', 'src0.db3', now() - interval '1 hour', now(), 'failed', 'lost')"
    )
    # The leader's heartbeat, as the scheduler writes it: each source's job's next run.
    next_runs = {
        "backup:@src0": "2031-01-02T02:00:00+00:00",
        "backup:@src1": "2031-01-03T02:00:00+00:00",
    }
    catalog.heartbeat("sched:1", "leader", "test", 1, next_runs, {"running": ["backup:@src1"]})
    catalog.close()
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        "sources:\n"
        + "".join(
            f"  - name: src{s}\n    url: postgresql://backup@127.0.0.1:1/postgres\n"
            "    databases: all\n"
            for s in (0, 1)
        )
    )
    (tmp_path / "bucket").mkdir()
    settings = Settings.from_env(
        {
            "METADATA_DATABASE_URL": url,
            "STORAGE_URL": f"file://{tmp_path / 'bucket'}",
            "SOURCES_FILE": str(sources),
        }
    )
    app = create_app(settings, evaluate=False)
    app.testing = True
    yield app.test_client()


def dots(page: str) -> list[str]:
    return re.findall(r'<circle [^>]*class="size"><title>([^<]*)</title></circle>', page)


def test_it_charts_a_dot_per_day_when_the_backups_are_too_many(client: FlaskClient) -> None:
    page = client.get("/", headers=HTML).get_data(as_text=True)
    titles = dots(page)
    assert 40 <= len(titles) <= 41, titles  # a dot per UTC day (the last may straddle two)
    assert "One dot per day and kind" in page
    assert "1599 backups" in page  # the chart's label: every completed backup counted
    assert all("largest 8.6 MiB (src1.db7)" in t for t in titles), titles[:3]
    assert re.search(r"logical \d{4}-\d\d-\d\d: 40 backups, largest", page)
    assert '<span class="key logical">logical: 1599</span>' in page


def test_a_source_s_chart_shows_its_own_backups_one_by_one(client: FlaskClient) -> None:
    page = client.get("/?source=src0", headers=HTML).get_data(as_text=True)
    titles = dots(page)
    assert len(titles) == 20 * 40 - 1  # src0's completed backups, one by one
    assert all(t.startswith("logical src0.db") for t in titles), titles[:3]
    assert "One dot per day" not in page and "Source src0 only." in page


def test_the_failure_and_the_storage_read_as_before(client: FlaskClient) -> None:
    page = client.get("/?source=src0", headers=HTML).get_data(as_text=True)
    card = re.search(
        r'<article class="card[^"]*" data-database="src0.db3".*?</article>', page, re.S
    )
    assert card is not None and "failing" in card.group(0)
    assert "Last backup FAILED" in card.group(0) and "connection to server lost" in card.group(0)
    assert re.search(r"src0 \(20, 1 failing", page) and "src1 (20" in page
    row = re.search(r'<tr data-tier="standard"><td>standard</td><td>(\d+)</td>', page)
    assert row is not None and row.group(1) == "1599"  # the fleet's, not the source's


def test_a_source_s_cards_say_when_their_next_backup_runs(client: FlaskClient) -> None:
    page = client.get("/?source=src0", headers=HTML).get_data(as_text=True)
    card = re.search(r'data-database="src0.db3".*?</article>', page, re.S)
    assert card is not None and "Next backup: 2031-01-02 02:00 UTC" in card.group(0)
    whole = client.get("/", headers=HTML).get_data(as_text=True)
    other = re.search(r'data-database="src1.db3".*?</article>', whole, re.S)
    assert other is not None and "Next backup: 2031-01-03 02:00 UTC" in other.group(0)
