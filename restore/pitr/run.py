"""Point-in-time recovery: a base backup, the archived WAL, and a PostgreSQL server to replay it.

The order is the operator's safety: everything that can be refused is refused before a byte is
downloaded (no base backup early enough, a target outside the recoverable window, a missing
segment or chain member, a target database that exists, a data directory that is not empty).
Then the base backup's chain is restored (restore/pitr/chain.py: downloaded, checked, combined,
checked against PostgreSQL's own backup_manifest with pg_verifybackup); recovery settings are
written (restore_command through `permafrost wal-fetch`, the target, recovery_target_action =
'promote', archive_mode off so the recovered server never archives into the source's WAL); a
server is started on it and watched through its log until it promotes; the moment actually
reached is read from what PostgreSQL reports.

With --target-dir the recovered data directory is the product, left running or stopped. With
--target-db its databases are copied into a database on another server (pg_dump | pg_restore
into a staging database, row counts compared, then renamed), and the temporary server and
directory are removed: this is how a managed database gets point-in-time recovery.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from permafrost.config.settings import SourceSettings, wal_fetch_env
from permafrost.context import Context
from permafrost.errors import PermafrostError, TargetError
from permafrost.postgres import tools as pgtools
from permafrost.readfrom import READING_FROM_COPY
from restore.pitr.osuser import OsUser, as_user, permafrost_command
from restore.pitr.plan import PitrPlan, RecoveryTarget

Say = Callable[[str], None]
BEGIN_MARK = "# permafrost pitr: recovery settings (removed after promotion)"
END_MARK = "# permafrost pitr: end of recovery settings"


# --- Running it ---------------------------------------------------------------------------


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
                **as_user(self.user),
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
    values = _files_in_run(wal_fetch_env(ctx.settings), run)
    lines = [f"{name}='{value}'" for name, value in values.items()]
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    command = [
        *permafrost_command(),
        "--env-file",
        str(env_file),
        "wal-fetch",
        "--cluster",
        plan.wal_cluster,
    ]
    if ctx.moment is not None:  # pitr --as-of: WAL as the bucket held it then, too
        command += ["--as-of", ctx.moment.isoformat()]
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


# Files a storage's settings name (an SFTP key and known_hosts, a GCS service account): the
# recovery server's OS user (PITR_OS_USER when pitr runs as root) may not read them where they
# are, e.g. under /root/.ssh. Each is copied into the run directory, which that user owns.
_FILE_SETTINGS = ("SFTP_KEY_PATH", "SFTP_KNOWN_HOSTS", "GOOGLE_APPLICATION_CREDENTIALS")


def _files_in_run(values: dict[str, str], run: Path) -> dict[str, str]:
    """`values` with each file setting (the primary's, each copy's COPY_<N>_*) pointing at a
    private copy of the file in `run`. One this process cannot read either is left as it is,
    not an error: a copy listed only as a fallback may never be read."""
    moved = dict(values)
    for name, value in values.items():
        if not name.endswith(_FILE_SETTINGS):
            continue
        try:
            data = Path(value).read_bytes()
        except OSError:
            continue  # left as it is: wal-fetch says so if it ever needs that storage
        path = run / f"{name.lower()}.file"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        moved[name] = str(path)
    return moved


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
_OURS = "permafrost: "


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
            elif line.startswith(_OURS) and READING_FROM_COPY in line:
                say(line.removeprefix(_OURS))  # wal-fetch fell back to a copy for a segment
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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
