"""Point-in-time recovery: a base backup, the archived WAL, and a PostgreSQL server to replay it.

The order is the operator's safety: everything that can be refused is refused before a byte is
downloaded (no base backup early enough, a target outside the recoverable window, a missing
segment, a target database that exists, a data directory that is not empty). Then the base
backup is downloaded, unpacked and checked against PostgreSQL's own backup_manifest with
pg_verifybackup; recovery settings are written (restore_command through `permafrost wal-fetch`,
the target, recovery_target_action = 'promote', archive_mode off so the recovered server never
archives into the source's WAL); a server is started on it and watched through its log until
it promotes; the moment actually reached is read from what PostgreSQL reports.

With --target-dir the recovered data directory is the product, left running or stopped. With
--target-db its databases are copied into a database on another server (pg_dump | pg_restore
into a staging database, row counts compared, then renamed), and the temporary server and
directory are removed: this is how a managed database gets point-in-time recovery.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from permafrost import layout, pgtools, walarchive, walnames
from permafrost.backups import check_data_object, check_hashes
from permafrost.context import Context
from permafrost.errors import (
    BackupNotFound,
    ConfigError,
    InsufficientSpace,
    IntegrityError,
    PermafrostError,
    TargetError,
    TargetExists,
    UsageError,
)
from permafrost.manifest import TableCount
from permafrost.pipeline import Opened
from permafrost.progress import human_bytes
from permafrost.settings import SourceSettings, wal_fetch_env
from permafrost.storage.transfer import read_object
from permafrost.walarchive import Archive, BaseBackup
from permafrost.walnames import Segment
from restore import target as targets

Say = Callable[[str], None]
MARGIN = 256 * 1024 * 1024
BEGIN_MARK = "# permafrost pitr: recovery settings (removed after promotion)"
END_MARK = "# permafrost pitr: end of recovery settings"


@dataclass(frozen=True)
class RecoveryTarget:
    kind: str  # time, lsn, name, latest
    text: str = ""
    time: datetime | None = None
    lsn: int | None = None

    def describe(self) -> str:
        if self.kind == "time" and self.time is not None:
            return f"time {self.time.isoformat()}"
        if self.kind == "lsn" and self.lsn is not None:
            return f"LSN {walnames.format_lsn(self.lsn)}"
        if self.kind == "name":
            return f"restore point {self.text!r}"
        return "the end of the archived WAL"

    def settings(self) -> dict[str, str]:
        if self.kind == "time" and self.time is not None:
            return {"recovery_target_time": self.time.isoformat(sep=" ")}
        if self.kind == "lsn" and self.lsn is not None:
            return {"recovery_target_lsn": walnames.format_lsn(self.lsn)}
        if self.kind == "name":
            return {"recovery_target_name": self.text}
        return {}


def parse_time(text: str) -> datetime:
    """ISO 8601; without an offset, the local time zone (TZ) of this process."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--target-time {text!r} is not a time: use ISO 8601, like "
            "2026-11-22T03:15:00Z or '2026-11-22 03:15:00+01:00'"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


def recovery_target(
    time_: str | None, lsn: str | None, name: str | None, latest: bool
) -> RecoveryTarget:
    if time_ is not None:
        return RecoveryTarget("time", time_, time=parse_time(time_).astimezone(UTC))
    if lsn is not None:
        try:
            return RecoveryTarget("lsn", lsn, lsn=walnames.parse_lsn(lsn))
        except ValueError as exc:
            raise UsageError(f"--target-lsn: {exc}") from None
    if name is not None:
        if not name or len(name) > 63 or "'" in name:
            raise UsageError("--target-name must be a restore point name of 1 to 63 characters")
        return RecoveryTarget("name", name)
    assert latest
    return RecoveryTarget("latest")


@dataclass(frozen=True)
class Window:
    """From the end of the oldest base backup to the newest archived, unbroken WAL."""

    start: datetime
    end: datetime | None
    start_lsn: int
    end_segment: Segment | None

    def __str__(self) -> str:
        end = self.end.isoformat() if self.end else "(no WAL archived after the base backup)"
        return f"{self.start.isoformat()} to {end}"


@dataclass
class PitrPlan:
    cluster: str
    target: RecoveryTarget
    base: BaseBackup
    window: Window
    archive: Archive
    gap: Segment | None  # the first segment missing after the base backup, if any
    later_timelines: bool


def plan_pitr(
    ctx: Context, cluster: str, target: RecoveryTarget, base_id: str | None = None
) -> PitrPlan:
    repo = ctx.repository()
    bases = walarchive.base_backups(repo, cluster)
    if not bases:
        raise BackupNotFound(
            f"cluster {cluster} has no base backup in {ctx.storage.url}: take one with "
            "`permafrost backup --kind base` (and archive WAL) before point-in-time recovery"
        )
    size = bases[-1].segment_size
    archive = walarchive.list_archive(repo, cluster, size)
    if base_id is not None:
        chosen = [b for b in bases if b.id == base_id]
        if not chosen:
            raise BackupNotFound(
                f"no base backup {base_id} of cluster {cluster}; "
                f"there are: {', '.join(b.id for b in bases)}"
            )
        base = chosen[0]
    else:
        base = _choose_base(bases, target)
    missing = walarchive.first_missing(archive, base.start, base.stop)
    if missing is not None:
        raise IntegrityError(
            f"base backup {base.id} cannot be restored: WAL segment {archive.name(missing)} "
            f"is missing from the bucket ({_wal_key(ctx, cluster, archive, missing)})"
        )
    newest = archive.newest(base.timeline) or base.stop
    gap = walarchive.first_missing(archive, base.stop.next(), newest)
    last_good = Segment(base.timeline, gap.number - 1) if gap else newest
    end_time = archive.archived_at(last_good)
    if end_time is not None:
        end_time += timedelta(seconds=1)  # object times are whole seconds; the WAL came first
    window = Window(bases[0].stop_time, end_time, bases[0].stop_lsn, last_good)
    later = any(t > base.timeline for t in archive.timelines)
    plan = PitrPlan(cluster, target, base, window, archive, gap, later)
    _check_window(ctx, plan, bases)
    return plan


def _choose_base(bases: list[BaseBackup], target: RecoveryTarget) -> BaseBackup:
    if target.kind == "time" and target.time is not None:
        moment = target.time
        usable = [b for b in bases if b.stop_time < moment]
    elif target.kind == "lsn" and target.lsn is not None:
        lsn = target.lsn
        usable = [b for b in bases if b.stop_lsn <= lsn]
    else:
        usable = bases
    if not usable:
        oldest = bases[0]
        raise UsageError(
            f"{target.describe()} is before the end of the oldest base backup "
            f"({oldest.id}, consistent from {oldest.stop_time.isoformat()} at LSN "
            f"{walnames.format_lsn(oldest.stop_lsn)}): no base backup can reach it"
        )
    return usable[-1]


def _check_window(ctx: Context, plan: PitrPlan, bases: list[BaseBackup]) -> None:
    target, window, archive = plan.target, plan.window, plan.archive
    gap_text = ""
    if plan.gap is not None:
        gap_text = (
            f": WAL segment {archive.name(plan.gap)} is missing from the bucket "
            f"({_wal_key(ctx, plan.cluster, archive, plan.gap)})"
        )
    if target.kind == "time" and target.time is not None:
        if window.end is None or target.time > window.end:
            reason = gap_text or ": that WAL is not archived (yet)"
            raise UsageError(
                f"{target.describe()} is past the newest archived WAL{reason}; "
                f"the recoverable window is {window}"
            )
    elif target.kind == "lsn" and target.lsn is not None:
        needed = walnames.segment_of(target.lsn, plan.base.timeline, plan.base.segment_size)
        if window.end_segment is None or needed > window.end_segment:
            reason = gap_text or f": segment {archive.name(needed)} is not archived (yet)"
            raise UsageError(f"{target.describe()} is past the newest archived WAL{reason}")
    elif target.kind == "latest" and plan.gap is not None:
        after = archive.newest(plan.base.timeline)
        if after is not None and after > plan.gap:
            raise IntegrityError(
                f"recovery to the latest moment would stop at a hole in the archive{gap_text}; "
                f"WAL archived after it could not be replayed. Recover to a --target-time "
                f"up to {window.end.isoformat() if window.end else 'the base backup'}, or put "
                "the segment back"
            )


def _wal_key(ctx: Context, cluster: str, archive: Archive, segment: Segment) -> str:
    return layout.wal_key(
        ctx.settings.storage.prefix, cluster, segment.timeline, archive.name(segment)
    )


# --- Running it ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def for_server(cls, ctx: Context) -> OsUser | None:
        """Who runs the recovery server: this user, or PITR_OS_USER when this user is root."""
        if os.geteuid() != 0:
            return None
        name = ctx.settings.pitr_os_user
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ConfigError(
                f"PostgreSQL refuses to run as root, and PITR_OS_USER={name} does not exist: "
                "create that user or set PITR_OS_USER to the user that owns PostgreSQL"
            ) from None
        return cls(name, entry.pw_uid, entry.pw_gid)


def _as(user: OsUser | None) -> dict[str, Any]:
    return {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}


def _chown(path: Path, user: OsUser | None) -> None:
    if user is not None:
        os.chown(path, user.uid, user.gid)


def permafrost_command() -> list[str]:
    script = Path(sys.executable).parent / "permafrost"
    if script.is_file():
        return [str(script)]
    found = shutil.which("permafrost")
    return [found] if found else [sys.executable, "-m", "permafrost.cli"]


@dataclass
class Server:
    """The recovery server: a postgres process we started on the restored data directory."""

    bin_dir: Path
    data: Path
    run: Path
    port: int
    user: OsUser | None
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    seen: int = 0
    lines: list[str] = field(default_factory=list)

    def start(self, recovering: bool) -> None:
        options = {
            "port": str(self.port),
            "listen_addresses": "",
            "unix_socket_directories": str(self.run),
            "hba_file": str(self.run / "pg_hba.conf"),
            "ident_file": str(self.run / "pg_ident.conf"),
            "archive_mode": "off",
            "hot_standby": "off" if recovering else "on",
            "ssl": "off",
            "logging_collector": "off",
            "log_destination": "stderr",
            "lc_messages": "C",
            "log_line_prefix": "%m ",
            "config_file": str(self.data / "postgresql.conf"),
        }
        command = [str(self.bin_dir / "postgres"), "-D", str(self.data)]
        for name, value in options.items():
            command += ["-c", f"{name}={value}"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=_server_env(),
                cwd=str(self.data),
                start_new_session=True,
                **_as(self.user),
            )

    def new_lines(self) -> list[str]:
        try:
            with self.log.open("rb") as handle:
                handle.seek(self.seen)
                data = handle.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self.seen += end
        lines = data[:end].decode(errors="replace").splitlines()
        self.lines = (self.lines + lines)[-400:]
        return lines

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(2)  # SIGINT: fast shutdown, with a checkpoint
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(3)  # SIGQUIT: immediate
            self.proc.wait(timeout=30)

    def source(self, role: str, database: str = "postgres") -> SourceSettings:
        return SourceSettings(
            host=str(self.run), port=self.port, user=role, password=None, databases=(database,)
        )


def _server_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "LC_ALL": "C"}


@dataclass
class Reached:
    moment: str | None  # what PostgreSQL reported, as it reported it
    stopped_before: str | None
    lsn: str | None
    timeline: int | None
    target_missed: bool = False


def restore_base(ctx: Context, plan: PitrPlan, data: Path, user: OsUser | None, say: Say) -> None:
    m = plan.base.manifest
    free = shutil.disk_usage(data).free
    if free < m.dump_bytes + MARGIN:
        raise InsufficientSpace(
            f"{data} has {human_bytes(free)} free, and base backup {m.id} needs "
            f"{human_bytes(m.dump_bytes + MARGIN)}: free some space or choose another directory"
        )
    check_data_object(ctx, m)
    say(f"download and unpack base backup {m.id} ({human_bytes(m.dump_bytes)}) into {data}")
    tar = subprocess.Popen(
        ["tar", "-x", "--no-same-owner", "-C", str(data), "-f", "-"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **_as(user),
    )
    assert tar.stdin is not None and tar.stderr is not None
    storage = ctx.settings.storage
    blocks = read_object(
        ctx.storage,
        m.objects["data"],
        m.stored_bytes,
        part_size=storage.part_size,
        concurrency=storage.concurrency,
    )
    opened = Opened(blocks, ctx.repository().keyring)
    digest = hashlib.sha256()
    try:
        for chunk in opened.chunks():
            digest.update(chunk)
            tar.stdin.write(chunk)
        tar.stdin.close()
    except BrokenPipeError:
        pass
    except BaseException:
        tar.kill()
        tar.wait()
        raise
    errors = tar.stderr.read().decode(errors="replace").strip()
    if tar.wait() != 0:
        if "No space left" in errors:
            raise InsufficientSpace(f"{data} filled up while unpacking base backup {m.id}")
        raise TargetError(f"unpacking base backup {m.id} failed: {errors.splitlines()[-1:]}")
    check_hashes(m, opened.stored_sha256, digest.hexdigest())


def verify_files(ctx: Context, plan: PitrPlan, data: Path, user: OsUser | None, say: Say) -> None:
    major = int(plan.base.manifest.physical.get("server_version_num", 0)) // 10000
    tool = pgtools.find_tool("pg_verifybackup", ctx.settings.pg_bin_dir, major)
    result = subprocess.run(
        [tool, "--no-parse-wal", "--quiet", str(data)],
        capture_output=True,
        text=True,
        check=False,
        **_as(user),
    )
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no output"])[0]
        raise IntegrityError(
            f"the unpacked base backup {plan.base.id} does not match its backup_manifest: "
            f"{first.removeprefix('pg_verifybackup: ')}"
        )
    files = plan.base.manifest.physical.get("files")
    say(f"pg_verifybackup: every file{f' ({files})' if files else ''} matches backup_manifest")


def configure(
    ctx: Context, plan: PitrPlan, data: Path, run: Path, target: RecoveryTarget | None
) -> None:
    """Recovery settings in postgresql.auto.conf, recovery.signal, and the run directory."""
    for name in ("postgresql.conf", "pg_ident.conf"):
        if not (data / name).exists():  # Debian keeps them in /etc/postgresql
            (data / name).write_text("# written by permafrost pitr\n")
    if not (data / "pg_hba.conf").exists():
        (data / "pg_hba.conf").write_text(
            "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
    (run / "pg_hba.conf").write_text("local all all trust\n")  # a socket only in `run`
    (run / "pg_ident.conf").write_text("")
    env_file = run / "permafrost.env"
    lines = [f"{name}='{value}'" for name, value in wal_fetch_env(ctx.settings).items()]
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    command = [
        *permafrost_command(),
        "--env-file",
        str(env_file),
        "wal-fetch",
        "--cluster",
        plan.cluster,
    ]
    restore_command = " ".join(shlex.quote(part) for part in command) + " %f %p"
    settings = {"restore_command": restore_command}
    if target is not None:
        settings.update(target.settings())
        settings["recovery_target_action"] = "promote"
    settings["recovery_target_timeline"] = str(plan.base.timeline)
    _write_recovery_settings(data, settings)
    (data / "recovery.signal").write_text("")
    for stale in ("standby.signal", "postmaster.pid"):
        (data / stale).unlink(missing_ok=True)


def _write_recovery_settings(data: Path, settings: dict[str, str]) -> None:
    auto = data / "postgresql.auto.conf"
    text = _without_recovery_settings(auto.read_text() if auto.exists() else "")
    block = [BEGIN_MARK]
    block += [
        f"{name} = '{value.replace(chr(39), chr(39) * 2)}'" for name, value in settings.items()
    ]
    block.append(END_MARK)
    auto.write_text(text + "\n".join(block) + "\n")


def _without_recovery_settings(text: str) -> str:
    pattern = re.compile(re.escape(BEGIN_MARK) + r".*?" + re.escape(END_MARK) + r"\n?", re.S)
    return pattern.sub("", text)


_RESTORED = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
_STOPPING = re.compile(r"recovery stopping (before|after) (.*)")
_LAST_TX = re.compile(r"last completed transaction was at log time (.*)")
_TIMELINE = re.compile(r"selected new timeline ID: (\d+)")
_READY = "database system is ready to accept connections"
_MISSED = "recovery ended before configured recovery target was reached"


def watch_recovery(server: Server, say: Say) -> Reached:
    """Follow the server's log until it promotes (or dies); say how far replay has got."""
    reached = Reached(None, None, None, None)
    last_segment = None
    last_report = time.monotonic()
    while True:
        for line in server.new_lines():
            if match := _RESTORED.search(line):
                last_segment = match.group(1)
            elif match := _STOPPING.search(line):
                reached.stopped_before = f"{match.group(1)} {match.group(2)}"
            elif match := _LAST_TX.search(line):
                reached.moment = match.group(1).strip()
            elif match := _TIMELINE.search(line):
                reached.timeline = int(match.group(1))
            elif _MISSED in line:
                reached.target_missed = True
            elif _READY in line:
                return reached
        if not server.alive():
            for line in server.new_lines():
                if _MISSED in line:
                    reached.target_missed = True
            raise RecoveryFailed(reached, last_segment, _fatal(server.lines))
        if last_segment and time.monotonic() - last_report > 5:
            say(f"replaying WAL: {last_segment}")
            last_report = time.monotonic()
        time.sleep(0.2)


def _fatal(lines: list[str]) -> str:
    ours = [line for line in lines if line.startswith("permafrost: error:")]
    if ours:
        return ours[-1].removeprefix("permafrost: error: ")
    picked = [line for line in lines if "FATAL:" in line or "PANIC:" in line]
    text = (picked or lines or ["the server exited without a message"])[-1]
    return re.sub(r"^\S+ \S+ \S+ ", "", text).strip()


class RecoveryFailed(PermafrostError):
    def __init__(self, reached: Reached, last_segment: str | None, message: str) -> None:
        super().__init__(message)
        self.reached = reached
        self.last_segment = last_segment


@contextlib.contextmanager
def connected(server: Server, roles: list[str], database: str = "postgres") -> Iterator[object]:
    last: Exception | None = None
    for role in roles:
        try:
            conn = pgtools.connect(server.source(role, database), database, autocommit=True)
        except PermafrostError as exc:
            last = exc
            continue
        try:
            yield conn
        finally:
            conn.close()
        return
    raise TargetError(f"cannot connect to the recovered server: {last}")


def roles_to_try(ctx: Context, user: OsUser | None) -> list[str]:
    names = [ctx.settings.source.user, "postgres", user.name if user else None]
    names.append(pwd.getpwuid(os.geteuid()).pw_name)
    out: list[str] = []
    for name in names:
        if name and name not in out:
            out.append(name)
    return out


def check_runnable(user: OsUser | None, run: Path) -> None:
    """restore_command runs as the server's OS user: that user must be able to run us."""
    if user is None:
        return
    command = [*permafrost_command(), "--version"]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            check=False,
            cwd=str(run),
            timeout=60,
            **_as(user),
        )
        ok = result.returncode == 0
    except OSError:
        ok = False
    if not ok:
        raise ConfigError(
            f"PostgreSQL runs restore_command as the OS user {user.name}, who cannot run "
            f"{command[0]}: install Permafrost where that user can read it (./setup.sh builds "
            ".venv on the system Python), or run pitr as that user"
        )


def prepare_dir(path: Path, user: OsUser | None, what: str) -> bool:
    """Create or accept an empty directory owned by the server user; True if we created it."""
    created = False
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{what} {path} is not a directory")
        if any(path.iterdir()):
            raise TargetExists(
                f"{what} {path} is not empty: pitr never writes over files; choose a new or "
                "empty directory"
            )
    else:
        try:
            path.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise TargetError(f"cannot create {what} {path}: {exc.strerror}") from None
        created = True
    path.chmod(0o700)
    _chown(path, user)
    if user is not None:
        probe = subprocess.run(
            ["test", "-w", str(path), "-a", "-x", str(path)],
            check=False,
            **_as(user),
        )
        if probe.returncode != 0:
            raise TargetError(
                f"the OS user {user.name} cannot write {path}: a parent directory is private "
                "to this user; choose a directory under /var/lib or /srv"
            )
    return created


def empty_dir(path: Path, remove: bool) -> None:
    if remove:
        shutil.rmtree(path, ignore_errors=True)
        return
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def work_dir(ctx: Context, user: OsUser | None) -> Path:
    root = Path(ctx.settings.restore_tmpdir or tempfile.gettempdir())
    path = Path(tempfile.mkdtemp(prefix="permafrost-pitr-", dir=root))
    _chown(path, user)
    return path


def finish_settings(data: Path, port: int, socket_dir: str) -> None:
    """After promotion: the recovery block out, the settings a recovered copy must keep in."""
    auto = data / "postgresql.auto.conf"
    text = _without_recovery_settings(auto.read_text() if auto.exists() else "")
    block = [
        "# permafrost pitr: this is a recovered copy. archive_mode stays off so that it never",
        "# archives into the WAL of the server it was recovered from; turn it back on with a",
        "# CLUSTER_NAME of its own.",
        "archive_mode = 'off'",
        f"port = {port}",
        "listen_addresses = 'localhost'",
        f"unix_socket_directories = '{socket_dir}'",
    ]
    auto.write_text(text + "\n".join(block) + "\n")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def user_databases(conn: object) -> list[str]:
    rows = conn.execute(  # type: ignore[attr-defined]
        "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'"
        " ORDER BY datname"
    ).fetchall()
    return [str(row[0]) for row in rows]


def check_target_free(target: targets.Target) -> None:
    with targets.maintenance(target) as conn:
        if targets.exists(conn, target.database):
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
        pg_dump = pgtools.find_tool("pg_dump", ctx.settings.pg_bin_dir, info.server_major)
        pg_restore = pgtools.find_tool("pg_restore", ctx.settings.pg_bin_dir, info.server_major)
        staging = target.with_database(targets.staging_name(target.database))
        with targets.maintenance(target) as conn:
            targets.create(conn, staging.database)
        try:
            say(
                f"copy {database} into {target.where} "
                f"(pg_dump | pg_restore, staging {staging.database})"
            )
            _pipe(pg_dump, pg_restore, source, database, info.snapshot_id, staging, no_owner)
            _compare(counts, staging, database)
        except BaseException:
            with targets.maintenance(target) as conn:
                targets.drop(conn, staging.database)
            raise
    with targets.maintenance(target) as conn:
        if targets.exists(conn, target.database):
            targets.drop(conn, staging.database)
            raise TargetExists(f"database {target.where} appeared while pitr ran; left as it was")
        targets.rename(conn, staging.database, target.database)
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
