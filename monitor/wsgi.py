"""`gunicorn monitor.wsgi:app`: the monitor from the environment (as the container runs it)."""

from __future__ import annotations

from monitor.app import create_app
from permafrost.config.envfile import environment
from permafrost.config.settings import Settings

app = create_app(Settings.from_env(environment(None)))
