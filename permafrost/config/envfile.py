"""The `--env-file` reader: `NAME=value` lines, the .env format Docker Compose reads."""

from __future__ import annotations

import os
from pathlib import Path

from permafrost.errors import ConfigError


def load_env_file(path: str) -> dict[str, str]:
    """Read `NAME=value` lines (the .env format Docker Compose reads) into a dict."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--env-file {path}: cannot read ({exc.strerror})") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        name, sep, value = line.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ConfigError(f"--env-file {path}, line {number}: expected NAME=value")
        values[name.strip()] = _unquote_value(value.strip())
    return values


def _unquote_value(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def environment(env_file: str | None) -> dict[str, str]:
    """The process environment over the env file's values: a variable set in both wins."""
    path = env_file or os.environ.get("PERMAFROST_ENV_FILE")
    values = load_env_file(path) if path else {}
    return {**values, **os.environ}
