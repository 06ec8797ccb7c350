"""Who the recovery server runs as, and the directories and programs that user must reach.

PostgreSQL refuses to run as root, so pitr run as root starts the server as PITR_OS_USER; every
directory it needs is then owned by that user, and the `permafrost` that restore_command calls
must be one that user can run. All of it is checked before anything is downloaded.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from permafrost.errors import ConfigError, TargetError, TargetExists, UsageError


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def for_server(cls, name: str) -> OsUser | None:
        """Who runs the recovery server: this user, or PITR_OS_USER (name) when this is root."""
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ConfigError(
                f"PostgreSQL refuses to run as root, and PITR_OS_USER={name} does not exist: "
                "create that user or set PITR_OS_USER to the user that owns PostgreSQL"
            ) from None
        return cls(name, entry.pw_uid, entry.pw_gid)


def as_user(user: OsUser | None) -> dict[str, Any]:
    return {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}


def chown(path: Path, user: OsUser | None) -> None:
    if user is not None:
        os.chown(path, user.uid, user.gid)


def permafrost_command() -> list[str]:
    script = Path(sys.executable).parent / "permafrost"
    if script.is_file():
        return [str(script)]
    found = shutil.which("permafrost")
    return [found] if found else [sys.executable, "-m", "permafrost.cli"]


def check_runnable(user: OsUser | None, run: Path) -> None:
    """restore_command runs as the server's OS user: that user must be able to run us."""
    if user is None:
        return
    command = [*permafrost_command(), "--version"]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            check=False,
            cwd=str(run),
            timeout=60,
            **as_user(user),
        )
        ok = result.returncode == 0
    except OSError:
        ok = False
    if not ok:
        raise ConfigError(
            f"PostgreSQL runs restore_command as the OS user {user.name}, who cannot run "
            f"{command[0]}: install Permafrost where that user can read it (./setup.sh builds "
            ".venv on the system Python), or run pitr as that user"
        )


def prepare_dir(path: Path, user: OsUser | None, what: str) -> bool:
    """Create or accept an empty directory owned by the server user; True if we created it."""
    created = False
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{what} {path} is not a directory")
        if any(path.iterdir()):
            raise TargetExists(
                f"{what} {path} is not empty: pitr never writes over files; choose a new or "
                "empty directory"
            )
    else:
        try:
            path.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise TargetError(f"cannot create {what} {path}: {exc.strerror}") from None
        created = True
    path.chmod(0o700)
    chown(path, user)
    if user is not None:
        probe = subprocess.run(
            ["test", "-w", str(path), "-a", "-x", str(path)],
            check=False,
            **as_user(user),
        )
        if probe.returncode != 0:
            raise TargetError(
                f"the OS user {user.name} cannot write {path}: a parent directory is private "
                "to this user; choose a directory under /var/lib or /srv"
            )
    return created


def empty_dir(path: Path, remove: bool) -> None:
    if remove:
        shutil.rmtree(path, ignore_errors=True)
        return
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def work_dir(configured: str | None, user: OsUser | None) -> Path:
    """A new private directory under RESTORE_TMPDIR (or the system's), owned by the user."""
    root = Path(configured or tempfile.gettempdir())
    path = Path(tempfile.mkdtemp(prefix="permafrost-pitr-", dir=root))
    chown(path, user)
    return path
