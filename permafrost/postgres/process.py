"""PostgreSQL client programs as child processes: the plumbing every dump shares.

pg_dump and pg_basebackup write to a pipe that the pipeline reads; pg_receivewal writes files.
Each gets the password in its environment (see tools.libpq_env), a wide pipe, and a thread
that keeps the last lines of its stderr, so a failure is reported with the program's own words
and, where one is known, a hint for the fix. Every child dies with its parent (`die_with_parent`):
a parent killed with -9 leaves no pg_receivewal holding a replication slot, no pg_dump running on.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from permafrost.config.settings import SourceSettings
from permafrost.errors import SourceError
from permafrost.postgres import tools as pgtools

PIPE_SIZE = 1024 * 1024
F_SETPIPE_SZ = 1031
PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


_PRCTL = _prctl()  # loaded before any fork: the child only calls it


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when the thread that started it dies (kill -9 too).

    PR_SET_PDEATHSIG is Linux's; elsewhere the child outlives a killed parent as before. A
    parent that died between the fork and the prctl is caught by comparing the parent's pid.
    """
    parent = os.getpid()

    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, int(sig))
            if os.getppid() != parent:
                os.kill(os.getpid(), sig)

    return preexec


def widen_pipe(stream: IO[bytes]) -> None:
    """A 1 MiB pipe lets the program run ahead while the previous block is being compressed."""
    # The system limit may be lower; the default pipe still works then.
    with contextlib.suppress(OSError):
        fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ, PIPE_SIZE)


class StderrTail:
    """Reads a child's stderr on a thread, keeping the last lines for the error message."""

    def __init__(self, stream: IO[bytes], program: str = "pg_dump: ") -> None:
        self._program = program
        self._lines: deque[str] = deque(maxlen=5)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").strip()
            if line:
                self._lines.append(line.removeprefix(self._program))

    def join(self) -> None:
        self._thread.join(timeout=5)

    def summary(self) -> str:
        self.join()
        errors = [line for line in self._lines if line.startswith("error:")]
        return (errors or list(self._lines) or ["no error output"])[-1]


def no_hint(error: str) -> str:
    return ""


def replication_hint(error: str) -> str:
    """What to change when a replication connection (pg_basebackup) is refused."""
    if "replication" in error and ("pg_hba" in error or "no pg_hba.conf entry" in error):
        return " (allow replication connections for this user in pg_hba.conf)"
    if "must be superuser or replication role" in error or "permission denied" in error:
        return " (the user needs the REPLICATION attribute: ALTER ROLE name REPLICATION)"
    return ""


class Child:
    """A client program writing to a pipe, with the tail of what it said on stderr."""

    def __init__(self, proc: subprocess.Popen[bytes], errors: StderrTail) -> None:
        assert proc.stdout is not None
        self.stdout: IO[bytes] = proc.stdout
        self._proc = proc
        self._errors = errors

    def kill(self) -> None:
        """Stop the program now (another part of the same backup failed)."""
        if self._proc.poll() is None:
            self._proc.kill()

    def finish(self, what: str, hint: Callable[[str], str] = no_hint) -> None:
        """Wait for the program to exit; a failure is a SourceError in the program's words."""
        if self._proc.wait() != 0:
            error = self._errors.summary()
            raise SourceError(f"{what} failed: {error}{hint(error)}")


@contextmanager
def reading(command: list[str], source: SourceSettings) -> Iterator[Child]:
    """Run a program whose stdout is read as it is written; killed if the reading fails."""
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pgtools.libpq_env(source),
        preexec_fn=die_with_parent(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    widen_pipe(proc.stdout)
    errors = StderrTail(proc.stderr, f"{Path(command[0]).name}: ")
    try:
        yield Child(proc, errors)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        errors.join()
