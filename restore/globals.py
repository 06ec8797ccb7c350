"""`permafrost restore --globals`: the server's roles and tablespaces onto a fresh server.

The SQL pg_dumpall wrote beside a backup (permafrost/backup/globals.py) is downloaded, its hashes
checked, and run by psql on the target server with ON_ERROR_STOP. Roles and tablespaces that
already exist there are reported and left as they are (their CREATE and ALTER statements are
left out), so a server that has the application's roles already, or a second run, is no error.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from permafrost.errors import BackupNotFound, HashMismatch, TargetError
from permafrost.postgres import ddl
from permafrost.postgres import tools as pgtools
from permafrost.repo.config import Repository
from permafrost.repo.manifest import Manifest
from permafrost.repo.pipeline import open_bytes
from restore import target as targets
from restore.target import Target

_IDENT = r'("(?:[^"]|"")*"|[^\s;"]+)'
_ROLE = re.compile(r"^(?:CREATE|ALTER|COMMENT ON) ROLE " + _IDENT)
_CREATE_ROLE = re.compile(r"^CREATE ROLE " + _IDENT + ";")
_TABLESPACE = re.compile(r"^(?:CREATE|ALTER|COMMENT ON) TABLESPACE " + _IDENT)
_CREATE_TABLESPACE = re.compile(r"^CREATE TABLESPACE " + _IDENT)


@dataclass
class GlobalsApplied:
    created_roles: list[str] = field(default_factory=list)
    skipped_roles: list[str] = field(default_factory=list)
    created_tablespaces: list[str] = field(default_factory=list)
    skipped_tablespaces: list[str] = field(default_factory=list)


def fetch(repository: Repository, manifest: Manifest) -> bytes:
    """The globals' SQL stored beside a backup, checked against the manifest's hashes."""
    key = manifest.objects.get("globals")
    facts = manifest.globals
    if not key or not facts:
        raise BackupNotFound(
            f"backup {manifest.id} of {manifest.database} has no globals stored beside it (taken "
            "by an older Permafrost, or pg_dumpall failed: its job run says why): name a newer "
            "backup, or create the roles by hand"
        )
    stored = repository.storage.get(key)
    if hashlib.sha256(stored).hexdigest() != facts["stored_sha256"]:
        raise HashMismatch(f"the globals of {manifest.id} do not match the manifest's SHA-256")
    sql = open_bytes(repository.keyring, stored)
    if hashlib.sha256(sql).hexdigest() != facts["plain_sha256"]:
        raise HashMismatch(f"the globals inside {manifest.id} do not match the manifest's SHA-256")
    return sql


def apply(
    sql: bytes,
    target: Target,
    bin_dirs: tuple[str, ...],
    say: Callable[[str], None],
    *,
    dry_run: bool = False,
) -> GlobalsApplied:
    """Run the globals on the target server, leaving out roles and tablespaces it has."""
    with targets.maintenance(target) as conn:
        roles, tablespaces = ddl.role_names(conn), ddl.tablespace_names(conn)
    applied = GlobalsApplied()
    kept = [line for line in sql.decode().splitlines() if _keep(line, roles, tablespaces, applied)]
    for name in applied.skipped_roles:
        say(f"role {name} exists on {pgtools.where(target.server)}: skipped, left as it is")
    for name in applied.skipped_tablespaces:
        say(f"tablespace {name} exists on {pgtools.where(target.server)}: skipped")
    if not dry_run:
        _psql(pgtools.find_tool(bin_dirs, "psql").path, target, "\n".join(kept) + "\n")
    return applied


def _keep(line: str, roles: set[str], tablespaces: set[str], applied: GlobalsApplied) -> bool:
    role, space = _ROLE.match(line), _TABLESPACE.match(line)
    if role:
        name = _unquote(role.group(1))
        created = _CREATE_ROLE.match(line)
        if name in roles:
            if created:
                applied.skipped_roles.append(name)
            return False
        if created:
            applied.created_roles.append(name)
    if space:
        name = _unquote(space.group(1))
        if name in tablespaces:
            if _CREATE_TABLESPACE.match(line):
                applied.skipped_tablespaces.append(name)
            return False
        if _CREATE_TABLESPACE.match(line):
            applied.created_tablespaces.append(name)
    return True


def _unquote(identifier: str) -> str:
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier


def _psql(psql: str, target: Target, script: str) -> None:
    database = targets.maintenance_database(target)
    command = [
        psql,
        "--no-psqlrc",
        "--quiet",
        "--no-password",
        "--set=ON_ERROR_STOP=1",
        f"--dbname={pgtools.conninfo(target.server, database)}",
    ]
    result = subprocess.run(
        command,
        input=script,
        capture_output=True,
        text=True,
        check=False,
        env=pgtools.libpq_env(target.server),
    )
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "ERROR:" in line]
        detail = (errors or result.stderr.splitlines() or ["no error output"])[0]
        raise TargetError(
            f"applying the globals on {pgtools.where(target.server)} stopped: "
            f"{detail.split('ERROR:', 1)[-1].strip()}; what ran before it stays (run it again "
            "once fixed: what exists is skipped)"
        )
