"""Pings to an external dead-man's switch (healthchecks.io, or anything with its URL scheme).

HEALTHCHECK_PING_URL is pinged when a scheduled backup starts (`/start`), when it succeeds (the
URL itself) and when it fails (`/fail`). The service alerts when a success stops arriving, which
covers what Permafrost cannot report itself: the whole host down, the metadata store and the
monitor with it. A ping never fails a backup: errors are logged, without the URL (its path is
the secret that lets anyone ping), and swallowed.
"""

from __future__ import annotations

import http.client
import logging
import urllib.request
from typing import Literal
from urllib.parse import quote

from permafrost import __version__
from permafrost.config.settings import Settings

log = logging.getLogger("scheduler.pings")

Event = Literal["start", "success", "fail"]
SUFFIXES: dict[str, str] = {"start": "/start", "success": "", "fail": "/fail"}
TIMEOUT = 5
MAX_BODY = 10_000  # healthchecks.io keeps the first 10 KB of a ping's body


def ping(settings: Settings, event: Event, body: str = "", *, run_id: str | None = None) -> bool:
    """Ping HEALTHCHECK_PING_URL for this event (GET, or POST with a body); True if it
    answered. `run_id` (a UUID) pairs a start with its end when backups overlap (`rid`)."""
    secret = settings.monitor.healthcheck_ping_url
    if not secret:
        return False
    base = secret.reveal()
    url = base.rstrip("/") + SUFFIXES[event]
    if run_id:
        url += ("&" if "?" in url else "?") + "rid=" + quote(run_id)
    data = body.encode()[:MAX_BODY] if body else None
    request = urllib.request.Request(
        url,
        data=data,
        method="POST" if data else "GET",
        headers={"User-Agent": f"permafrost/{__version__}", "Content-Type": "text/plain"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            response.read()
        return True
    except ValueError:
        log.warning("healthcheck ping (%s) not sent: HEALTHCHECK_PING_URL is not a URL", event)
    except (OSError, http.client.HTTPException) as exc:
        reason = " ".join(
            f"{type(exc).__name__}: {exc}".replace(base.rstrip("/"), "********").split()
        )
        log.warning("healthcheck ping (%s) failed: %s", event, reason)
    return False
