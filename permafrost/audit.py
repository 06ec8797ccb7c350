"""Who did it, for the audit log."""

from __future__ import annotations

import getpass
import os
import socket


def actor() -> str:
    """`user@host`, with the operator behind sudo or `docker compose exec` where it is known."""
    user = os.environ.get("PERMAFROST_ACTOR") or os.environ.get("SUDO_USER") or _login()
    return f"{user}@{socket.gethostname()}"


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"
