"""Point-in-time recovery into a database: copying each recovered database out of the recovery
server (pg_dump | pg_restore into a staging database, row counts compared, then renamed).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

from permafrost.config.settings import SourceSettings
from permafrost.context import Context
from permafrost.errors import (
    IntegrityError,
    TargetError,
    TargetExists,
)
from permafrost.postgres import ddl
from permafrost.postgres import tools as pgtools
from permafrost.repo.manifest import TableCount
from restore import target as targets
from restore.pitr.run import Server

Say = Callable[[str], None]


def check_target_free(target: targets.Target) -> None:
    with targets.maintenance(target) as conn:
        if ddl.database_exists(conn, target.database):
            raise TargetExists(
                f"database {target.where} already exists: pitr never overwrites a database; "
                "choose another --target-db or drop it first"
            )


def copy_database(
    ctx: Context,
    server: Server,
    role: str,
    database: str,
    target: targets.Target,
    no_owner: bool,
    say: Say,
) -> int:
    """pg_dump from the recovered server | pg_restore into a staging database, counted, renamed."""
    source = server.source(role, database)
    with pgtools.exported_snapshot(source, database) as snapshot:
        info = snapshot.export()
        counts = snapshot.row_counts()
        dumper = pgtools.find_tool(ctx.settings.pg_bin_dirs, "pg_dump", info.server_major)
        pg_dump = dumper.path
        # it reads what that pg_dump writes: its major or newer
        pg_restore = pgtools.find_tool(ctx.settings.pg_bin_dirs, "pg_restore", dumper.major).path
        staging = target.with_database(targets.staging_name(target.database))
        with targets.maintenance(target) as conn:
            ddl.create_database(conn, staging.database)
        try:
            say(
                f"copy {database} into {target.where} "
                f"(pg_dump | pg_restore, staging {staging.database})"
            )
            _pipe(pg_dump, pg_restore, source, database, info.snapshot_id, staging, no_owner)
            _compare(counts, staging, database)
        except BaseException:
            with targets.maintenance(target) as conn:
                ddl.drop_database(conn, staging.database)
            raise
    with targets.maintenance(target) as conn:
        if ddl.database_exists(conn, target.database):
            ddl.drop_database(conn, staging.database)
            raise TargetExists(f"database {target.where} appeared while pitr ran; left as it was")
        ddl.rename_database(conn, staging.database, target.database)
    return sum(c.rows for c in counts)


def _pipe(
    pg_dump: str,
    pg_restore: str,
    source: SourceSettings,
    database: str,
    snapshot: str,
    staging: targets.Target,
    no_owner: bool,
) -> None:
    dump = subprocess.Popen(
        [
            pg_dump,
            "--format=custom",
            "--compress=0",
            f"--snapshot={snapshot}",
            "--no-password",
            f"--dbname={pgtools.conninfo(source, database)}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pgtools.libpq_env(source),
    )
    assert dump.stdout is not None and dump.stderr is not None
    restore_args = ["--exit-on-error", "--no-password"]
    restore_args += ["--no-owner", "--no-acl"] if no_owner else []
    restore = subprocess.run(
        [
            pg_restore,
            *restore_args,
            f"--dbname={pgtools.conninfo(staging.server, staging.database)}",
        ],
        stdin=dump.stdout,
        capture_output=True,
        text=True,
        check=False,
        env=pgtools.libpq_env(staging.server),
    )
    dump.stdout.close()
    dump_errors = dump.stderr.read().decode(errors="replace").strip()
    if dump.wait() != 0:
        raise TargetError(f"pg_dump of the recovered {database} failed: {dump_errors[-300:]}")
    if restore.returncode != 0:
        lines = [x for x in restore.stderr.splitlines() if "error:" in x] or [restore.stderr]
        hint = ""
        if re.search(r'role ".*" does not exist', restore.stderr):
            hint = " (the roles are missing on the target server: create them or add --no-owner)"
        raise TargetError(f"pg_restore into {staging.where} failed: {lines[0].strip()}{hint}")


def _compare(tables: list[TableCount], staging: targets.Target, database: str) -> None:
    found = targets.count_rows(staging, tables)
    wrong = [
        f"{t.schema}.{t.table}: {found[(t.schema, t.table)]} of {t.rows}"
        for t in tables
        if found[(t.schema, t.table)] != t.rows
    ]
    if wrong:
        raise IntegrityError(
            f"the copy of {database} does not have the recovered rows ({'; '.join(wrong[:5])})"
        )


def user_databases(conn: object) -> list[str]:
    rows = conn.execute(  # type: ignore[attr-defined]
        "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'"
        " ORDER BY datname"
    ).fetchall()
    return [str(row[0]) for row in rows]
