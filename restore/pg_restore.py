"""Running pg_restore, and choosing from a dump's table of contents what it restores.

Selection by table or schema works on the archive's TOC (`pg_restore -l`): the data of tables
not asked for is left out, foreign keys are restored in a second pass once the tables not
asked for have been dropped, and names are matched against the tables the manifest counted,
so a table called "Mixed Case" is found as surely as one called customers.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from permafrost.errors import TargetError
from permafrost.postgres import tools as pgtools
from permafrost.repo.manifest import TableCount
from restore.target import Target

_ENTRY = re.compile(r"^(\d+); (\d+) (\d+) (.+)$")


@dataclass(frozen=True)
class TocSelection:
    main: str  # the list for the first pass: everything but unwanted data and foreign keys
    foreign_keys: str  # the list for the second pass
    foreign_key_count: int


def select_toc(toc: str, tables: Iterable[TableCount], keep: set[tuple[str, str]]) -> TocSelection:
    known = sorted(((t.schema, t.table) for t in tables), key=lambda k: -len(k[0] + k[1]))
    main, fks = [], []
    for line in toc.splitlines():
        entry = _ENTRY.match(line)
        rest = entry.group(4) if entry else ""
        if rest.startswith("FK CONSTRAINT "):
            fks.append(line)
            main.append(";" + line)
        elif rest.startswith("TABLE DATA ") and _table_of(rest, known) not in keep:
            main.append(";" + line)
        else:
            main.append(line)
    return TocSelection("\n".join(main) + "\n", "\n".join(fks) + "\n", len(fks))


def _table_of(rest: str, known: list[tuple[str, str]]) -> tuple[str, str] | None:
    remainder = rest[len("TABLE DATA ") :]
    for schema, table in known:
        if remainder.startswith(f"{schema} {table} "):
            return schema, table
    return None


def list_toc(pg_restore: str, dump: Path) -> str:
    result = subprocess.run(
        [pg_restore, "--list", str(dump)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise TargetError(f"pg_restore cannot list the dump: {_summary(result.stderr)}")
    return result.stdout


# pg_restore 17 and newer begin every session with SET transaction_timeout = 0, which a server
# older than 17 refuses (the setting does not exist there); that error changes nothing restored.
_NEWER_SETTING = 'unrecognized configuration parameter "transaction_timeout"'
_IGNORED = "errors ignored on restore"  # pg_restore went on to the end


def run(
    pg_restore: str,
    target: Target,
    dump: Path,
    args: list[str],
    toc: str | None = None,
    *,
    stop_on_error: bool = True,
) -> str:
    """Run pg_restore into the target; return its error output (empty when clean).

    When --exit-on-error stopped it at the first statement of its session, a newer pg_restore's
    SET transaction_timeout on an older server, it runs again without --exit-on-error and
    fails when any other error is reported. --single-transaction stops at any error whatever
    the options: that restore fails (_hint says what to do instead)."""
    result = _pg_restore(pg_restore, target, dump, args, toc, stop_on_error)
    lenient = stop_on_error and "--single-transaction" not in args
    if result.returncode != 0 and lenient and _NEWER_SETTING in result.stderr:
        result = _pg_restore(pg_restore, target, dump, args, toc, False)
        return outcome(target, result.returncode, result.stderr, lenient=True)
    if result.returncode != 0 and stop_on_error:
        raise failure(target, result.stderr)
    return result.stderr


def command(
    pg_restore: str, target: Target, args: list[str], dump: Path | None, stop_on_error: bool
) -> list[str]:
    """The pg_restore command line; without a dump it reads the archive from its stdin."""
    argv = [pg_restore, "--no-password", *args]
    argv.append(f"--dbname={pgtools.conninfo(target.server, target.database)}")
    argv += [] if dump is None else [str(dump)]
    if stop_on_error:
        argv.insert(1, "--exit-on-error")
    return argv


def outcome(target: Target, returncode: int, stderr: str, *, lenient: bool) -> str:
    """pg_restore's error output when it succeeded; TargetError when it failed. Lenient: it ran
    without --exit-on-error so that a newer pg_restore's SET transaction_timeout on an older
    server did not stop it, and only the other errors count."""
    if lenient:
        other = _errors(stderr)
        if not other and (returncode == 0 or _IGNORED in stderr):
            return ""
        raise failure(target, "\n".join(other) or stderr)
    if returncode != 0:
        raise failure(target, stderr)
    return stderr


def failure(target: Target, stderr: str) -> TargetError:
    return TargetError(f"pg_restore failed on {target.where}: {_summary(stderr)}" + _hint(stderr))


def _pg_restore(
    pg_restore: str,
    target: Target,
    dump: Path,
    args: list[str],
    toc: str | None,
    stop_on_error: bool,
) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".toc") as listing:
        extra = []
        if toc is not None:
            listing.write(toc)
            listing.flush()
            extra = [f"--use-list={listing.name}"]
        return subprocess.run(
            command(pg_restore, target, [*args, *extra], dump, stop_on_error),
            capture_output=True,
            text=True,
            check=False,
            env=pgtools.libpq_env(target.server),
        )


def _errors(stderr: str) -> list[str]:
    """pg_restore's error lines but the older server's refusal of transaction_timeout."""
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("pg_restore: error:") and _NEWER_SETTING not in line
    ]


def _summary(stderr: str) -> str:
    lines = [line.removeprefix("pg_restore: ") for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    chosen = (errors or lines or ["no error output"])[0]
    return chosen.removeprefix("error: ")


def _hint(stderr: str) -> str:
    if re.search(r'role ".*" does not exist', stderr):
        return " (the backup's roles are missing on the target: create them, or add --no-owner)"
    if "No space left on device" in stderr or "could not extend file" in stderr:
        return " (the target server is out of disk space)"
    if _NEWER_SETTING in stderr:
        return (
            " (a pg_restore of 17 or newer into a server older than 17 cannot run in one "
            "transaction: restore into a new database instead of --data-only)"
        )
    return ""


def error_count(stderr: str) -> int:
    return len(_errors(stderr))
