"""The native stack's supervisor: `python scripts/stack.py supervise`, started by `up`.

It runs each service of run/services.json in a process group (a session) of its own and
restarts one that exits, after a pause that doubles (1 s up to 30 s) while it keeps exiting
soon after it starts; after FAST_CRASHES such fast exits in a row it gives up on that service
and says so in logs/supervisor.log and in `./setup.sh status`. Before a restart, what is left
of the old process group (a pg_receivewal, a wal-receive) is killed, so nothing holds the
replication slot the new one needs. SIGHUP re-reads run/services.json and restarts the services
whose command or settings changed (and the ones it gave up on); SIGTERM stops every group:
SIGTERM, a grace period, then SIGKILL.

The state of each service is in run/NAME.state (JSON: pid, since, restarts, state, note) and
its process group's id in run/NAME.pid, for `status` and `stop`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAST = 10.0  # a run shorter than this is a fast exit
FAST_CRASHES = 5  # fast exits in a row before giving up
MAX_PAUSE = 30.0
STOP_GRACE = 60.0


def log(text: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    print(f"{stamp} UTC supervisor: {text}", flush=True)


def now_iso() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def described(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(
    pgid: int, grace: float = STOP_GRACE, leader: subprocess.Popen[bytes] | None = None
) -> bool:
    """SIGTERM to the whole group, up to `grace` seconds, then SIGKILL. True if it had to kill.

    `leader` is the group's leader when it is our child: polled, so that it is not a zombie
    (a zombie is still a member of its group)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while _poll(leader) and group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not group_alive(pgid):
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    while _poll(leader) and group_alive(pgid) and time.monotonic() < deadline + 10:
        time.sleep(0.1)
    return True


def _poll(leader: subprocess.Popen[bytes] | None) -> bool:
    if leader is not None:
        leader.poll()
    return True


@dataclass
class Service:
    name: str
    spec: dict[str, Any]
    run_dir: Path
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    started: float = 0.0
    restarts: int = 0
    fast_exits: int = 0
    due: float | None = 0.0  # when to (re)start it; None: not at all (given up or stopping)
    state: str = "starting"
    note: str = ""
    since: str = field(default_factory=now_iso)

    def adopt(self) -> None:
        """A service left running by a supervisor that died: watch it rather than start another."""
        try:
            pid = int((self.run_dir / f"{self.name}.pid").read_text())
            old = json.loads((self.run_dir / f"{self.name}.state").read_text())
        except (OSError, ValueError):
            return
        if old.get("digest") == self.spec.get("digest") and group_alive(pid):
            self.pid, self.due, self.state = pid, None, "running"
            self.since, self.restarts = old.get("since", self.since), old.get("restarts", 0)
            self.started = time.monotonic()
            log(f"{self.name} is running already (pid {pid}): watching it")
            self.save()

    def start(self) -> None:
        log_file = (self.log_dir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            self.spec["argv"],
            env=self.spec["env"],
            cwd=self.spec.get("cwd"),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped and killed as a whole
        )
        log_file.close()
        self.pid, self.started, self.due = self.proc.pid, time.monotonic(), None
        self.state, self.since = "running", now_iso()  # the note keeps the last exit
        (self.run_dir / f"{self.name}.pid").write_text(f"{self.pid}\n")
        log(f"started {self.name} (pid {self.pid})")
        self.save()

    def exited(self) -> int | None:
        """The exit code of a leader that has exited, else None."""
        if self.proc is not None:
            return self.proc.poll()
        if self.pid is not None and not group_alive(self.pid):
            return -1000  # adopted: the code is not ours to read
        return None

    def after_exit(self, code: int) -> None:
        lasted = time.monotonic() - self.started
        how = "exited" if code == -1000 else f"exited ({described(code)})"
        if self.pid is not None and group_alive(self.pid):
            os.killpg(self.pid, signal.SIGKILL)  # what is left of it: its children
            how += "; killed what was left of its process group"
        self.proc, self.fast_exits = None, self.fast_exits + 1 if lasted < FAST else 0
        if self.fast_exits >= FAST_CRASHES:
            self.state, self.due = "failed", None
            self.note = (
                f"gave up at {now_iso()}: it exited {self.fast_exits} times in a row within "
                f"{FAST:.0f} s of starting; see {self.log_dir / (self.name + '.log')}, fix the "
                "cause and run ./setup.sh again"
            )
            log(f"{self.name} {how} after {lasted:.0f} s; {self.note}")
        else:
            pause = min(MAX_PAUSE, 2.0 ** max(0, self.fast_exits - 1))
            self.restarts += 1
            self.state, self.due = "restarting", time.monotonic() + pause
            self.note = f"{how} at {now_iso()}"
            log(f"{self.name} {how} after {lasted:.0f} s; restarting in {pause:.0f} s")
        self.save()

    def stop(self) -> None:
        self.due = None
        if self.pid is not None and group_alive(self.pid):
            killed = stop_group(self.pid, leader=self.proc)
            log(f"stopped {self.name}" + (" (killed after the grace period)" if killed else ""))
        if self.proc is not None:
            self.proc.poll()
        self.proc, self.pid, self.state = None, None, "stopped"
        (self.run_dir / f"{self.name}.pid").unlink(missing_ok=True)
        (self.run_dir / f"{self.name}.state").unlink(missing_ok=True)

    def save(self) -> None:
        state = {
            "pid": self.pid,
            "since": self.since,
            "restarts": self.restarts,
            "state": self.state,
            "note": self.note,
            "digest": self.spec.get("digest"),
        }
        path = self.run_dir / f"{self.name}.state"
        path.with_suffix(".tmp").write_text(json.dumps(state))
        path.with_suffix(".tmp").rename(path)


class Supervisor:
    def __init__(self, home: Path) -> None:
        self.run_dir, self.log_dir = home / "run", home / "logs"
        self.services: dict[str, Service] = {}
        self.stopping = self.reloading = False

    def specs(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = json.loads((self.run_dir / "services.json").read_text())
        return found

    def load(self) -> None:
        specs = self.specs()
        for name in [n for n in self.services if n not in specs]:
            self.services.pop(name).stop()
        for name, spec in specs.items():
            service = self.services.get(name)
            if service is None:
                service = self.services[name] = Service(name, spec, self.run_dir, self.log_dir)
                service.adopt()
            elif service.spec != spec or service.state == "failed":
                why = "its settings changed" if service.spec != spec else "asked again"
                log(f"restarting {name}: {why}")
                service.stop()
                service.spec, service.due, service.fast_exits = spec, 0.0, 0

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)
        (self.run_dir / "supervisor.pid").write_text(f"{os.getpid()}\n")
        log(f"supervising (pid {os.getpid()})")
        self.load()
        while not self.stopping:
            if self.reloading:
                self.reloading = False
                self.load()
            self.tick()
            time.sleep(0.3)
        for service in reversed(list(self.services.values())):
            service.stop()
        (self.run_dir / "supervisor.pid").unlink(missing_ok=True)
        log("stopped")
        return 0

    def tick(self) -> None:
        for service in self.services.values():
            if service.due is None and service.state == "running":
                code = service.exited()
                if code is not None:
                    service.after_exit(code)
            if service.due is not None and time.monotonic() >= service.due:
                service.start()

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _reload(self, signum: int, frame: object) -> None:
        self.reloading = True
