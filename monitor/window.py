"""`/window`: will tonight's backups fit in BACKUP_WINDOW? The forecast of `permafrost plan
window`, as a page for a browser and as JSON for everything else (`?workers=N`, default 1)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, jsonify, render_template, request

from monitor.stores import catalog, settings
from monitor.web import wants_html
from permafrost.backup.tonight import forecast_json, window_forecast

blueprint = Blueprint("window", __name__)
MAX_WORKERS = 1000


@blueprint.get("/window")
def window() -> Any:
    workers = _workers(request.args.get("workers", "1"))
    result, opens = window_forecast(settings(), catalog(), workers, datetime.now(UTC))
    forecast = forecast_json(result, opens)
    if wants_html():
        return render_template("window.html", forecast=forecast, window=settings().window.text)
    return jsonify(forecast)


def _workers(text: str) -> int:
    if re.fullmatch(r"[0-9]{1,4}", text) is None or not 1 <= int(text) <= MAX_WORKERS:
        abort(400, f"workers is not a number of workers (1 to {MAX_WORKERS})")
    return int(text)
