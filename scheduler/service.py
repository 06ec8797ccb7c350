"""`permafrost scheduler`: the scheduler container's main process.

One scheduler is active at a time: each instance asks PostgreSQL for an advisory lock on its
own metadata connection. The holder is the leader and runs the jobs (APScheduler cron triggers
in the TZ time zone, with coalescing and a misfire grace); the others wait as standbys and try
again every few seconds, so a standby takes over within a minute of the leader's death (the
server drops a dead leader's session, and so its lock, through TCP keepalives set on it).

Every HEARTBEAT seconds each instance writes its heartbeat row; the leader's carries the next
run of every job, which the monitor shows and watches. A run missed while no scheduler was up
(within SCHEDULE_MISFIRE_GRACE) is run once when a leader starts, however many were missed:
the job runs table is the memory. On SIGTERM no new job starts; running ones get
STOP_GRACE_PERIOD to finish and are then aborted (the upload aborted, the run recorded as
aborted). `backup` tasks from the queue (`POST /backup/run-now`) are taken by the leader.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from permafrost import __version__, layout
from permafrost.catalog.store import TASK_CHANNEL, Catalog
from permafrost.config import schedule
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.errors import CatalogUnavailable, PermafrostError
from permafrost.text import first_line
from scheduler.jobs import Jobs, JobSpec, Say

log = logging.getLogger("permafrost.scheduler")
SCHEDULER_LOCK = 0x73636864  # 'schd'
BACKUP_JOBS = ("backup", "compliance_backup", "base_backup")


class Service:
    def __init__(
        self,
        settings: Settings,
        say: Say,
        *,
        heartbeat: float = 30.0,
        standby_poll: float = 10.0,
        env_file: str | None = None,
    ) -> None:
        self.settings, self.say = settings, say
        self.heartbeat_seconds, self.standby_poll = heartbeat, standby_poll
        self.env_file = env_file
        self.stop = threading.Event()
        self.abort = threading.Event()
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.schedules = schedule.schedules(settings)  # a bad schedule fails here, named
        self.jobs = Jobs(settings, say, self.abort, self.stop)
        self._term = threading.Event()  # the end of the current leadership
        self.specs = self._specs()
        self.zone = ZoneInfo(settings.schedules.timezone)
        self._running: set[str] = set()
        self._running_lock = threading.Lock()

    # --- what runs when ---------------------------------------------------------------------

    def _specs(self) -> list[tuple[JobSpec, schedule.Schedule]]:
        s = self.schedules
        out: list[tuple[JobSpec, schedule.Schedule]] = []
        for db in self.settings.source.databases:
            out.append((JobSpec(f"backup:{db}", "backup", db, "critical"), s["backup"]))
            out.append(
                (
                    JobSpec(f"compliance_backup:{db}", "compliance_backup", db, "critical"),
                    s["compliance_backup"],
                )
            )
        cluster = self.settings.cluster_name
        out.append(
            (
                JobSpec(f"base_backup:{cluster}", "base_backup", cluster, "critical"),
                s["base_backup"],
            )
        )
        out.append((JobSpec("verify", "verify", None), s["verify"]))
        out.append((JobSpec("retention", "retention", None), s["retention"]))
        out.append((JobSpec("lifecycle", "lifecycle", None), s["lifecycle"]))
        return [(spec, sched) for spec, sched in out if sched.enabled]

    def describe(self) -> list[str]:
        lines = [f"{spec.id}: {sched.text} ({sched.variable})" for spec, sched in self.specs]
        mode = self.settings.schedules.wal_archiving
        if mode == "push":
            lines.append("wal_switch: every minute (WAL_ARCHIVING=push)")
        elif mode == "receive":
            lines.append("wal-receive: supervised (WAL_ARCHIVING=receive)")
        return lines

    # --- election -----------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if not self.settings.source.databases:
            self.say("DB_NAME names no database: no logical backups are scheduled")
        self.say(
            f"scheduler {self.instance} starting (time zone {self.settings.schedules.timezone})"
        )
        for line in self.describe():
            self.say(f"  {line}")
        pause = 1.0
        while not self.stop.is_set():
            try:
                catalog = self._connect()
            except CatalogUnavailable as exc:
                self.say(f"{exc}; trying again in {pause:.0f} s")
                self.stop.wait(pause)
                pause = min(pause * 2, 30.0)
                continue
            pause = 1.0
            try:
                self._elect(catalog)
            except (CatalogUnavailable, psycopg.Error) as exc:
                self.say(f"lost the metadata store ({first_line(exc)}); standing down")
                self.stop.wait(2)
            finally:
                with contextlib.suppress(Exception):
                    catalog.close()
        if self._running:
            # A job stuck where it cannot be interrupted (pg_dump waiting on a lock): its run
            # stays `running` until the next leader records it as aborted.
            self.say(f"scheduler {self.instance} exiting with {', '.join(sorted(self._running))}")
            sys.stdout.flush()
            os._exit(0)
        self.say(f"scheduler {self.instance} stopped")
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        if not self.stop.is_set():
            self.say(f"received {signal.Signals(signum).name}: no new jobs will start")
        self.stop.set()

    def _connect(self) -> Catalog:
        url = self.settings.metadata_url
        if url is None:
            raise CatalogUnavailable(
                "METADATA_DATABASE_URL is not set: the scheduler needs the metadata store "
                "for its lock, heartbeats and job history"
            )
        try:
            conn = psycopg.connect(
                url.reveal(),
                autocommit=True,
                connect_timeout=5,
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                tcp_user_timeout=30000,  # a write stuck on a dead link fails within 30 s
                application_name="permafrost-scheduler",
            )
            # The server side too: a leader that vanishes without closing its connection loses
            # its session, and so the lock, within about half a minute.
            conn.execute("SET tcp_keepalives_idle = 10")
            conn.execute("SET tcp_keepalives_interval = 5")
            conn.execute("SET tcp_keepalives_count = 3")
        except psycopg.Error as exc:
            raise CatalogUnavailable(
                f"cannot reach the metadata store: {first_line(exc)}"
            ) from None
        catalog = Catalog(conn)
        catalog.migrate()
        return catalog

    def _elect(self, catalog: Catalog) -> None:
        standby = False
        while not self.stop.is_set():
            if catalog.try_lock(SCHEDULER_LOCK, "scheduler"):
                try:
                    self._lead(catalog)
                finally:
                    with contextlib.suppress(Exception):
                        self._beat(catalog, "stopped", {})
                return
            if not standby:
                self.say("another scheduler is the leader: waiting as a standby")
                standby = True
            self._beat(catalog, "standby", {})
            self.stop.wait(self.standby_poll)

    def _beat(self, catalog: Catalog, role: str, next_runs: dict[str, Any]) -> None:
        details = {
            "version": __version__,
            "timezone": self.settings.schedules.timezone,
            "wal_archiving": self.settings.schedules.wal_archiving,
            "databases": list(self.settings.source.databases),
            "schedules": {spec.id: sched.text for spec, sched in self.specs},
            "running": sorted(self._running),
        }
        catalog.heartbeat(
            self.instance, role, socket.gethostname(), os.getpid(), next_runs, details
        )

    # --- leading ------------------------------------------------------------------------------

    def _lead(self, catalog: Catalog) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        self.say(f"scheduler {self.instance} is the leader")
        sched = BackgroundScheduler(
            timezone=self.zone,
            # The WAL switch has a thread of its own: nightly backups must not starve it.
            executors={"default": ThreadPoolExecutor(4), "wal": ThreadPoolExecutor(1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": self.settings.schedules.misfire_grace,
            },
        )
        for spec, cron in self.specs:
            sched.add_job(self._run, cron.trigger, args=[spec], id=spec.id, name=spec.id)
        if self.settings.schedules.wal_archiving == "push":
            sched.add_job(
                self._wal_switch,
                IntervalTrigger(seconds=60),
                id=f"wal_switch:{self.settings.cluster_name}",
                executor="wal",
            )
        sched.start()
        term = self._term = threading.Event()  # the end of this leadership (stop or store lost)
        threads = [threading.Thread(target=self._tasks, args=[term], name="tasks", daemon=True)]
        if self.settings.schedules.wal_archiving == "receive":
            threads.append(
                threading.Thread(target=self._receive, args=[term], name="wal-receive", daemon=True)
            )
        lost = False
        try:
            self._beat(catalog, "leader", _next_runs(sched))
            self._reap(catalog)
            if self.settings.schedules.lifecycle_apply and self.settings.storage.scheme == "s3":
                # Before anything else runs, so the first lifecycle check sees the rules.
                self._run(JobSpec("lifecycle_apply", "lifecycle_apply", None))
            self._catch_up(catalog, sched)
            for thread in threads:
                thread.start()
            while not self.stop.is_set():
                self._beat(catalog, "leader", _next_runs(sched))
                self.stop.wait(self.heartbeat_seconds)
                if not threads[0].is_alive() and not self.stop.is_set():
                    self.say("the task queue reader ended; starting it again")
                    threads[0] = threading.Thread(
                        target=self._tasks, args=[term], name="tasks", daemon=True
                    )
                    threads[0].start()
        except (CatalogUnavailable, psycopg.Error):
            lost = True
            raise
        finally:
            term.set()
            self._wind_down(sched, lost)
            for thread in threads:
                if thread.is_alive():
                    thread.join(timeout=max(self.settings.schedules.stop_grace, 30))

    def _wind_down(self, sched: Any, lost: bool) -> None:
        with contextlib.suppress(Exception):
            sched.shutdown(wait=False)
        if lost:
            return  # running jobs finish on their own connections; a new leader is elected
        self.stop.set()
        grace = self.settings.schedules.stop_grace
        deadline = time.monotonic() + grace
        if self._running:
            running = ", ".join(sorted(self._running))
            self.say(f"waiting up to {grace} s (STOP_GRACE_PERIOD) for {running}")
        while self._running and time.monotonic() < deadline:
            time.sleep(0.5)
        if self._running:
            self.say(f"grace period over: aborting {', '.join(sorted(self._running))}")
            self.abort.set()
            until = time.monotonic() + 60
            while self._running and time.monotonic() < until:
                time.sleep(0.5)

    def _run(self, spec: JobSpec, trigger: str = "schedule") -> None:
        if self.stop.is_set() or self._term.is_set():
            return  # queued before the stop or the lost leadership: not started
        with self._running_lock:
            self._running.add(spec.id)
        try:
            self.jobs.run(spec, trigger)
        except BaseException as exc:  # nothing a job does may end the scheduler
            self.say(f"{spec.id}: unexpected {type(exc).__name__}: {exc}")
        finally:
            with self._running_lock:
                self._running.discard(spec.id)

    def _catch_up(self, catalog: Catalog, sched: Any) -> None:
        """Run once each job whose last scheduled time passed with no run (within the grace)."""
        now = datetime.now(self.zone)
        grace = timedelta(seconds=self.settings.schedules.misfire_grace)
        for spec, cron in self.specs:
            missed = cron.previous_before(now, grace)
            if missed is None or catalog.ran_since(spec.job, spec.database, missed):
                continue
            self.say(f"{spec.id} missed its run at {missed:%Y-%m-%d %H:%M %Z}: running it once now")
            sched.add_job(self._run, args=[spec, "catch-up"], id=f"{spec.id}:catch-up")

    def _reap(self, catalog: Catalog) -> None:
        """Backup runs left 'running' by a process that died: recorded as aborted."""
        for run in catalog.running_runs(list(BACKUP_JOBS)):
            kind = "base" if run["job"] == "base_backup" else "logical"
            name = f"{kind}:{run['database']}"
            from permafrost.backup.job import BACKUP_LOCK

            if catalog.try_lock(BACKUP_LOCK, name):
                catalog.unlock(BACKUP_LOCK, name)
                catalog.abandon_run(
                    run["id"],
                    run.get("backup_id"),
                    "the process running it died before it finished",
                )
                self.say(
                    f"job run {run['id']} ({run['job']} of {run['database']}) recorded as aborted"
                )

    # --- the queue, WAL -----------------------------------------------------------------------

    def _tasks(self, term: threading.Event) -> None:
        """Take `backup` tasks from the queue (the dashboard's "run now"), one at a time."""
        ctx = Context(self.settings)
        listener = None
        try:
            catalog = ctx.catalog()
            listener = psycopg.connect(catalog_url(self.settings), autocommit=True)
            listener.execute(f"LISTEN {TASK_CHANNEL}")
            while not term.is_set():
                task = catalog.claim(["backup"], self.instance)
                if task is None:
                    for _ in listener.notifies(timeout=2, stop_after=1):
                        pass
                    continue
                try:
                    self._task(catalog, task)
                except (CatalogUnavailable, psycopg.Error):
                    raise
                except Exception as exc:  # a bad task fails alone
                    catalog.finish_task(task.id, f"{type(exc).__name__}: {exc}", {})
        except (CatalogUnavailable, psycopg.Error) as exc:
            if not self.stop.is_set():
                self.say(f"the task queue is unreachable ({first_line(exc)}); retrying soon")
        finally:
            if listener is not None:
                listener.close()
            ctx.close()

    def _task(self, catalog: Catalog, task: Any) -> None:
        payload = task.payload or {}
        kind = payload.get("kind", "logical")
        if kind == "base":
            job, names = "base_backup", [payload.get("cluster") or self.settings.cluster_name]
        else:
            job = "compliance_backup" if payload.get("tier") == "compliance" else "backup"
            names = [payload["database"]] if payload.get("database") else []
            names = names or list(self.settings.source.databases)
        try:
            for name in names:
                layout.check_name(name)
        except PermafrostError as exc:
            catalog.finish_task(task.id, str(exc), {})
            return
        if not names:
            catalog.finish_task(task.id, "no database to back up: set DB_NAME", {})
            return
        self.say(f"task {task.id}: {job} of {', '.join(names)} requested by {task.requested_by}")
        results, errors = [], []
        with self._running_lock:
            self._running.add(f"task:{task.id}")
        try:
            for name in names:
                if self.stop.is_set():
                    errors.append(f"{name}: not started, the scheduler is stopping")
                    continue
                outcome = self.jobs.backup(JobSpec(f"{job}:{name}", job, name, "critical"), "task")
                results.append({"database": name, **outcome})
                if "error" in outcome:
                    errors.append(f"{name}: {outcome['error']}")
        finally:
            with self._running_lock:
                self._running.discard(f"task:{task.id}")
        if errors and not any("backup_id" in r for r in results) and self.stop.is_set():
            catalog.requeue(task.id)  # nothing was done: the next leader does it all
            self.say(f"task {task.id}: interrupted by the shutdown, back in the queue")
            return
        catalog.finish_task(task.id, "; ".join(errors) or None, {"backups": results})

    def _wal_switch(self) -> None:
        from permafrost.wal import receive as walreceive

        if self.stop.is_set():
            return
        spec = JobSpec(
            f"wal_switch:{self.settings.cluster_name}", "wal_switch", self.settings.cluster_name
        )
        ctx = Context(self.settings)
        try:
            name = walreceive.switch_if_idle(ctx, self.settings.cluster_name)
            if name:  # a run is recorded when something happened, not every quiet minute
                ctx.record(lambda c: _finished(c, spec, "succeeded", None, {"segment": name}), "")
            ctx.record(lambda c: c.resolve_alert(f"job_failed:{spec.job}:{spec.database}"), "")
        except Exception as exc:
            error = " ".join(str(exc).split())
            ctx.record(lambda c: _finished(c, spec, "failed", error, {}), "")
            self.jobs.alert(ctx, spec, error)
        finally:
            ctx.close()

    def _receive(self, term: threading.Event) -> None:
        """Supervise `permafrost wal-receive`: restart it when it exits, stop it on SIGTERM."""
        command = [sys.executable, "-m", "permafrost", "wal-receive"]
        env = dict(os.environ)
        if self.env_file:
            env["PERMAFROST_ENV_FILE"] = self.env_file
        pause = 1.0
        while not term.is_set():
            self.say("starting wal-receive")
            started = time.monotonic()
            child = subprocess.Popen(command, env=env)
            while child.poll() is None and not term.is_set():
                term.wait(1)
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=max(self.settings.schedules.stop_grace, 30))
                except subprocess.TimeoutExpired:
                    child.kill()
                return
            if time.monotonic() - started > 60:
                pause = 1.0
            self.say(f"wal-receive exited with {child.returncode}; restarting in {pause:.0f} s")
            term.wait(pause)
            pause = min(pause * 2, 30.0)


def _finished(
    catalog: Catalog, spec: JobSpec, status: str, error: str | None, details: dict[str, Any]
) -> None:
    run_id = catalog.job_started(spec.job, spec.database)
    catalog.job_finished(run_id, status, error, details)


def _next_runs(sched: Any) -> dict[str, str]:
    out = {}
    for job in sched.get_jobs():
        if job.next_run_time is not None:
            out[job.id] = job.next_run_time.astimezone(UTC).isoformat()
    return out


def catalog_url(settings: Settings) -> str:
    assert settings.metadata_url is not None
    return settings.metadata_url.reveal()


def say(text: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{stamp} scheduler: {text}", flush=True)
