"""Recovery as a library: a plan's chain restored into a data directory, its WAL replayed to the
plan's target by a private server (a Unix socket only), and that server handed to the caller.

`permafrost pitr`, the test restore of a base backup (restore/pitr/trial.py) and anything else
that needs a recovered cluster go through `recover_into`:

    plan = plan_pitr(ctx, cluster, recovery_target(when, None, None, False), base_id)
    with recover_into(ctx, plan, data_dir, say) as recovered:
        ...  # recovered.server is running, promoted, at recovered.reached

The server is stopped when the block ends; the data directory stays (None: a scratch one,
removed with the work directory).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from permafrost import layout
from permafrost.context import Context
from permafrost.errors import IntegrityError, PermafrostError, TargetError, UsageError
from permafrost.postgres import installations
from permafrost.postgres import tools as pgtools
from restore.pitr import chain as chains
from restore.pitr import copy as pitr_copy
from restore.pitr import osuser
from restore.pitr import run as pitr
from restore.pitr.plan import PitrPlan

Say = pitr.Say


@dataclass
class Recovered:
    """A promoted recovery server, running, and what it reached."""

    server: pitr.Server
    reached: pitr.Reached
    role: str  # a superuser it answers to
    databases: list[str]  # its user databases
    major: int
    data: Path
    user: osuser.OsUser | None
    restored_at: float = 0.0  # time.monotonic() when the chain was restored (drills time it)


@contextlib.contextmanager
def recover_into(
    ctx: Context, plan: PitrPlan, data: Path | None, say: Say, port: int | None = None
) -> Iterator[Recovered]:
    """Recover into `data` (new or empty; None: a scratch directory, removed at the end)."""
    user = osuser.OsUser.for_server(ctx.settings.restore.pitr_os_user)
    work = osuser.work_dir(ctx.settings.restore.tmpdir, user)
    try:
        target = data if data is not None else work / "data"
        osuser.prepare_dir(target, user, "data dir")
        with recovered(ctx, plan, target, work, user, say, port) as done:
            yield done
    finally:
        # The run directory's env file holds the key: it is never left behind.
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def recovered(
    ctx: Context,
    plan: PitrPlan,
    data: Path,
    work: Path,
    user: osuser.OsUser | None,
    say: Say,
    port: int | None = None,
) -> Iterator[Recovered]:
    """The plan recovered into `data` (prepared: empty, the user's) using `work` for scratch."""
    run = _private_dir(work / "run", user)
    osuser.check_runnable(user, run)
    major = chains.major_of(plan.base.manifest)
    bin_dir = Path(
        pgtools.cluster_tool(
            ctx.settings.pg_bin_dirs, "postgres", major, "point-in-time recovery"
        ).path
    ).parent
    scratch = _private_dir(work / "chain", user)
    restorer = chains.Restorer(
        ctx.repository(), ctx.settings.storage, ctx.settings.pg_bin_dirs, scratch, user, say
    )
    chains.restore(restorer, plan.chain, data)
    shutil.rmtree(scratch, ignore_errors=True)
    _check_major(plan, data, major)
    pitr.configure(ctx, plan, data, run, None if plan.target.kind == "latest" else plan.target)
    own(user, data, run)
    restored_at = time.monotonic()
    server = pitr.Server(bin_dir, data, run, port or pitr.free_port(), user, run / "server.log")
    server.log.touch()
    osuser.chown(server.log, user)
    say(f"start PostgreSQL {major} on it to replay WAL (restore_command: permafrost wal-fetch)")
    server.start(recovering=True)
    try:
        reached = _recover(ctx, plan, server, run, user, say)
        shutil.rmtree(data / "pg_wal" / ".permafrost-prefetch", ignore_errors=True)
        with pitr.connected(server, pitr.roles_to_try(ctx, user)) as conn:
            row = conn.execute(  # type: ignore[attr-defined]
                "SELECT pg_current_wal_lsn()::text, current_user"
            ).fetchone()
            databases = pitr_copy.user_databases(conn)
        reached.lsn = row[0]
        yield Recovered(server, reached, row[1], databases, major, data, user, restored_at)
    except BaseException as exc:
        server.stop()
        _keep_log(server, plan.base.id, exc, say)
        raise
    finally:
        server.stop()


def _private_dir(path: Path, user: osuser.OsUser | None) -> Path:
    path.mkdir(mode=0o700)
    osuser.chown(path, user)
    return path


def _check_major(plan: PitrPlan, data: Path, major: int) -> None:
    unpacked = installations.major_of_data_dir(data)
    if unpacked is not None and unpacked != major:  # a manifest that says otherwise
        raise TargetError(
            f"base backup {plan.base.id} unpacked a PostgreSQL {unpacked} data directory, but its "
            f"manifest says {major}: run it with the PostgreSQL {unpacked} server "
            f"(permafrost verify {plan.base.id} checks the backup)"
        )


def own(user: osuser.OsUser | None, *folders: Path) -> None:
    if user is None:
        return
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            osuser.chown(path, user)


def _recover(
    ctx: Context,
    plan: PitrPlan,
    server: pitr.Server,
    run: Path,
    user: osuser.OsUser | None,
    say: Say,
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
            own(user, server.data, run)
            server.start(recovering=True)
            return pitr.watch_recovery(server, say)
        raise _explain(ctx, plan, exc) from None


def _explain(ctx: Context, plan: PitrPlan, exc: pitr.RecoveryFailed) -> PermafrostError:
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


def _keep_log(server: pitr.Server, base_id: str, exc: BaseException, say: Say) -> None:
    if not server.log.exists() or isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
        return
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = Path(tempfile.gettempdir()) / f"permafrost-pitr-{base_id}-{stamp}.log"
    try:
        shutil.copyfile(server.log, kept)
    except OSError:
        return
    say(f"the recovery server's log is kept in {kept}")
