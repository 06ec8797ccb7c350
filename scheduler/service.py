"""`permafrost scheduler`: the scheduler container's main process.

One scheduler is active at a time (election.py: an advisory lock, heartbeats). The leader runs
the jobs (APScheduler cron triggers in the TZ time zone, with coalescing and a misfire grace),
takes `backup` tasks from the queue (`POST /backup/run-now`, tasks.py) and looks after WAL
(wal.py). With BACKUP_WORKERS=queue it runs no backup itself: a backup job's trigger queues it
(permafrost/worker/queue.py) for the `permafrost worker` processes, which also take the `backup`
tasks and the WAL stream. A run missed while no scheduler was up (within SCHEDULE_MISFIRE_GRACE)
is run once when a leader starts, however many were missed: the job runs table is the memory. On
SIGTERM no new job starts; running ones get STOP_GRACE_PERIOD to finish and are then aborted
(the upload aborted, the run recorded as aborted).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from permafrost import __version__, signals
from permafrost.backup import sources
from permafrost.backup.job import BACKUP_LOCK
from permafrost.catalog.db import STORE_ERRORS
from permafrost.catalog.heartbeats import Role
from permafrost.catalog.jobs import BACKUP_JOBS, BASE_JOBS, JobName
from permafrost.catalog.store import Catalog
from permafrost.config import schedule
from permafrost.config.fleet import cluster_settings
from permafrost.config.settings import Settings
from permafrost.logs import Say, sayer
from permafrost.wal.supervisor import streamed_clusters, supervise_receiver
from permafrost.worker.streams import StreamHolder
from scheduler.election import Election
from scheduler.fleet import fleet_specs
from scheduler.jobs import Jobs, JobSpec, Running
from scheduler.tasks import TaskReader
from scheduler.wal import switch_wal


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
        self.heartbeat_seconds = heartbeat
        self.env_file = env_file
        self.stop = threading.Event()
        self.abort = threading.Event()
        self.schedules = schedule.schedules(settings)  # a bad schedule fails here, named
        self.jobs = Jobs(settings, say, self.abort, self.stop)
        self.fleet = self.jobs.fleet
        self.election = Election(settings, say, self.stop, self._details, standby_poll)
        self.instance = self.election.instance
        self.running = Running()
        self.tasks = TaskReader(settings, say, self.instance, self.jobs, self.running, self.stop)
        self._term = threading.Event()  # the end of the current leadership
        self.specs = self._specs()
        self.zone = ZoneInfo(settings.schedules.timezone)
        self.queued = settings.schedules.backup_workers == "queue"
        self.holders: list[StreamHolder] = []  # the WAL streams this leader tries for (inline)

    # --- what runs when ---------------------------------------------------------------------

    def _specs(self) -> list[tuple[JobSpec, schedule.Schedule]]:
        s = self.schedules
        out: list[tuple[JobSpec, schedule.Schedule]] = []
        per_database = (JobName.BACKUP, JobName.COMPLIANCE_BACKUP)
        for db in self.settings.source.backed_up:  # SQLite files too: the same jobs
            out += [(JobSpec(f"{job}:{db}", job, db, "critical"), s[job]) for job in per_database]
        cluster = self.settings.cluster_name
        base = JobName.BASE_BACKUP
        if self.fleet.from_file is not None:
            out += fleet_specs(self.settings, self.fleet)
        elif self.settings.source.postgres:  # DATABASE_URL=sqlite:///... alone: no cluster
            out.append((JobSpec(f"{base}:{cluster}", base, cluster, "critical"), s[base]))
            inc = JobName.INCREMENTAL_BACKUP
            out.append((JobSpec(f"{inc}:{cluster}", inc, cluster, "critical"), s[inc]))
        for job in (JobName.VERIFY, JobName.RETENTION, JobName.LIFECYCLE):
            out.append((JobSpec(job, job, None), s[job]))
        drill = JobName.PITR_DRILL
        if self.fleet.from_file is None:  # a file's sources' drills: fleet_specs
            out.append((JobSpec(f"{drill}:{cluster}", drill, cluster), s[drill]))
        return [(spec, sched) for spec, sched in out if sched.enabled]

    def describe(self) -> list[str]:
        lines = [f"{spec.id}: {sched.text} ({sched.variable})" for spec, sched in self.specs]
        streamed, pushed = streamed_clusters(self.settings), self._pushed()
        if self.settings.schedules.backup_workers == "queue":
            lines.append("backups: queued for `permafrost worker` processes (BACKUP_WORKERS=queue)")
        for cluster in pushed:
            lines.append(f"wal_switch:{cluster}: every minute (WAL archived by archive_command)")
        where = "the worker holding its WAL stream lock" if self.queued else "the leader"
        for cluster in streamed:
            lines.append(f"wal-receive:{cluster}: streamed by {where}")
        return lines

    def _pushed(self) -> tuple[str, ...]:
        """The clusters whose server pushes WAL (archive_command): the leader switches each."""
        return tuple(s.cluster for s in self.fleet.archived("push") if s.cluster)

    # --- the process --------------------------------------------------------------------------

    def run(self) -> int:
        signals.set_on_signal(self.stop, said=self._on_signal)
        if not self.settings.source.backed_up:
            self.say("DB_NAME names no database: no logical backups are scheduled")
        self.say(
            f"scheduler {self.instance} starting (time zone {self.settings.schedules.timezone})"
        )
        for line in self.describe():
            self.say(f"  {line}")
        self.election.run(self._lead)
        if self.running:
            # A job stuck where it cannot be interrupted (pg_dump waiting on a lock): its run
            # stays `running` until the next leader records it as aborted.
            self.say(f"scheduler {self.instance} exiting with {', '.join(self.running.ids())}")
            sys.stdout.flush()
            os._exit(0)
        self.say(f"scheduler {self.instance} stopped")
        return 0

    def _on_signal(self, signum: int) -> None:
        if not self.stop.is_set():
            self.say(f"received {signal.Signals(signum).name}: no new jobs will start")

    def _details(self) -> dict[str, Any]:
        """What every heartbeat says about this instance."""
        return {
            "version": __version__,
            "timezone": self.settings.schedules.timezone,
            "wal_archiving": self.settings.schedules.wal_archiving,
            "databases": list(self.settings.source.backed_up),
            "sources": list(self.fleet.names),
            "schedules": {spec.id: sched.text for spec, sched in self.specs},
            "running": self.running.ids(),
            "wal_streams": [h.cluster for h in self.holders if h.holding],
        }

    # --- leading ------------------------------------------------------------------------------

    def _lead(self, catalog: Catalog) -> None:
        self.say(f"scheduler {self.instance} is the leader", event="leader", instance=self.instance)
        sched = self._start_jobs()
        term = self._term = threading.Event()  # the end of this leadership (stop or store lost)
        threads = []
        if not self.queued:  # BACKUP_WORKERS=queue: the workers take backups and the WAL stream
            threads.append(self._thread(self.tasks.run, "tasks", term))
            if streamed_clusters(self.settings):
                threads.append(self._thread(self._receive, "wal-receive", term))
        lost = False
        try:
            self.election.beat(catalog, Role.LEADER, _next_runs(sched))
            self._reap(catalog)
            if self.settings.schedules.lifecycle_apply and self.settings.storage.scheme == "s3":
                # Before anything else runs, so the first lifecycle check sees the rules.
                self._run(JobSpec(JobName.LIFECYCLE_APPLY, JobName.LIFECYCLE_APPLY, None))
            self._catch_up(catalog, sched)
            for thread in threads:
                thread.start()
            self._keep_leading(catalog, sched, threads, term)
        except STORE_ERRORS:
            lost = True
            raise
        finally:
            term.set()
            self._wind_down(sched, lost)
            for thread in threads:
                if thread.is_alive():
                    thread.join(timeout=max(self.settings.schedules.stop_grace, 30))

    def _start_jobs(self) -> Any:
        """APScheduler, started, with every enabled job (and the WAL switch in push mode)."""
        # Imported here for start-up cost: `scheduler --check` and standbys never need it.
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        sched = BackgroundScheduler(
            timezone=self.zone,
            # The WAL switch has a thread of its own: nightly backups must not starve it.
            executors={
                "default": ThreadPoolExecutor(4),
                "wal": ThreadPoolExecutor(1),
                "copy": ThreadPoolExecutor(1),
            },
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": self.settings.schedules.misfire_grace,
            },
        )
        for spec, cron in self.specs:
            sched.add_job(self._run, cron.trigger, args=[spec], id=spec.id, name=spec.id)
        for cluster in self._pushed():
            sched.add_job(
                self._wal_switch,
                IntervalTrigger(seconds=60),
                args=[cluster],
                id=f"wal_switch:{cluster}",
                executor="wal",
            )
        if self.settings.copies.destinations:  # its own thread: a long copy delays no backup
            sched.add_job(
                self.jobs.copy_pending, IntervalTrigger(seconds=60), id="copy", executor="copy"
            )
        sched.start()
        return sched

    def _keep_leading(
        self, catalog: Catalog, sched: Any, threads: list[threading.Thread], term: threading.Event
    ) -> None:
        """Beat until stopped, starting the task reader again when it ends (store lost)."""
        while not self.stop.is_set():
            self.election.beat(catalog, Role.LEADER, _next_runs(sched))
            self.stop.wait(self.heartbeat_seconds)
            if threads and not threads[0].is_alive() and not self.stop.is_set():
                self.say("the task queue reader ended; starting it again")
                threads[0] = self._thread(self.tasks.run, "tasks", term)
                threads[0].start()

    def _thread(self, target: Any, name: str, term: threading.Event) -> threading.Thread:
        return threading.Thread(target=target, args=[term], name=name, daemon=True)

    def _wind_down(self, sched: Any, lost: bool) -> None:
        with contextlib.suppress(Exception):
            sched.shutdown(wait=False)
        if lost:
            return  # running jobs finish on their own connections; a new leader is elected
        self.stop.set()
        grace = self.settings.schedules.stop_grace
        if self.running:
            running = ", ".join(self.running.ids())
            self.say(f"waiting up to {grace} s (STOP_GRACE_PERIOD) for {running}")
        if not self._wait_for_running(grace):
            self.say(f"grace period over: aborting {', '.join(self.running.ids())}")
            self.abort.set()
            self._wait_for_running(60)

    def _wait_for_running(self, seconds: float) -> bool:
        """Whether every running job ended within `seconds`."""
        deadline = time.monotonic() + seconds
        while self.running and time.monotonic() < deadline:
            time.sleep(0.5)
        return not self.running

    def _run(self, spec: JobSpec, trigger: str = "schedule") -> None:
        if self.stop.is_set() or self._term.is_set():
            return  # queued before the stop or the lost leadership: not started
        with self.running.holding(spec.id):
            try:
                if self.queued and spec.job in BACKUP_JOBS:
                    self.jobs.queue(spec, trigger)
                    return
                self.jobs.run(spec, trigger)
            except BaseException as exc:  # nothing a job does may end the scheduler
                self.say(
                    f"{spec.id}: unexpected {type(exc).__name__}: {exc}",
                    level=logging.ERROR,
                    event="job_failed",
                    job=spec.id,
                )

    def _catch_up(self, catalog: Catalog, sched: Any) -> None:
        """Run once each job whose last scheduled time passed with no run (within the grace).

        A time before the metadata store was installed was not missed: a stack set up at 02:30
        does not take a second first backup for BACKUP_SCHEDULE's 02:00.
        """
        now = datetime.now(self.zone)
        grace = timedelta(seconds=self.settings.schedules.misfire_grace)
        installed = catalog.installed_at()
        for spec, cron in self.specs:
            missed = cron.previous_before(now, grace)
            if missed is None or (installed is not None and missed < installed):
                continue
            if self._ran_since(catalog, spec, missed):
                continue
            self.say(f"{spec.id} missed its run at {missed:%Y-%m-%d %H:%M %Z}: running it once now")
            sched.add_job(self._run, args=[spec, "catch-up"], id=f"{spec.id}:catch-up")

    def _ran_since(self, catalog: Catalog, spec: JobSpec, missed: datetime) -> bool:
        """Whether the job ran since; a fleet source's job ran when any of its databases'
        did (the ones its file lists, or the ones its last listing found)."""
        if spec.source is None or spec.database is not None:
            return catalog.ran_since(spec.job, spec.database, missed)
        names = sources.known_names(catalog, self.fleet.source(spec.source))
        return any(catalog.ran_since(spec.job, name, missed) for name in names)

    def _reap(self, catalog: Catalog) -> None:
        """Backup runs left 'running' by a process that died: recorded as aborted."""
        for run in catalog.running_runs(list(BACKUP_JOBS)):
            kind = "base" if run["job"] in BASE_JOBS else "logical"
            if self.settings.source.sqlite_source(run["database"]) is not None:
                kind = "sqlite"
            name = f"{kind}:{run['database']}"
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

    # --- WAL ----------------------------------------------------------------------------------

    def _wal_switch(self, cluster: str) -> None:
        if not self.stop.is_set():
            switch_wal(cluster_settings(self.settings, cluster), self.jobs)

    def _receive(self, term: threading.Event) -> None:
        """wal-receive of each streamed cluster under its WAL stream lock, as a worker would
        run it, so a worker started by mistake beside an inline scheduler never streams a
        cluster twice."""
        self.holders = [
            StreamHolder(
                self.settings,
                self.say,
                cluster,
                functools.partial(
                    supervise_receiver, self.settings, self.say, self.env_file, cluster
                ),
                term,
            )
            for cluster in streamed_clusters(self.settings)
        ]
        for thread in [holder.start() for holder in self.holders]:
            thread.join()


def _next_runs(sched: Any) -> dict[str, str]:
    out = {}
    for job in sched.get_jobs():
        if job.next_run_time is not None:
            out[job.id] = job.next_run_time.astimezone(UTC).isoformat()
    return out


say = sayer("scheduler")  # the scheduler's own lines, in LOG_FORMAT on stdout (permafrost/logs.py)
