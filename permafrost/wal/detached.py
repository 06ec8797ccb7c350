"""What the look-ahead pusher (ahead.py) and the restore prefetcher (prefetch.py) share: a
helper process started outside the caller's session, one per folder, kept unique by a flock."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path
from typing import IO


def held(lock: Path) -> bool:
    """Whether another process holds the flock on `lock` (also True when it cannot be told:
    never start a second helper)."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def start(
    command: list[str], stderr: IO[bytes] | int = subprocess.DEVNULL, cwd: str | None = None
) -> None:
    """Run `command` in a session of its own: PostgreSQL waits for archive_command and
    restore_command, never for the helper they start."""
    subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
        close_fds=True,
        cwd=cwd,
    )
