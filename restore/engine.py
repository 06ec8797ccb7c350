"""A restore, step by step, in the order that keeps every existing database safe.

1. Resolve the backup, read its signed manifest, validate the target and the selection.
2. Refuse what must not happen (an existing target without --drop-existing, the metadata
   store, the source database) before any download.
3. Download and check every byte into a temporary file; the target is not touched yet.
4. Take a safety backup of a target that will be replaced.
5. pg_restore into a staging database, compare exact row counts with the manifest.
6. Only then drop the old target and rename the staging database into its place.

A whole restore with one pg_restore job streams instead (restore/stream.py): after the safety
backup, the download, its checks and pg_restore into the staging database overlap, with no
temporary file, and both SHA-256s are checked before pg_restore sees the end of its input.
The staging database is what makes that safe, so --data-only (which writes into the existing
target) and --table/--schema (which read the dump's table of contents twice) keep the file.

A backup in parts (LOGICAL_JOBS, manifest.parts) restores through restore/parts.py after the
safety backup: pre-data from the schema part, the data parts streamed `jobs` at a time, then
post-data with pg_restore -j; --table, --schema and --data-only are refused for it.

A failure at any step leaves the target as it was, removes the staging database, is audit-logged
and, for a row-count mismatch, recorded as a failed verification.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from permafrost.audit import actor
from permafrost.backup.job import run_backup
from permafrost.backup.lookup import load_manifest
from permafrost.backup.request import BackupRequest
from permafrost.catalog.records import SAFETY_TAG, BackupRecord
from permafrost.context import Context
from permafrost.errors import PermafrostError, RowCountMismatch, TargetExists, UsageError
from permafrost.postgres import ddl, installations
from permafrost.postgres import tools as pgtools
from permafrost.progress import Progress
from permafrost.readfrom import Reader
from permafrost.repo.manifest import Kind, Manifest, TableCount
from permafrost.text import human_bytes
from restore import parts, stream
from restore import pg_restore as pgrestore
from restore import target as targets
from restore.early_counts import EarlyCounts
from restore.fetch import check_space, fetch_dump, temp_dir
from restore.target import Target

Say = Callable[[str], None]
Load = Callable[[Target, list[str]], None]  # pg_restore with these arguments into a database


@dataclass(frozen=True)
class RestoreOptions:
    target_db: str
    target_url: str | None = None
    jobs: int = 2
    tables: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()
    schema_only: bool = False
    data_only: bool = False
    drop_existing: bool = False
    safety_backup: bool = True
    no_owner: bool = False
    record_checks: bool = True  # a test restore records its own, richer verification


@dataclass
class RestorePlan:
    record: BackupRecord
    manifest: Manifest
    target: Target
    target_exists: bool
    selection: list[TableCount]
    options: RestoreOptions
    reader: Reader  # the primary, or the copy it moved to (readfrom.py)
    read_from: Context  # the context the manifest above was read through
    steps: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RestoreResult:
    plan: RestorePlan
    counts: dict[tuple[str, str], int | None]
    safety_backup_id: str | None
    seconds: float


def plan_restore(
    ctx: Context, record: BackupRecord, options: RestoreOptions, reader: Reader | None = None
) -> RestorePlan:
    """Everything decided and checked that can be without downloading or writing anything.
    Reads go through `reader` (default: the primary, falling back to its copies)."""
    if options.schema_only and options.data_only:
        raise UsageError("--schema-only and --data-only exclude each other")
    reader = reader or Reader(ctx)
    manifest = reader.read(lambda c: load_manifest(c, record))
    target = targets.resolve_target(
        ctx.settings, options.target_db, options.target_url, record.database
    )
    selection = select_tables(manifest, options.tables, options.schemas)
    with targets.maintenance(target) as conn:
        target_exists = ddl.database_exists(conn, target.database)
    own = targets.own_name(ctx.settings, manifest.database)
    targets.refuse_unsafe(target, own, options.drop_existing, target_exists)
    if target_exists and targets.is_metadata_store(target):
        raise UsageError(
            f"refusing to restore into {target.where}: it is Permafrost's own metadata store"
        )
    _check_existing(target, target_exists, options)
    _refuse_selection_of_parts(manifest, options)
    plan = RestorePlan(
        record, manifest, target, target_exists, selection, options, reader, reader.ctx
    )
    plan.steps = _steps(plan)
    return plan


def refuse_base(record: BackupRecord, action: str) -> None:
    """Restoring a base backup is pitr's work; say so instead of failing in pg_restore."""
    if record.kind == Kind.BASE:
        raise UsageError(
            f"{record.id} is a base backup of cluster {record.database}, which {action} cannot "
            f"use: recover from it with `permafrost pitr --base {record.id} --latest ...`"
        )


def _refuse_selection_of_parts(manifest: Manifest, options: RestoreOptions) -> None:
    if manifest.parts and (options.tables or options.schemas or options.data_only):
        raise UsageError(
            f"backup {manifest.id} was dumped in {len(manifest.data_parts)} parallel parts, which "
            "are restored whole: drop --table, --schema and --data-only, restore it into "
            "another --target-db and copy what you need from there"
        )


def _check_existing(target: Target, target_exists: bool, options: RestoreOptions) -> None:
    if options.data_only and not target_exists:
        raise UsageError(
            f"--data-only restores into existing tables, and {target.where} does "
            "not exist: restore with --schema-only first, or without --data-only"
        )
    if target_exists and not (options.drop_existing or options.data_only):
        raise TargetExists(
            f"{target.where} already exists and was left as it is: choose "
            "another --target-db, or add --drop-existing to replace it (a safety "
            "backup of it is taken first)"
        )


def select_tables(
    manifest: Manifest, tables: tuple[str, ...], schemas: tuple[str, ...]
) -> list[TableCount]:
    """The manifest's tables that --table and --schema ask for (all when neither is given)."""
    if not tables and not schemas:
        return list(manifest.row_counts)
    chosen = [t for t in manifest.row_counts if t.schema in schemas]
    for name in tables:
        chosen += [t for t in _matching(manifest, name) if t not in chosen]
    for schema in schemas:
        if not any(t.schema == schema for t in manifest.row_counts):
            raise UsageError(f"schema {schema!r} has no tables in backup {manifest.id}")
    return chosen


def _matching(manifest: Manifest, name: str) -> list[TableCount]:
    schema, _, table = name.rpartition(".")
    found = [
        t for t in manifest.row_counts if t.table == table and (not schema or t.schema == schema)
    ]
    if not found:
        known = ", ".join(f"{t.schema}.{t.table}" for t in manifest.row_counts[:20])
        raise UsageError(f"table {name!r} is not in backup {manifest.id} (its tables: {known})")
    if len(found) > 1:
        raise UsageError(f"table {name!r} is in several schemas: name it as SCHEMA.TABLE")
    return found


def _steps(plan: RestorePlan) -> list[str]:
    m, o, t = plan.manifest, plan.options, plan.target
    what = _what(plan)
    sizes = f"({human_bytes(m.stored_bytes)} stored, {human_bytes(m.dump_bytes)} dump)"
    steps = []
    if not streams(plan) and not m.parts:
        steps.append(f"download backup {m.id} of {m.database} {sizes} and check every byte")
    if plan.target_exists and o.safety_backup:
        steps.append(f"take a safety backup of {t.where}")
    if m.parts:
        steps.append(
            f"download backup {m.id} of {m.database} {sizes}: its schema part into a temporary "
            f"file, its {len(m.data_parts)} data parts streamed into pg_restore "
            f"{min(o.jobs, len(m.data_parts))} at a time, checking every byte, to restore "
            f"{what} into a staging database on {pgtools.where(t.server)} (pre-data, data, "
            f"then post-data with pg_restore -j {o.jobs})"
        )
    elif streams(plan):
        steps.append(
            f"download backup {m.id} of {m.database} {sizes} and stream it into pg_restore, "
            f"checking every byte, to restore {what} into a staging database on "
            f"{pgtools.where(t.server)} (no temporary file)"
        )
    elif o.data_only:
        steps.append(f"restore {what} into {t.where} in one transaction")
    else:
        steps.append(
            f"restore {what} into a staging database on {pgtools.where(t.server)} "
            f"with pg_restore -j {o.jobs}"
        )
    steps.append("compare exact row counts with the manifest")
    if plan.target_exists and not o.data_only:
        steps.append(f"drop the old {t.database} and rename the staging database to it")
    elif not o.data_only:
        steps.append(f"rename the staging database to {t.database}")
    return steps


def _what(plan: RestorePlan) -> str:
    o = plan.options
    scope = "schema only" if o.schema_only else "data only" if o.data_only else "schema and data"
    if o.tables or o.schemas:
        return f"{len(plan.selection)} selected tables ({scope})"
    return f"every table ({scope})"


def streams(plan: RestorePlan) -> bool:
    """Whether this restore streams from the bucket into pg_restore, with no temporary file:
    a whole restore into a staging database with one job (pg_restore -j needs a file)."""
    o = plan.options
    return o.jobs == 1 and not (o.data_only or o.tables or o.schemas)


@dataclass(frozen=True)
class _Source:
    """Where pg_restore reads the dump: the checked temporary file, or (dump None) the bucket."""

    pg_restore: str
    dump: Path | None
    load: Load  # pg_restore with these arguments into this database, from the dump or the bucket


def execute(ctx: Context, plan: RestorePlan, say: Say) -> RestoreResult:
    started, clock = datetime.now(UTC), time.monotonic()
    dump: Path | None = None
    try:
        # before anything starts: it may not fit
        pg_restore, lenient = _pick_pg_restore(ctx, plan, say)
        if plan.manifest.parts:
            safety = _safety_backup(ctx, plan, say)
            source = _Source(pg_restore, None, _from_parts(ctx, plan, pg_restore, lenient))
        elif streams(plan):
            safety = _safety_backup(ctx, plan, say)
            source = _Source(pg_restore, None, _streamed(ctx, plan, pg_restore, lenient))
        else:
            dump = _download(ctx, plan, say)
            safety = _safety_backup(ctx, plan, say)
            source = _Source(pg_restore, dump, _from_file(pg_restore, dump))
        counts = _restore(ctx, plan, source, say)
    except BaseException as exc:
        _audit(ctx, plan, started, exc)
        raise
    finally:
        if dump is not None:
            dump.unlink(missing_ok=True)
    _audit(ctx, plan, started, None)
    return RestoreResult(plan, counts, safety, time.monotonic() - clock)


def _download(ctx: Context, plan: RestorePlan, say: Say) -> Path:
    """The checked dump in a temporary file (the caller removes it)."""
    directory = temp_dir(ctx.settings.restore.tmpdir)
    check_space(directory, plan.manifest)
    say(plan.steps[0])

    def fetch(c: Context) -> Path:
        progress = Progress(f"download {plan.manifest.id}", total=plan.manifest.dump_bytes)
        try:
            manifest, storage = _manifest(plan, c), c.settings.storage
            return fetch_dump(c.repository(), storage, manifest, directory, progress.advance)
        finally:
            progress.close()

    return plan.reader.read(fetch)


def _manifest(plan: RestorePlan, c: Context) -> Manifest:
    """The backup's manifest in the repository `c` reads: once moved to a copy, every object
    comes from the copy's manifest, never the primary's."""
    return plan.manifest if c is plan.read_from else load_manifest(c, plan.record)


def _streamed(ctx: Context, plan: RestorePlan, pg_restore: str, lenient: bool) -> Load:
    def load(target: Target, args: list[str]) -> None:
        def attempt(c: Context) -> None:
            manifest = _manifest(plan, c)
            progress = Progress(f"restore {manifest.id}", total=manifest.dump_bytes)
            try:
                stream.run(
                    c.repository(),
                    c.settings.storage,
                    manifest,
                    pg_restore,
                    target,
                    args,
                    lenient=lenient,
                    on_progress=progress.advance,
                )
            finally:
                progress.close()

        # A stream cut off by a failed check leaves part of the dump in the staging database:
        # it is dropped and made again, empty, before the copy's stream begins.
        plan.reader.read(attempt, restart=lambda: _recreate(plan, target))

    return load


def _from_parts(ctx: Context, plan: RestorePlan, pg_restore: str, lenient: bool) -> Load:
    o = plan.options

    def load(target: Target, args: list[str]) -> None:
        def attempt(c: Context) -> None:
            manifest = _manifest(plan, c)
            restoring = parts.PartsRestore(
                c.repository(),
                c.settings.storage,
                manifest,
                pg_restore,
                o.jobs,
                lenient,
                c.settings.restore.tmpdir,
            )
            progress = Progress(f"restore {manifest.id}", total=manifest.dump_bytes)
            try:
                parts.run(restoring, target, args, progress.advance, schema_only=o.schema_only)
            finally:
                progress.close()

        # As a stream: a part that fails its check mid-way leaves the staging database half
        # filled; it is made again, empty, before the copy's parts are read (readfrom.py).
        plan.reader.read(attempt, restart=lambda: _recreate(plan, target))

    return load


def _recreate(plan: RestorePlan, staging: Target) -> None:
    with targets.maintenance(plan.target) as conn:
        ddl.drop_database(conn, staging.database)
        ddl.create_database(conn, staging.database)


def _from_file(pg_restore: str, dump: Path) -> Load:
    def load(target: Target, args: list[str]) -> None:
        pgrestore.run(pg_restore, target, dump, args)

    return load


def _safety_backup(ctx: Context, plan: RestorePlan, say: Say) -> str | None:
    if not (plan.target_exists and plan.options.safety_backup):
        return None
    say(f"take a safety backup of {plan.target.where}")
    request = BackupRequest(
        database=plan.target.database,
        description=f"safety backup before restoring {plan.manifest.id} over it",
        tags=(SAFETY_TAG,),  # a safety backup: no card, no staleness alert, its own retention
        source=plan.target.server,
    )
    manifest = run_backup(ctx.writer(), request)  # as of a moment: into the live repository
    say(
        f"safety backup {manifest.id} of {plan.target.database} taken "
        f"({human_bytes(manifest.stored_bytes)}); restore it with: permafrost restore "
        f"{manifest.id} --target-db {plan.target.database} --drop-existing"
    )
    return manifest.id


def _pick_pg_restore(ctx: Context, plan: RestorePlan, say: Say) -> tuple[str, bool]:
    """pg_restore of the target server's major when it reads the dump (postgres/installations),
    and whether it is 17 or newer on an older server (which refuses its transaction_timeout)."""
    with targets.maintenance(plan.target) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    target_major = int(row[0]) // 10000 if row else 0
    choice = installations.for_restore(
        installations.installed(ctx.settings.pg_bin_dirs),
        target_major,
        _major(plan.manifest.tool_version),
        _major(plan.manifest.server_version),
    )
    if choice.warning:
        say(f"warning: {choice.warning}")
    say(
        f"pg_restore {choice.version} ({choice.path}) into PostgreSQL {target_major}; "
        f"the dump is of PostgreSQL {plan.manifest.server_version.split()[0]}, "
        f"written by pg_dump {plan.manifest.tool_version}"
    )
    return choice.path, choice.major >= 17 > target_major


def _restore(
    ctx: Context, plan: RestorePlan, source: _Source, say: Say
) -> dict[tuple[str, str], int | None]:
    if plan.options.data_only:
        assert source.dump is not None  # --data-only never streams: it writes into the target
        pg_restore, dump = source.pg_restore, source.dump
        say(f"restore {_what(plan)} into {plan.target.where} in one transaction")
        pgrestore.run(
            pg_restore, plan.target, dump, _data_only_args(plan), _toc(pg_restore, plan, dump)
        )
        return _check_counts(ctx, plan, plan.target)
    staging = plan.target.with_database(targets.staging_name(plan.target.database))
    with targets.maintenance(plan.target) as conn:
        ddl.create_database(conn, staging.database)
    try:
        how = _how(plan, source)
        say(f"restore {_what(plan)} into staging database {staging.database} (pg_restore {how})")
        early = _early_counts(plan, staging)
        try:
            _restore_into(source, plan, staging, say)
        finally:
            checked = early.stop() if early is not None else {}
        counts = _check_counts(ctx, plan, staging, checked)
    except BaseException:
        with targets.maintenance(plan.target) as conn:
            ddl.drop_database(conn, staging.database)
        raise
    _swap(plan, staging, say)
    return counts


def _how(plan: RestorePlan, source: _Source) -> str:
    if plan.manifest.parts:
        count = len(plan.manifest.data_parts)
        return f"of {count} data parts streamed, {min(plan.options.jobs, count)} at a time"
    return "streamed, no temporary file" if source.dump is None else f"-j {plan.options.jobs}"


def _restore_into(source: _Source, plan: RestorePlan, staging: Target, say: Say) -> None:
    o = plan.options
    args = [] if source.dump is None else [f"--jobs={o.jobs}"]
    args += ["--schema-only"] if o.schema_only else []
    args += ["--no-owner", "--no-acl"] if o.no_owner else []
    if not (o.tables or o.schemas):
        source.load(staging, args)
        return
    pg_restore, dump = source.pg_restore, source.dump
    assert dump is not None  # a selection never streams: it reads the table of contents twice
    selection = pgrestore.select_toc(
        pgrestore.list_toc(pg_restore, dump), plan.manifest.row_counts, _keys(plan.selection)
    )
    pgrestore.run(pg_restore, staging, dump, args, selection.main)
    targets.drop_tables_except(staging, _keys(plan.selection))
    if selection.foreign_key_count:
        stderr = pgrestore.run(
            pg_restore, staging, dump, args[1:], selection.foreign_keys, stop_on_error=False
        )
        skipped = pgrestore.error_count(stderr)
        if skipped:
            say(
                f"{skipped} foreign keys point at tables outside the selection and were "
                "not restored"
            )


def _data_only_args(plan: RestorePlan) -> list[str]:
    args = ["--data-only", "--single-transaction", "--disable-triggers"]
    return args + (["--no-owner", "--no-acl"] if plan.options.no_owner else [])


def _toc(pg_restore: str, plan: RestorePlan, dump: Path) -> str | None:
    if not (plan.options.tables or plan.options.schemas):
        return None
    selection = pgrestore.select_toc(
        pgrestore.list_toc(pg_restore, dump), plan.manifest.row_counts, _keys(plan.selection)
    )
    return selection.main


def _keys(tables: list[TableCount]) -> set[tuple[str, str]]:
    return {(t.schema, t.table) for t in tables}


def _early_counts(plan: RestorePlan, staging: Target) -> EarlyCounts | None:
    """Counts taken while pg_restore works (restore/early_counts.py): for a whole restore, whose
    tables are final once loaded (a selection drops tables afterwards)."""
    o = plan.options
    if o.tables or o.schemas or o.schema_only:
        return None
    expected = {(t.schema, t.table): _expected(plan, t) for t in plan.selection}
    connect = partial(pgtools.connect, staging.server, staging.database, autocommit=True)
    return EarlyCounts(connect, plan.selection, expected).start()


def _check_counts(
    ctx: Context,
    plan: RestorePlan,
    where: Target,
    checked: dict[tuple[str, str], int] | None = None,
) -> dict[tuple[str, str], int | None]:
    checked = checked or {}
    rest = [t for t in plan.selection if (t.schema, t.table) not in checked]
    counts = {**checked, **targets.count_rows(where, rest)}
    wrong = [t for t in plan.selection if counts[(t.schema, t.table)] != _expected(plan, t)]
    if wrong:
        names = ", ".join(f"{t.schema}.{t.table}" for t in wrong[:5])
        error = RowCountMismatch(
            f"restored rows differ from the manifest in {len(wrong)} "
            f"tables ({names}); {plan.target.where} was left as it was"
        )
        error.counts = counts
        _record_check(ctx, plan, str(error), counts)
        raise error
    _record_check(ctx, plan, None, counts)
    return counts


def _expected(plan: RestorePlan, table: TableCount) -> int:
    return 0 if plan.options.schema_only else table.rows


def _record_check(
    ctx: Context, plan: RestorePlan, error: str | None, counts: dict[tuple[str, str], int | None]
) -> None:
    if not plan.options.record_checks:
        return
    now = datetime.now(UTC)
    details = {"target": plan.target.where, "tables": len(counts)}
    ctx.record(
        lambda c: c.record_verification(plan.manifest.id, "restore", now, now, error, details),
        "the row-count check is not recorded",
    )


def _swap(plan: RestorePlan, staging: Target, say: Say) -> None:
    with targets.maintenance(plan.target) as conn:
        if plan.target_exists:
            say(f"drop the old {plan.target.database}")
            ddl.drop_database(conn, plan.target.database)
        ddl.rename_database(conn, staging.database, plan.target.database)
    say(f"rename {staging.database} to {plan.target.database}")


def _major(version: str) -> int:
    with contextlib.suppress(ValueError):
        return int(version.split(".")[0])
    return 0


def _audit(ctx: Context, plan: RestorePlan, started: datetime, error: BaseException | None) -> None:
    result = (
        "succeeded"
        if error is None
        else (str(error) if isinstance(error, PermafrostError) else type(error).__name__)
    )
    details = {
        "database": plan.manifest.database,
        "target": plan.target.where,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "result": result,
        "tables": len(plan.selection),
        "schema_only": plan.options.schema_only,
        "data_only": plan.options.data_only,
        **plan.reader.details(),
    }
    ctx.record(
        lambda c: c.audit(actor(), "restore", plan.manifest.id, details),
        "this restore is not in the audit log",
    )
