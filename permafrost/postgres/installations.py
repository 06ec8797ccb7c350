"""Which PostgreSQL installation's programs to run against a server of a given major.

A machine (or the image) may carry several installations side by side: Debian's
/usr/lib/postgresql/N/bin, directories named in PG_BIN_DIRS, the directory of a pg_dump on
PATH. Each program is chosen by the major version of the server it talks to:

- pg_dump, pg_dumpall, psql (`at_least`): the server's own major, else the newest newer one
  (pg_dump refuses a server newer than itself, and reads every older one);
- pg_basebackup, pg_receivewal, pg_verifybackup, the recovery server (`exact`): exactly the
  cluster's major (the on-disk format is the major's own);
- pg_restore (`for_restore`): the target server's major when the archive is no newer than it,
  else the newest that reads the archive, with a warning when the data goes to an older major.

When nothing fits, ToolMissing says in one line which major is needed and how to install it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from permafrost.errors import ToolMissing

DEBIAN_ROOT = Path("/usr/lib/postgresql")
# The programs an installation is recognised by, in the order their --version is asked.
_PROBES = ("pg_config", "postgres", "pg_dump", "pg_ctl", "initdb", "psql", "pg_restore")
# Debian puts these in postgresql-N (the server package); the rest in postgresql-client-N.
_SERVER_PROGRAMS = frozenset(
    {"postgres", "initdb", "pg_ctl", "pg_combinebackup", "pg_controldata", "pg_resetwal"}
)


@dataclass(frozen=True)
class Installation:
    """One PostgreSQL installation: a bin directory and the version its programs report."""

    bin_dir: Path
    version: str  # "18.6", "15.18"
    configured: bool = False  # named in PG_BIN_DIRS / PG_BIN_DIR

    @property
    def major(self) -> int:
        return _major(self.version)

    def has(self, program: str) -> bool:
        path = self.bin_dir / program
        return path.is_file() and os.access(path, os.X_OK)

    def path(self, program: str) -> str:
        return str(self.bin_dir / program)


@dataclass(frozen=True)
class Choice:
    """A program picked for a server, and why it may not be ideal (a line to show, or None)."""

    path: str
    installation: Installation
    warning: str | None = None

    @property
    def version(self) -> str:
        return self.installation.version

    @property
    def major(self) -> int:
        return self.installation.major


def split_dirs(value: str | None) -> tuple[str, ...]:
    """PG_BIN_DIRS: a colon-separated list of bin directories (empty entries ignored)."""
    return tuple(part.strip() for part in (value or "").split(":") if part.strip())


def discover(configured: Sequence[str] = ()) -> list[Installation]:
    """Every installation found: the configured directories first, then the usual places."""
    found: list[Installation] = []
    seen: set[str] = set()

    def add(directory: Path, is_configured: bool) -> None:
        key = os.path.realpath(directory)
        if key in seen:
            return
        version = _version_of(key)
        if version is None:
            return
        seen.add(key)
        found.append(Installation(Path(directory), version, is_configured))

    for named in configured:
        add(Path(named), True)
    for usual in _usual_places():
        add(usual, False)
    return found


def installed(configured: tuple[str, ...] = ()) -> tuple[Installation, ...]:
    """discover() afresh: a long-running scheduler sees a major installed after it started
    (each program's --version is asked once per process, while its file is unchanged)."""
    return tuple(discover(configured))


def missing_dirs(configured: Sequence[str]) -> list[str]:
    """The configured directories that hold no PostgreSQL program (a typo, an uninstalled major)."""
    return [d for d in configured if _version_of(os.path.realpath(d)) is None]


def _usual_places() -> Iterable[Path]:
    if DEBIAN_ROOT.is_dir():
        majors = sorted(
            (p for p in DEBIAN_ROOT.iterdir() if p.name.isdigit()),
            key=lambda p: int(p.name),
            reverse=True,
        )
        yield from (p / "bin" for p in majors)
    on_path = shutil.which("pg_dump")
    if on_path:
        real = Path(os.path.realpath(on_path))
        if real.name == "pg_dump":  # not Debian's pg_wrapper, which picks a version itself
            yield real.parent


def _version_of(real_dir: str) -> str | None:
    for program in _PROBES:
        path = Path(real_dir) / program
        if path.is_file() and os.access(path, os.X_OK):
            version = _asked(str(path), path.stat().st_mtime_ns)
            if version is not None:
                return version
    return None


@cache
def _asked(program: str, mtime_ns: int) -> str | None:
    """What `program --version` says (cached while the file is the same)."""
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\b(\d+(?:\.\d+)*)", out.stdout)
    return match.group(1) if match else None


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


def with_program(installations: Iterable[Installation], program: str) -> list[Installation]:
    """The installations that have `program`, newest major first (configured first on a tie)."""
    having = [i for i in installations if i.has(program)]
    return sorted(having, key=lambda i: (-i.major, not i.configured))


def at_least(installations: Sequence[Installation], program: str, major: int) -> Choice:
    """`program` of the server's own major, else of the newest newer major."""
    having = with_program(installations, program)
    own = [i for i in having if i.major == major]
    if own:
        return Choice(own[0].path(program), own[0])
    newer = [i for i in having if i.major > major]
    if newer:
        return Choice(newer[0].path(program), newer[0])
    raise ToolMissing(
        f"a PostgreSQL {major} server needs {program} {major} or newer; "
        f"{_found(having, program)}: {install_hint(program, major)}"
    )


def exact(installations: Sequence[Installation], program: str, major: int, why: str) -> Choice:
    """`program` of exactly `major`: base backups, WAL streaming and recovery need it."""
    having = with_program(installations, program)
    own = [i for i in having if i.major == major]
    if own:
        return Choice(own[0].path(program), own[0])
    raise ToolMissing(
        f"{why} of a PostgreSQL {major} cluster needs {program} of PostgreSQL {major} exactly; "
        f"{_found(having, program)}: {install_hint(program, major)}"
    )


def for_restore(
    installations: Sequence[Installation],
    target_major: int,
    archive_major: int,
    source_major: int,
    program: str = "pg_restore",
) -> Choice:
    """pg_restore for a dump written by pg_dump `archive_major` of a `source_major` server.

    The target's own major when it reads the archive; else the newest that does. A warning when
    the data goes to an older major than it came from, which PostgreSQL does not promise."""
    having = [i for i in with_program(installations, program) if i.major >= archive_major]
    own = [i for i in having if i.major == target_major]
    chosen = own[0] if own else (having[0] if having else None)
    if chosen is None:
        found = with_program(installations, program)
        raise ToolMissing(
            f"this dump was written by pg_dump {archive_major}, which only {program} "
            f"{archive_major} or newer reads; {_found(found, program)}: "
            f"{install_hint(program, archive_major)}"
        )
    warning = None
    if source_major and target_major and source_major > target_major:
        warning = (
            f"restoring a dump of PostgreSQL {source_major} into an older PostgreSQL "
            f"{target_major} server: PostgreSQL does not promise this works; objects that use "
            f"features newer than {target_major} will fail (restore into a {source_major} or "
            "newer server to be sure)"
        )
    return Choice(chosen.path(program), chosen, warning)


def _found(having: Sequence[Installation], program: str) -> str:
    if not having:
        return f"no {program} is installed"
    versions = ", ".join(f"{i.major} ({i.bin_dir})" for i in having)
    return f"found {program} {versions}"


def install_hint(program: str, major: int) -> str:
    package = f"postgresql-{major}" if program in _SERVER_PROGRAMS else f"postgresql-client-{major}"
    return (
        f"install {package} (Debian/Ubuntu, from apt.postgresql.org), build the image with "
        f'PG_MAJORS including {major} (docker build --build-arg PG_MAJORS="... {major}"), '
        "or add the bin directory of a PostgreSQL "
        f"{major} installation to PG_BIN_DIRS"
    )


def major_of_data_dir(data: Path) -> int | None:
    """The major of a data directory (its PG_VERSION file), or None when it has none."""
    try:
        return int((data / "PG_VERSION").read_text().strip().split(".")[0])
    except (OSError, ValueError):
        return None
