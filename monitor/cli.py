"""`permafrost monitor`: the dashboard, API, metrics and alert evaluator, served by gunicorn."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from permafrost.context import Context


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser(
        "monitor", help="serve the dashboard, the API and /metrics, and evaluate alerts"
    )
    p.add_argument("--bind", default=None, help="address:port (default 0.0.0.0:MONITOR_PORT)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, default=4, help="threads per worker")
    p.set_defaults(handler=monitor)


def monitor(ctx: Context, args: argparse.Namespace) -> int:
    # Imported here for start-up cost: every `permafrost` command loads this module to add its
    # parser, and only this one needs gunicorn and Flask.
    from gunicorn.app.base import BaseApplication

    from monitor.alerts.outage import state_file
    from monitor.app import create_app

    settings = ctx.settings
    state_file(settings).check_writable()  # one line and exit 2 here, not in each worker
    bind = args.bind or f"0.0.0.0:{settings.monitor.port}"

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", bind)
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", args.threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", "-")
            self.cfg.set("logger_class", "monitor.gunicorn_logs.Logger")
            self.cfg.set("timeout", 60)
            self.cfg.set("graceful_timeout", 20)
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn's control socket defaults to one path per user (~/.gunicorn/
                # gunicorn.ctl), which every monitor on the host would share; nothing uses it.
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            return create_app(settings)

    logging.getLogger("monitor").info(
        "permafrost monitor on http://%s (dashboard, API, /metrics)",
        bind,
        extra={"event": "monitor_started", "bind": bind},
    )
    Server().run()
    return 0
