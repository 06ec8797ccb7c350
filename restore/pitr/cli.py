"""`permafrost pitr`: recover a cluster to a moment, into a directory or into a database."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from permafrost import layout
from permafrost.audit import actor
from permafrost.context import Context
from permafrost.errors import (
    BackupNotFound,
    IntegrityError,
    PermafrostError,
    TargetError,
    UsageError,
)
from permafrost.postgres import installations
from permafrost.postgres import tools as pgtools
from restore import target as targets
from restore.pitr import copy as pitr_copy
from restore.pitr import osuser
from restore.pitr import plan as pitr_plan
from restore.pitr import run as pitr


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser(
        "pitr",
        help="point-in-time recovery of a cluster from a base backup and archived WAL",
        description="Recover the cluster as it was at a moment: the newest base backup that "
        "ends before it, replayed with archived WAL by a PostgreSQL server started for the "
        "purpose. Into a data directory (--target-dir) or, for managed servers, copied into a "
        "database (--target-db).",
    )
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--target-time", metavar="TS", help="ISO 8601; no offset: local time (TZ)")
    when.add_argument("--target-lsn", metavar="LSN", help="like 0/3000148")
    when.add_argument("--target-name", metavar="NAME", help="a pg_create_restore_point() name")
    when.add_argument("--latest", action="store_true", help="everything archived")
    p.add_argument("--cluster", help="the cluster's name in the bucket (default: CLUSTER_NAME)")
    p.add_argument("--base", metavar="ID", help="use this base backup instead of choosing one")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--target-dir", metavar="DIR", help="a new or empty data directory")
    where.add_argument("--target-db", metavar="NAME", help="a new database to copy into")
    p.add_argument("--port", type=int, help="--target-dir: the port of the recovered server")
    p.add_argument("--stop", action="store_true", help="--target-dir: leave the server stopped")
    p.add_argument("--target-url", help="--target-db: the server (default: the source server)")
    p.add_argument(
        "--database", help="--target-db: the database to copy (default: every user database)"
    )
    p.add_argument(
        "--no-owner", action="store_true", help="--target-db: skip ownership and privileges"
    )
    p.set_defaults(handler=run_pitr)


def say(line: str) -> None:
    print(f"- {line}", flush=True)


def run_pitr(ctx: Context, args: argparse.Namespace) -> int:
    if args.target_db is None and (args.target_url or args.database or args.no_owner):
        raise UsageError("--target-url, --database and --no-owner go with --target-db")
    if args.target_dir is None and (args.port or args.stop):
        raise UsageError("--port and --stop go with --target-dir")
    cluster = layout.check_name(args.cluster or ctx.settings.cluster_name, "cluster")
    target = pitr_plan.recovery_target(
        args.target_time, args.target_lsn, args.target_name, args.latest
    )
    if args.target_db is not None:
        layout.check_name(args.target_db, "target database")
        pitr_copy.check_target_free(_target(ctx, args, args.target_db))
    plan = pitr_plan.plan_pitr(ctx, cluster, target, args.base)
    started = datetime.now(UTC)
    try:
        result = _run(ctx, args, plan)
    except BaseException as exc:
        _audit(ctx, args, plan, started, exc)
        raise
    _audit(ctx, args, plan, started, None)
    return result


def _audit(
    ctx: Context,
    args: argparse.Namespace,
    plan: pitr_plan.PitrPlan,
    started: datetime,
    error: BaseException | None,
) -> None:
    if ctx.settings.metadata_url is None:
        return
    result = "succeeded"
    if error is not None:
        result = str(error) if isinstance(error, PermafrostError) else type(error).__name__
    details = {
        "cluster": plan.cluster,
        "target": plan.target.describe(),
        "into": args.target_db or args.target_dir,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "result": result,
    }
    ctx.record(
        lambda c: c.audit(actor(), "pitr", plan.base.id, details),
        "this recovery is not in the audit log",
    )


def _run(ctx: Context, args: argparse.Namespace, plan: pitr_plan.PitrPlan) -> int:
    target = plan.target
    base = plan.base
    say(
        f"recover cluster {plan.cluster} to {target.describe()} from base backup {base.id} "
        f"(consistent from {base.stop_time.isoformat()}); recoverable window: {plan.window}"
    )
    user = osuser.OsUser.for_server(ctx.settings.restore.pitr_os_user)
    work = osuser.work_dir(ctx.settings.restore.tmpdir, user)
    run = work / "run"
    run.mkdir(mode=0o700)
    osuser.chown(run, user)
    created = False
    data = Path(args.target_dir).resolve() if args.target_dir else work / "data"
    server: pitr.Server | None = None
    try:
        created = osuser.prepare_dir(data, user, "--target-dir" if args.target_dir else "data dir")
        osuser.check_runnable(user, run)
        bin_dir, major = _restore_checked(ctx, plan, data, user, say)
        recovery = None if target.kind == "latest" else target
        pitr.configure(ctx, plan, data, run, recovery)
        _own(user, data, run)
        port = args.port if args.port else pitr.free_port()
        server = pitr.Server(bin_dir, data, run, port, user, run / "server.log")
        server.log.touch()
        osuser.chown(server.log, user)
        say(f"start PostgreSQL {major} on it to replay WAL (restore_command: permafrost wal-fetch)")
        server.start(recovering=True)
        reached = _recover(ctx, plan, server, run, user)
        shutil.rmtree(data / "pg_wal" / ".permafrost-prefetch", ignore_errors=True)
        roles = pitr.roles_to_try(ctx, user)
        with pitr.connected(server, roles) as conn:
            row = conn.execute(  # type: ignore[attr-defined]
                "SELECT pg_current_wal_lsn()::text, current_user"
            ).fetchone()
            databases = pitr_copy.user_databases(conn)
        reached.lsn, role = row[0], row[1]
        _report(reached, target)
        if args.target_db is not None:
            _copy(ctx, args, server, role, databases)
            server.stop()
        else:
            _leave(args, server, data, user, role)
        return 0
    except BaseException as exc:
        if server is not None:
            server.stop()
            _keep_log(server, base.id, exc)
        if args.target_dir:
            osuser.empty_dir(data, remove=created)
        raise
    finally:
        # The run directory's env file holds the key: it is never left behind.
        shutil.rmtree(work, ignore_errors=True)


def _restore_checked(
    ctx: Context,
    plan: pitr_plan.PitrPlan,
    data: Path,
    user: osuser.OsUser | None,
    say: pitr.Say = say,
) -> tuple[Path, int]:
    """The base backup downloaded, unpacked and checked in `data`; the server's bin directory
    and major that recover it."""
    base = plan.base
    major = int(base.manifest.physical.get("server_version_num", 0)) // 10000
    bin_dir = Path(
        pgtools.cluster_tool(
            ctx.settings.pg_bin_dirs, "postgres", major, "point-in-time recovery"
        ).path
    ).parent
    pitr.restore_base(ctx, plan, data, user, say)
    unpacked = installations.major_of_data_dir(data)
    if unpacked is not None and unpacked != major:  # a manifest that says otherwise
        raise TargetError(
            f"base backup {base.id} unpacked a PostgreSQL {unpacked} data directory, but its "
            f"manifest says {major}: run it with the PostgreSQL {unpacked} server "
            f"(permafrost verify {base.id} checks the backup)"
        )
    pitr.verify_files(ctx, plan, data, user, say)
    return bin_dir, major


def _recover(
    ctx: Context,
    plan: pitr_plan.PitrPlan,
    server: pitr.Server,
    run: Path,
    user: osuser.OsUser | None,
    say: pitr.Say = say,
) -> pitr.Reached:
    try:
        return pitr.watch_recovery(server, say)
    except pitr.RecoveryFailed as exc:
        target = plan.target
        if exc.reached.target_missed and plan.gap is None and target.kind == "time":
            # Every archived transaction is older than the target: recovering to the target
            # is recovering everything. Replay on to the end of the archive.
            say(
                "the archive holds no transaction after the target time: "
                "replaying to the end of the archived WAL"
            )
            pitr.configure(ctx, plan, server.data, run, None)
            _own(user, server.data, run)
            server.start(recovering=True)
            return pitr.watch_recovery(server, say)
        raise _explain(ctx, plan, exc) from None


def _explain(ctx: Context, plan: pitr_plan.PitrPlan, exc: pitr.RecoveryFailed) -> PermafrostError:
    archive, target = plan.archive, plan.target
    text = str(exc)
    if "before consistent recovery point" in text:
        return UsageError(
            f"{target.describe()} is before base backup {plan.base.id} became consistent: "
            "choose a later target, or an older base backup with --base"
        )
    if exc.reached.target_missed or "could not restore file" in text:
        if plan.gap is not None:
            key = layout.wal_key(
                ctx.settings.storage.prefix,
                plan.wal_cluster,
                plan.gap.timeline,
                archive.name(plan.gap),
            )
            return IntegrityError(
                f"recovery stopped after {exc.last_segment or 'the base backup'}: WAL segment "
                f"{archive.name(plan.gap)} is missing from the bucket ({key})"
            )
        if target.kind == "name":
            return UsageError(
                f"restore point {target.text!r} is not in the WAL after base backup "
                f"{plan.base.id}: check the name, or pass --base with an older base backup"
            )
        return TargetError(f"recovery did not reach {target.describe()}: {text}")
    return TargetError(f"the recovery server failed: {text}")


def _own(user: osuser.OsUser | None, *folders: Path) -> None:
    if user is None:
        return
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            osuser.chown(path, user)


def _report(reached: pitr.Reached, target: pitr_plan.RecoveryTarget) -> None:
    moment = reached.moment or "(no transaction replayed after the base backup)"
    line = f"recovered: the last transaction replayed committed at {moment}"
    line += f"; WAL position {reached.lsn}"
    if reached.timeline:
        line += f", new timeline {reached.timeline}"
    say(line)
    if reached.stopped_before:
        say(f"PostgreSQL stopped {reached.stopped_before} (the first one past the target)")


def _target(ctx: Context, args: argparse.Namespace, name: str) -> targets.Target:
    return targets.resolve_target(ctx.settings, name, args.target_url)


def _copy(
    ctx: Context,
    args: argparse.Namespace,
    server: pitr.Server,
    role: str,
    databases: list[str],
) -> None:
    if args.database:
        if args.database not in databases:
            raise BackupNotFound(
                f"the recovered cluster has no database {args.database}; it has: "
                f"{', '.join(databases) or 'none besides postgres'}"
            )
        chosen = [args.database]
    else:
        chosen = databases
    if not chosen:
        raise UsageError("the recovered cluster has no user database to copy (only postgres)")
    names = {db: args.target_db if len(chosen) == 1 else f"{args.target_db}_{db}" for db in chosen}
    for name in names.values():
        layout.check_name(name, "target database")
        pitr_copy.check_target_free(_target(ctx, args, name))
    for database, name in names.items():
        target = _target(ctx, args, name)
        rows = pitr_copy.copy_database(ctx, server, role, database, target, args.no_owner, say)
        say(f"{database} → {target.where}: {rows} rows, counts match the recovered server")
    print(
        "point-in-time recovery complete: "
        + ", ".join(f"{db} → {name}" for db, name in names.items())
    )


def _leave(
    args: argparse.Namespace, server: pitr.Server, data: Path, user: osuser.OsUser | None, role: str
) -> None:
    server.stop()
    socket_dir = str(data) if len(str(data)) < 80 else tempfile.gettempdir()
    pitr.finish_settings(data, server.port, socket_dir)
    pg_ctl = str(server.bin_dir / "pg_ctl")
    as_user = f"runuser -u {user.name} -- " if user else ""
    stop_hint = f"{as_user}{pg_ctl} -D {data} stop"
    if args.stop:
        print(f"point-in-time recovery complete: data directory {data} (stopped)")
        print(f"start it with: {as_user}{pg_ctl} -D {data} -l {data}/log/server.log start")
        return
    log_dir = data / "log"
    log_dir.mkdir(exist_ok=True, mode=0o700)
    osuser.chown(log_dir, user)
    result = subprocess.run(
        [pg_ctl, "-D", str(data), "-l", str(log_dir / "server.log"), "-w", "-t", "120", "start"],
        capture_output=True,
        text=True,
        check=False,
        env=pitr._server_env(),
        **osuser.as_user(user),
    )
    if result.returncode != 0:
        raise TargetError(
            f"the recovered server did not start again on port {server.port}: "
            f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}; see {log_dir}"
        )
    print(
        f"point-in-time recovery complete: server running on port {server.port}, data "
        f"directory {data}\n  connect: psql -h {socket_dir} -p {server.port} -U {role} postgres"
        f"\n  stop:    {stop_hint}"
    )


def _keep_log(server: pitr.Server, base_id: str, exc: BaseException) -> None:
    if not server.log.exists() or isinstance(exc, KeyboardInterrupt):
        return
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = Path(tempfile.gettempdir()) / f"permafrost-pitr-{base_id}-{stamp}.log"
    try:
        shutil.copyfile(server.log, kept)
    except OSError:
        return
    say(f"the recovery server's log is kept in {kept}")


# --- A recovery into a scratch directory, measured (restore/drills/ runs one) ----------------

_REDO_DONE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")


@dataclass
class ScratchRecovery:
    """What recovering into a scratch directory took and reached."""

    fetch_seconds: float  # download, unpack, pg_verifybackup
    replay_seconds: float  # the recovery server's start to its promotion
    reached: pitr.Reached  # lsn: pg_current_wal_lsn() after promotion
    redo_done: str | None  # where replay ended, as PostgreSQL logged it
    last_replayed: datetime | None  # pg_last_xact_replay_timestamp() after promotion


def recover_in_scratch(
    ctx: Context, plan: pitr_plan.PitrPlan, scratch: Path, say: pitr.Say
) -> ScratchRecovery:
    """Recover plan's base backup to plan's target in `scratch` (data/ and run/ inside it) on a
    private server on a Unix socket, as pitr does, then stop it. The caller removes `scratch`."""
    user = osuser.OsUser.for_server(ctx.settings.restore.pitr_os_user)
    data, run = scratch / "data", scratch / "run"
    osuser.chown(scratch, user)
    run.mkdir(mode=0o700)
    osuser.chown(run, user)
    osuser.prepare_dir(data, user, "scratch directory")
    osuser.check_runnable(user, run)
    started = time.monotonic()
    bin_dir, _ = _restore_checked(ctx, plan, data, user, say)
    fetched = time.monotonic()
    pitr.configure(ctx, plan, data, run, None if plan.target.kind == "latest" else plan.target)
    _own(user, data, run)
    server = pitr.Server(bin_dir, data, run, pitr.free_port(), user, run / "server.log")
    server.log.touch()
    osuser.chown(server.log, user)
    try:
        server.start(recovering=True)
        reached = _recover(ctx, plan, server, run, user, say)
        replayed = time.monotonic()
        with pitr.connected(server, pitr.roles_to_try(ctx, user)) as conn:
            row = conn.execute(  # type: ignore[attr-defined]
                "SELECT pg_current_wal_lsn()::text, pg_last_xact_replay_timestamp()"
            ).fetchone()
    except BaseException as exc:
        server.stop()
        _keep_log(server, plan.base.id, exc)
        raise
    server.stop()
    reached.lsn = row[0]
    done = [m.group(1) for line in server.lines if (m := _REDO_DONE.search(line))]
    return ScratchRecovery(
        fetched - started, replayed - fetched, reached, done[-1] if done else None, row[1]
    )
