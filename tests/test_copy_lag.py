"""A copy destination down for a while: backups go on, the lag shows on /metrics and the
dashboard, the copy_lag alert fires and its email arrives, `copy --all-missing` catches up,
and the alert resolves with its RESOLVED email. Time passing is played by moving timestamps."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.alerts.evaluator import Evaluator
from monitor.app import create_app
from monitor.metrics import render
from permafrost.catalog.copy_lag import copy_lags
from permafrost.catalog.store import connect
from permafrost.config.settings import Secret, Settings
from tests.conftest import run
from tests.helpers import loads
from tests.services import S3Server
from tests.test_alerts import SMTPServer, alert, make_settings, parts, prepare
from tests.test_copy_restore import copy_env


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.stop()


def lag_samples(catalog, settings) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(render(catalog, settings).decode()):
        for sample in family.samples:
            if sample.name.startswith("permafrost_copy_"):
                found[f"{sample.name}{sample.labels.get('destination', '')}"] = sample.value
    return found


def test_a_copy_down_for_a_while_alerts_by_email_and_resolves_once_caught_up(
    env: dict[str, str], s3: S3Server, smtp: SMTPServer, refused: int
) -> None:
    copy_bucket = f"pf-copy-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=copy_bucket)
    up = {**env, **copy_env(s3, copy_bucket), "COPY_MAX_LAG": "2h"}
    down = {
        **up,
        "COPY_1_S3_ENDPOINT_URL": f"http://127.0.0.1:{refused}",
        "COPY_1_S3_MAX_ATTEMPTS": "1",
    }
    settings = make_settings(up, smtp.port)
    catalog = prepare(settings)

    run(down, "backup")  # backups go on while the copy is down
    failed = run(down, "copy", "--all-missing", check=False)
    assert failed.returncode == 6 and "dr" in failed.stderr
    catalog.conn.execute(  # three hours pass
        "UPDATE backups SET started_at = started_at - interval '3 hours',"
        " finished_at = finished_at - interval '3 hours'"
    )
    run(down, "backup")
    evaluator = Evaluator(settings)

    outcome = evaluator.run_once()
    assert outcome is not None and "copy_lag:dr" in outcome.applied.opened
    [message] = smtp.mailbox.about("copy_lag:dr")
    assert str(message["Subject"]).startswith(
        "[permafrost] WARNING: copy dr lags the primary by 3h"
    )
    assert "2 backups not copied" in str(message["Subject"])
    text, html = parts(message)
    for part in (text, html):
        assert "permafrost copy --all-missing --to dr" in part
    assert alert(catalog, "copy_lag:dr")["details"]["missing_backups"] == 2

    samples = lag_samples(catalog, settings)
    assert samples["permafrost_copy_lag_secondsdr"] > 3 * 3600 - 60
    assert samples["permafrost_copy_missing_backupsdr"] == 2
    assert samples["permafrost_copy_max_lag_seconds"] == 7200
    page = create_app(settings).test_client().get("/").get_data(as_text=True)
    assert 'data-destination="dr"' in page and "none yet" in page and "2 backups" in page

    out = run(up, "copy", "--all-missing").stdout  # the copy is back: catch up
    assert "dr: 2 backups copied and verified" in out
    evaluator.run_once()
    assert smtp.mailbox.subjects()[-1].startswith("[permafrost] RESOLVED: copy dr lags")
    assert alert(catalog, "copy_lag:dr")["resolved_at"] is not None
    samples = lag_samples(catalog, settings)
    assert samples["permafrost_copy_lag_secondsdr"] == 0
    assert samples["permafrost_copy_missing_backupsdr"] == 0
    page = create_app(settings).test_client().get("/").get_data(as_text=True)
    newest = loads(run(up, "list", "--json").stdout)[0]["id"]
    assert f">{newest}</a>, verified" in page
    # The backup's own page says where it lives: the primary, and the copy.
    client = create_app(settings).test_client()
    detail = client.get(f"/backup/{newest}", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert f"s3://{settings.storage.bucket}" in detail
    assert "copy <strong>dr</strong>: verified" in detail, detail


def test_the_lag_leaves_out_what_the_copy_keeps_no_longer(pg, metadata_db, tmp_path) -> None:
    """A backup older than the copy's own days is not sent (its retention would delete it
    there): it is not missing, so a copy kept for 1 day does not lag by the primary's 30."""
    catalog = connect(Secret(pg.url(metadata_db)))
    for hours in (72, 2):
        catalog.conn.execute(
            "INSERT INTO backups (id, database, kind, tier, status, started_at, finished_at)"
            " VALUES (%s, 'app', 'logical', 'standard', 'completed',"
            " now() - %s * interval '1 hour', now() - %s * interval '1 hour')",
            (f"20260101T000000Z-{uuid.uuid4().hex[:6]}", hours, hours),
        )
    url = {"COPY_STORAGE_URLS": f"dr=file://{tmp_path}/copy"}
    now = datetime.now(UTC)
    [kept_all] = copy_lags(catalog, Settings.from_env(url).copies)
    assert kept_all.missing == 2 and kept_all.lag_seconds(now) > 71 * 3600
    one_day = Settings.from_env({**url, "COPY_1_RETENTION_DAYS": "1"}).copies
    [short] = copy_lags(catalog, one_day)
    assert short.missing == 1 and 3600 < short.lag_seconds(now) < 3 * 3600
    catalog.close()
