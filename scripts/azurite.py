"""Install Azurite, Microsoft's Azure Storage emulator, for the azure:// destination's tests.

Run by `./setup.sh test` (not with --quick) before pytest. The pinned version is installed once
from the npm registry with `npm install` into `${PERMAFROST_CACHE:-<repo>/.cache}/azurite/`
and reused after; tests/destinations.py starts its blob service on a loopback port.

Standard library only: it runs before, and apart from, the project's own environment.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VERSION = "3.37.0"
REPO = Path(__file__).resolve().parent.parent
MARKER = ".permafrost-version"  # written last: a directory without it is incomplete


def install_root() -> Path:
    return Path(os.environ.get("PERMAFROST_CACHE") or REPO / ".cache") / "azurite"


def blob_program(root: Path | None = None) -> Path:
    """Where the installed azurite-blob is (tests/destinations.py asks)."""
    return (root or install_root()) / VERSION / "node_modules" / ".bin" / "azurite-blob"


INSTALL_TIMEOUT = 900  # seconds: about 20 on this machine; a hang is said, not waited out


def _npm_install(work: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [
                "npm",
                "install",
                "--prefix",
                str(work),
                "--no-audit",
                "--no-fund",
                "--silent",
                f"azurite@{VERSION}",
            ],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
            timeout=INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"npm install azurite@{VERSION} did not finish in {INSTALL_TIMEOUT} s: is the npm "
            "registry reachable (behind a TLS proxy: NODE_EXTRA_CA_CERTS names its CA)?"
        ) from None


def install(root: Path) -> bool:
    """Make root/VERSION; False when it was already there."""
    target = root / VERSION
    marker = target / MARKER
    if marker.is_file() and marker.read_text().strip() == VERSION:
        return False
    if shutil.which("npm") is None:
        raise RuntimeError("npm is missing: install it (apt-get install npm) and run again")
    work = Path(tempfile.mkdtemp(dir=root, prefix=".azurite-"))
    try:
        result = _npm_install(work)
        if result.returncode != 0 or not (work / "node_modules/.bin/azurite-blob").exists():
            said = (result.stderr.strip().splitlines() or ["no azurite-blob"])[-1]
            raise RuntimeError(f"npm install azurite@{VERSION} failed: {said}")
        (work / MARKER).write_text(VERSION + "\n")
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return True


def main() -> int:
    started = time.monotonic()
    root = install_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with (root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another worktree's test command may share it
            fetched = install(root)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"azurite: error: {exc}", file=sys.stderr)
        return 1
    news = "downloaded" if fetched else "cached"
    took = time.monotonic() - started
    print(f"azurite: {VERSION} in {root} ({news}) in {took:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
