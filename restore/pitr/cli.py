"""`permafrost pitr`: recover a cluster to a moment, into a directory or into a database."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from permafrost import layout
from permafrost.audit import actor
from permafrost.config.fleet import chosen_cluster, cluster_settings
from permafrost.context import Context
from permafrost.errors import (
    BackupNotFound,
    PermafrostError,
    TargetError,
    UsageError,
)
from permafrost.readfrom import Reader, add_from_argument
from restore import target as targets
from restore.pitr import copy as pitr_copy
from restore.pitr import osuser, recover
from restore.pitr import plan as pitr_plan
from restore.pitr import run as pitr


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser(
        "pitr",
        help="point-in-time recovery of a cluster from a base backup and archived WAL",
        description="Recover the cluster as it was at a moment: the newest base backup (full, "
        "or incremental: its chain is combined) that ends before it, replayed with archived WAL "
        "by a PostgreSQL server started for the purpose. Into a data directory (--target-dir) "
        "or, for managed servers, copied into a database (--target-db).",
    )
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--target-time", metavar="TS", help="ISO 8601; no offset: local time (TZ)")
    when.add_argument("--target-lsn", metavar="LSN", help="like 0/3000148")
    when.add_argument("--target-name", metavar="NAME", help="a pg_create_restore_point() name")
    when.add_argument("--latest", action="store_true", help="everything archived")
    p.add_argument("--cluster", help="the cluster's name in the bucket (default: CLUSTER_NAME)")
    p.add_argument(
        "--source",
        help="the cluster of this SOURCES_FILE source (its `cluster:`); --target-db then "
        "defaults to that source's server",
    )
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
    p.add_argument(
        "--as-of",
        metavar="TIME",
        help="read base backups and WAL as the bucket held them at this moment (ISO 8601; no "
        "offset: local time, TZ), from a versioned bucket's old object versions: what was "
        "deleted or overwritten since comes back",
    )
    add_from_argument(p)
    p.set_defaults(handler=run_pitr)


def say(line: str) -> None:
    print(f"- {line}", flush=True)


def run_pitr(ctx: Context, args: argparse.Namespace) -> int:
    ctx = ctx.as_of(args.as_of)
    if args.target_db is None and (args.target_url or args.database or args.no_owner):
        raise UsageError("--target-url, --database and --no-owner go with --target-db")
    if args.target_dir is None and (args.port or args.stop):
        raise UsageError("--port and --stop go with --target-dir")
    cluster = layout.check_name(chosen_cluster(ctx.settings, args.cluster, args.source), "cluster")
    args.cluster = cluster  # a copy into --target-db goes to the cluster's own server
    target = pitr_plan.recovery_target(
        args.target_time, args.target_lsn, args.target_name, args.latest
    )
    if args.target_db is not None:
        layout.check_name(args.target_db, "target database")
        pitr_copy.check_target_free(_target(ctx, args, args.target_db))
    reader = Reader(ctx, args.read_from)
    plan = reader.read(lambda c: pitr_plan.plan_pitr(c, cluster, target, args.base))
    planned = reader.ctx
    started = datetime.now(UTC)

    def recover(c: Context) -> int:
        # Once moved to a copy, the chain and the WAL come from the copy's own manifests.
        here = plan if c is planned else pitr_plan.plan_pitr(c, cluster, target, args.base)
        return _run(c, args, here)

    try:
        result = reader.read(recover)
    except BaseException as exc:
        _audit(ctx, args, plan, started, exc, reader)
        raise
    _audit(ctx, args, plan, started, None, reader)
    return result


def _audit(
    ctx: Context,
    args: argparse.Namespace,
    plan: pitr_plan.PitrPlan,
    started: datetime,
    error: BaseException | None,
    reader: Reader,
) -> None:
    if ctx.settings.metadata_url is None:
        return
    result = "succeeded"
    if error is not None:
        result = str(error) if isinstance(error, PermafrostError) else type(error).__name__
    details = {
        "cluster": plan.cluster,
        "target": plan.target.describe(),
        "chain": plan.chain.ids(),
        "into": args.target_db or args.target_dir,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "result": result,
        **reader.details(),
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
    say(f"chain: {plan.chain.describe()}")
    if ctx.moment is not None:
        say(f"base backups and WAL read as the bucket held them at {ctx.moment.isoformat()}")
    user = osuser.OsUser.for_server(ctx.settings.restore.pitr_os_user)
    work = osuser.work_dir(ctx.settings.restore.tmpdir, user)
    created = False
    data = Path(args.target_dir).resolve() if args.target_dir else work / "data"
    try:
        created = osuser.prepare_dir(data, user, "--target-dir" if args.target_dir else "data dir")
        with recover.recovered(ctx, plan, data, work, user, say, args.port) as done:
            _report(done.reached, target)
            if args.target_db is not None:
                _copy(ctx, args, done.server, done.role, done.databases)
                done.server.stop()
            else:
                _leave(args, done.server, data, user, done.role)
        return 0
    except BaseException:
        if args.target_dir:
            osuser.empty_dir(data, remove=created)
        raise
    finally:
        # The run directory's env file holds the key: it is never left behind.
        shutil.rmtree(work, ignore_errors=True)


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
    home = cluster_settings(ctx.settings, args.cluster)  # the cluster's own server
    return targets.resolve_target(home, name, args.target_url)


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
