"""gunicorn's error and access logs in LOG_FORMAT (`--logger-class monitor.gunicorn_logs.Logger`).

In text, gunicorn's own lines stay as they are. In logfmt or JSON its handlers get the
formatter every service uses (permafrost/logs.py), and each request is one record with
`event=http_request` and its method, path, status, bytes, duration_s and remote address.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from gunicorn import glogging

from permafrost import logs
from permafrost.config.env import Env
from permafrost.errors import ConfigError
from permafrost.logs import LogFormat


def log_format() -> LogFormat:
    """The format this process configured, else LOG_FORMAT (gunicorn's arbiter reads no
    settings; a bad value is refused, with its one line, by the app that loads next)."""
    configured = logs.configured_format()
    if configured is not None:
        return configured
    try:
        return LogFormat(Env(os.environ).choice("LOG_FORMAT", tuple(LogFormat), LogFormat.TEXT))
    except ConfigError:
        return LogFormat.TEXT


class Logger(glogging.Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.structured = log_format() is not LogFormat.TEXT
        if self.structured:
            formatter = logs.formatter(log_format(), "monitor")
            for log in (self.error_log, self.access_log):
                for handler in log.handlers:
                    handler.setFormatter(formatter)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if not getattr(self, "structured", False):
            super().access(resp, req, environ, request_time)
            return
        if not self.access_log_enabled:
            return
        status = str(resp.status).split(None, 1)[0]
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
        self.access_log.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "event": "http_request",
                "method": method,
                "path": path,
                "status": int(status) if status.isdigit() else status,
                "bytes": getattr(resp, "sent", None),
                "duration_s": round(request_time.total_seconds(), 3),
                "remote": environ.get("REMOTE_ADDR"),
            },
        )
