"""A backup's dump streamed straight from the bucket into pg_restore, checked as it goes.

The ranged downloads (threads, in order), the chunk checks, decryption and decompression (this
thread) and pg_restore (its own process, fed by a writer thread through a bounded queue) all
overlap, and no byte lands on local disk. It is safe because pg_restore writes only into a
staging database nobody uses yet: a chunk that fails its tag, a wrong key or a truncated object
kills pg_restore before it sees the end of its input, and the caller drops the staging
database. Both SHA-256s are checked before pg_restore is given the end of its input, so it
never finishes on bytes that are not the backup's.
"""

from __future__ import annotations

import contextlib
import fcntl
import queue
import subprocess
import tempfile
import threading
from collections.abc import Callable

from permafrost.config.settings import StorageSettings
from permafrost.postgres import tools as pgtools
from permafrost.repo.config import Repository
from permafrost.repo.integrity import check_data_object, check_hashes
from permafrost.repo.manifest import Manifest
from permafrost.repo.reader import read_back
from restore import pg_restore as pgrestore
from restore.target import Target

QUEUE_DEPTH = 4  # plaintext pieces of at most 1 MiB between the decryptor and pg_restore
PIPE_BYTES = 1024 * 1024  # a larger pipe means fewer wake-ups of pg_restore and the writer


class Cancelled(Exception):
    """Another stream of the same restore failed (restore/parts.py): this one stops too."""


class _Stopped(Exception):
    """pg_restore failed and exited before the end of its input: its own error says why."""


class _Feeder:
    """A writer thread that copies queued pieces into pg_restore's stdin, in order."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._proc, self._sink = proc, proc.stdin
        self.broken = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg_restore-feed", daemon=True)
        self._thread.start()

    def put(self, piece: bytes) -> None:
        """Queue a piece; once pg_restore has exited, a failure stops the download, and a
        success lets it go on unwritten: every byte is still checked before it counts."""
        while not self.broken.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(piece, timeout=0.2)
                return
        if self._proc.wait() != 0:
            raise _Stopped

    def finish(self) -> None:
        """The end of pg_restore's input: what is queued is written, then stdin is closed."""
        self._queue.put(None)
        self._thread.join()

    def abort(self) -> None:
        """Stop writing (pg_restore is being killed); the thread drains the queue and ends."""
        self.broken.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            if self.broken.is_set():
                continue
            try:
                self._sink.write(piece)
            except OSError:  # BrokenPipeError: pg_restore exited
                self.broken.set()
        with contextlib.suppress(OSError):
            self._sink.close()


def restore(
    repository: Repository,
    transfer: StorageSettings,
    manifest: Manifest,
    argv: list[str],
    target: Target,
    on_progress: Callable[[int], None],
    cancel: threading.Event | None = None,
) -> tuple[int, str]:
    """Stream the checked dump into pg_restore (argv reads stdin); its exit code and stderr.

    Any failure of the download or its checks, or `cancel` set, kills pg_restore and raises."""
    check_data_object(repository.storage, manifest)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=pgtools.libpq_env(target.server),
        )
        assert proc.stdin is not None
        with contextlib.suppress(OSError, AttributeError):  # Linux only; a default pipe works
            fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        feeder = _Feeder(proc)

        def feed(piece: bytes) -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled
            feeder.put(piece)

        try:
            opened, dump_sha = read_back(repository, manifest, transfer, feed, on_progress)
            check_hashes(manifest, opened.stored_sha256, dump_sha)
            feeder.finish()
        except _Stopped:
            feeder.finish()  # pg_restore exited early: its exit code and message say why
        except BaseException:
            proc.kill()
            feeder.abort()
            proc.wait()
            raise
        returncode = proc.wait()
        errors.seek(0)
        return returncode, errors.read().decode(errors="replace")


def run(
    repository: Repository,
    transfer: StorageSettings,
    manifest: Manifest,
    pg_restore: str,
    target: Target,
    args: list[str],
    *,
    lenient: bool,
    on_progress: Callable[[int], None],
    cancel: threading.Event | None = None,
) -> None:
    """pg_restore from the bucket into target; TargetError when pg_restore fails.

    Lenient (a pg_restore of 17 or newer into an older server) runs without --exit-on-error,
    since a stream cannot be read twice, and fails on any error but the SET of
    transaction_timeout that such a server refuses."""
    argv = pgrestore.command(pg_restore, target, args, None, stop_on_error=not lenient)
    returncode, stderr = restore(repository, transfer, manifest, argv, target, on_progress, cancel)
    pgrestore.outcome(target, returncode, stderr, lenient=lenient)
