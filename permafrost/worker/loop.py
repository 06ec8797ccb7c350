"""The worker's loop: claim a task, run it, record its outcome; any number of workers, on any
machines, against one metadata store.

Each slot (MAX_CONCURRENT of them; the first in the main thread, the others on threads) claims on
a catalog connection of its own, because the claim's advisory lock on the task id is that
session's lease: a worker killed with -9 loses its sessions, and the next worker to look requeues
the task (`requeue_orphans`). The claim keeps the limits across workers (catalog/tasks.py). A
slot sleeps on LISTEN until a task is queued or one finishes (a place may have come free), or
`poll` seconds. A failing task fails alone; a lost metadata store is waited out.

On SIGTERM the main slot's task goes back to the queue at once (KeyboardInterrupt unwinds it);
the other slots are told to stop (a backup aborts at its next progress report and is requeued)
and get STOP_GRACE_PERIOD; a task still running after that is requeued by the next worker to
look, once this process has gone. The worker beats (service_heartbeats, `worker`) from a
thread of its own, naming the tasks in hand and the WAL streams it holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from permafrost.catalog.heartbeats import Beating, Service
from permafrost.catalog.records import TaskRecord
from permafrost.catalog.tasks import UNLIMITED, TaskListener
from permafrost.context import Context
from permafrost.errors import CatalogUnavailable, PermafrostError
from permafrost.logs import Say
from permafrost.worker.streams import StreamHolder

# What runs a task of one kind: its result (kept in tasks.result), or an exception (failed).
# `stopping` is set when the worker shuts down: a long task may end early by raising Interrupted.
Handler = Callable[[Context, TaskRecord, Say, threading.Event], dict[str, Any]]
RECONNECT_MAX = 30.0  # seconds between attempts to reach a lost metadata store, at most
BEAT_SECONDS = 30.0


class Interrupted(Exception):
    """A task stopped by the worker's shutdown before it finished: it goes back to the queue."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
    def __init__(
        self,
        ctx: Context,
        say: Say,
        handlers: Mapping[str, Handler],
        *,
        title: str = "worker",
        poll_seconds: float = 30.0,
        slots: int = 1,
        per_source: int = UNLIMITED,
    ) -> None:
        self.ctx, self.say, self.handlers = ctx, say, dict(handlers)
        self.title, self.poll_seconds = title, poll_seconds
        self.slots, self.per_source = slots, per_source
        self.name = worker_name()
        self.kinds = list(self.handlers)
        self.done = 0
        self.current: dict[int, int] = {}  # slot → the task in hand, for the heartbeat
        self.stopping = threading.Event()
        self.streams: list[StreamHolder] = []

    def stream(self, holder: StreamHolder) -> None:
        """Hold a WAL stream while working (started with the worker, stopped with it)."""
        self.streams.append(holder)

    def run(self, *, once: bool = False) -> int:
        """Work until SIGTERM (or, with once, until the queue is empty).

        A lost metadata store does not end the worker: it says so, waits with a doubling pause
        (1 s to RECONNECT_MAX), connects afresh and goes on; a task it had in hand is requeued
        by the first worker back, because its advisory lock went with the old connection.
        """
        if self.ctx.settings.metadata_url is None:
            self.ctx.catalog()  # not configured is a mistake to report, not an outage to wait out
        self.say(f"{self.title} {self.name} waiting for {', '.join(self.kinds)} tasks")
        beating = self._beating(once)
        threads = [] if once else self._start_others()
        try:
            return self._work(self.ctx, 0, once)
        except KeyboardInterrupt:
            self.say(f"{self.title} {self.name} stopping")
            self._stop(threads)
            if beating is not None:
                beating.stop(clean=True)
                beating = None
            return 0
        finally:
            self.stopping.set()
            if beating is not None:
                beating.stop(clean=False)

    def _start_others(self) -> list[threading.Thread]:
        """The slots after the first, each with its own Context, and the WAL streams."""
        threads = [holder.start() for holder in self.streams]
        for slot in range(1, self.slots):
            ctx = Context(self.ctx.settings)
            thread = threading.Thread(
                target=self._work_quietly, args=[ctx, slot], name=f"slot-{slot}", daemon=True
            )
            thread.start()
            threads.append(thread)
        return threads

    def _stop(self, threads: list[threading.Thread]) -> None:
        """Tell the other slots and the streams to stop; wait STOP_GRACE_PERIOD for them."""
        self.stopping.set()
        deadline = time.monotonic() + self.ctx.settings.schedules.stop_grace
        for thread in threads:
            thread.join(timeout=max(deadline - time.monotonic(), 1))
        left = sorted(self.current.copy().values())
        if left:
            self.say(f"{self.title} {self.name} leaving tasks {left} to be requeued")

    def _beating(self, once: bool) -> Beating | None:
        """The heartbeat thread, started (not for `--once`, a command rather than a service)."""
        if once or self.ctx.settings.metadata_url is None:
            return None
        return Beating(
            self.ctx.settings.metadata_url,
            Service.WORKER,
            self.name,
            self._details,
            every=min(BEAT_SECONDS, self.poll_seconds),
        ).start()

    def _details(self) -> dict[str, Any]:
        tasks = sorted(self.current.copy().values())  # a copy: the slots change it meanwhile
        held = [h.cluster for h in self.streams if h.holding]
        return {
            "kinds": self.kinds,
            "task": tasks[0] if tasks else None,
            "tasks": tasks,
            "slots": self.slots,
            "done": self.done,
            "wal_streams": held,
        }

    def _work_quietly(self, ctx: Context, slot: int) -> None:
        try:
            self._work(ctx, slot, once=False)
        finally:
            ctx.close()

    def _work(self, ctx: Context, slot: int, once: bool) -> int:
        pause = 1.0
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                return self._serve(ctx, slot, once)
            except CatalogUnavailable as exc:
                if once:
                    raise
                if time.monotonic() - started > RECONNECT_MAX:
                    pause = 1.0  # it had been working: a new outage starts from 1 s
                self.say(f"{exc}; connecting again in {pause:.0f} s")
                ctx.forget_catalog()
                self.stopping.wait(pause)
                pause = min(pause * 2, RECONNECT_MAX)
        return 0

    def _serve(self, ctx: Context, slot: int, once: bool) -> int:
        """Claim and run tasks on one metadata connection until stopped (or, once, the queue is
        empty)."""
        catalog = ctx.catalog()
        listener = self._listen()
        try:
            while not self.stopping.is_set():
                if catalog.requeue_orphans():
                    self.say("requeued tasks whose worker had died")
                task = catalog.claim(self.kinds, self.name, self.per_source)
                if task is None:
                    if once:
                        return 0
                    listener.wait(self.poll_seconds)
                    continue
                self._run(ctx, slot, task)
            return 0
        finally:
            with contextlib.suppress(CatalogUnavailable, OSError):
                listener.close()

    def _run(self, ctx: Context, slot: int, task: TaskRecord) -> None:
        catalog = ctx.catalog()
        fields = _fields(task)
        self.say(
            f"task {task.id}: {task.kind} {_subject(task)} started", event="task_taken", **fields
        )
        started = time.monotonic()
        self.current[slot] = task.id
        try:
            result = self.handlers[task.kind](ctx, task, self.say, self.stopping)
        except (KeyboardInterrupt, Interrupted) as exc:
            catalog.requeue(task.id)
            self.say(
                f"task {task.id}: interrupted, back in the queue", event="task_requeued", **fields
            )
            if isinstance(exc, KeyboardInterrupt):
                raise
            return
        except CatalogUnavailable:
            raise
        except PermafrostError as exc:
            catalog.finish_task(task.id, str(exc), {})
            self._finished(f"task {task.id}: failed: {exc}", started, "failed", fields, str(exc))
            return
        except Exception as exc:  # a bug in one task must not stop the worker
            error = f"{type(exc).__name__}: {exc}"
            catalog.finish_task(task.id, error, {})
            self._finished(
                f"task {task.id}: failed unexpectedly: {error}", started, "failed", fields, error
            )
            return
        finally:
            self.current.pop(slot, None)
        catalog.finish_task(task.id, None, result)
        self.done += 1
        took = f"{time.monotonic() - started:.1f} s"
        self._finished(f"task {task.id}: succeeded in {took}", started, "succeeded", fields)

    def _finished(
        self,
        text: str,
        started: float,
        status: str,
        fields: dict[str, Any],
        error: str | None = None,
    ) -> None:
        level = logging.INFO if error is None else logging.ERROR
        extra = {**fields, "status": status, "duration_s": round(time.monotonic() - started, 3)}
        if error is not None:
            extra["error"] = error
        self.say(text, level=level, event="task_finished", **extra)

    def _listen(self) -> TaskListener:
        assert self.ctx.settings.metadata_url is not None
        return TaskListener(self.ctx.settings.metadata_url)


def _fields(task: TaskRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "task_id": task.id,
        "kind": task.kind,
        "backup_id": task.payload.get("backup_id"),
    }
    if task.source is not None:
        fields["source"] = task.source
    if task.payload.get("database"):
        fields["database"] = task.payload["database"]
    return fields


def _subject(task: TaskRecord) -> object:
    """What a task is about: its backup, its database or cluster, or (all) for a backup of
    every configured database."""
    payload = task.payload
    return payload.get("backup_id") or payload.get("database") or payload.get("cluster") or "(all)"
