"""The outage watch's memory: a small JSON file under MONITOR_STATE_DIR, not the metadata store.

One file per watched deployment (its name carries a digest of the metadata store's and the
source's addresses, so a monitor pointed elsewhere does not inherit another's outages). Every
gunicorn worker runs a watch; a lock file (flock) lets one of them at a time read and write it,
and a write goes to a temporary file that is synced and renamed into place, so a reader never
sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from permafrost.errors import ConfigError

log = logging.getLogger("permafrost.monitor.alerts")

State = dict[str, Any]  # {"last_run": iso, "outages": {key: entry}}


class StateFile:
    def __init__(self, directory: str, identity: str) -> None:
        self.directory = Path(directory).expanduser()
        digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
        self.path = self.directory / f"outages-{digest}.json"
        self._lock_path = self.directory / f"outages-{digest}.lock"

    def check_writable(self) -> None:
        """ConfigError naming MONITOR_STATE_DIR when the directory cannot be made or written."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_path.touch(mode=0o600)
        except OSError as exc:
            raise ConfigError(
                f"MONITOR_STATE_DIR={self.directory}: cannot write there ({exc.strerror or exc});"
                " set it to a directory the monitor's user can write"
            ) from None

    def read(self) -> State:
        """What the file holds; empty when there is none (no outage was ever recorded)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"outages": {}}
        except (OSError, ValueError) as exc:
            log.error("outage state %s is unreadable (%s): starting afresh", self.path, exc)
            return {"outages": {}}
        return data if isinstance(data.get("outages"), dict) else {"outages": {}}

    @contextlib.contextmanager
    def locked(self) -> Iterator[State | None]:
        """The state, for reading and changing, or None when another process holds it."""
        self.check_writable()
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            yield self.read()
        finally:
            os.close(fd)  # releases the lock

    def write(self, state: State) -> None:
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w") as handle:
            json.dump(state, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
