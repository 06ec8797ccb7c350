"""`gunicorn monitor.wsgi:app`: the monitor from the environment (as the container runs it).

A bad or conflicting setting is the one line every `permafrost` command prints; the worker then
exits with gunicorn's "App failed to load" code (4), which stops gunicorn instead of having it
boot the worker again and again.
"""

from __future__ import annotations

import sys

from monitor.app import create_app
from permafrost import logs
from permafrost.config.envfile import environment
from permafrost.config.settings import Settings
from permafrost.errors import ConfigError
from permafrost.text import error_line

APP_LOAD_ERROR = 4  # gunicorn.arbiter.Arbiter.APP_LOAD_ERROR: the arbiter halts on it

try:
    settings = Settings.from_env(environment(None))
except ConfigError as exc:
    print(f"permafrost: error: {error_line(exc)}", file=sys.stderr, flush=True)
    sys.exit(APP_LOAD_ERROR)

logs.configure("monitor", settings.log_format, settings.log_level)
app = create_app(settings)
