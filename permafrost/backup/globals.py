"""The server's globals beside each logical backup: roles, memberships, settings, tablespaces.

A database's dump does not hold the roles that own its objects or hold its grants; a server
rebuilt from dumps alone refuses them. So each logical backup also stores `pg_dumpall
--globals-only` (with `--no-role-passwords` unless BACKUP_ROLE_PASSWORDS=true, which needs a
superuser) through the same pipeline, as `globals.pfe` in the backup's folder; the manifest names
it in `objects` and records its sizes and hashes in `globals`. Globals that cannot be taken never
fail the backup of the database: the caller logs the reason as a warning.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any

from permafrost import layout
from permafrost.backup.destination import Destination
from permafrost.backup.request import BackupRequest
from permafrost.config.settings import SourceSettings
from permafrost.errors import PermafrostError, SourceError
from permafrost.postgres import tools as pgtools


@dataclass(frozen=True)
class StoredGlobals:
    key: str
    facts: dict[str, Any]  # the manifest's `globals`: sizes, hashes, tool version, passwords


def take(
    destination: Destination,
    source: SourceSettings,
    bin_dirs: tuple[str, ...],
    request: BackupRequest,
    role_passwords: bool,
) -> StoredGlobals:
    """Dump the globals of the server `source` names and store them beside the backup."""
    pg_dumpall = pgtools.find_tool(bin_dirs, "pg_dumpall").path  # the newest reads any server
    sql = _dump(pg_dumpall, source, request.database, role_passwords)
    key = layout.globals_key(
        destination.repository.prefix, request.tier, request.database, request.backup_id
    )
    sealer = destination.sealer(key)
    try:
        sealer.write(sql)
        stats = sealer.close()
    except BaseException:
        sealer.abort()
        raise
    facts = {
        "plain_bytes": stats.plain_bytes,
        "plain_sha256": stats.plain_sha256,
        "stored_bytes": stats.stored_bytes,
        "stored_sha256": stats.stored_sha256,
        "tool_version": pgtools.tool_version(pg_dumpall),
        "role_passwords": role_passwords,
    }
    return StoredGlobals(key, facts)


def _dump(pg_dumpall: str, source: SourceSettings, database: str, role_passwords: bool) -> bytes:
    command = [pg_dumpall, "--globals-only", "--no-password"]
    command += [] if role_passwords else ["--no-role-passwords"]
    command.append(f"--dbname={pgtools.conninfo(source, database)}")
    result = subprocess.run(
        command, capture_output=True, check=False, env=pgtools.libpq_env(source), timeout=300
    )
    if result.returncode != 0:
        error = _summary(result.stderr.decode(errors="replace"))
        raise SourceError(f"pg_dumpall --globals-only failed: {error}{_hint(error)}")
    return result.stdout


def _summary(stderr: str) -> str:
    lines = [line.removeprefix("pg_dumpall: ") for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no error output"])[0].removeprefix("error: ")


def _hint(error: str) -> str:
    if "pg_authid" in error and "permission denied" in error:
        return " (BACKUP_ROLE_PASSWORDS=true needs a superuser as DB_USER; set it to false)"
    return ""


def why_not(exc: BaseException) -> str:
    """The reason the globals were not stored, for the warning."""
    return str(exc) if isinstance(exc, PermafrostError) else f"{type(exc).__name__}: {exc}"
