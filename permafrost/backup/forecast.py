"""Will tonight fit? A pure simulation of a night's backups under the concurrency limits.

No I/O: `backup.tonight` feeds it the night's backups (each with the median duration of its
recent completed backups) and it answers when the night finishes, which backups end after the
window closes, and how many workers would make it fit.

The rule (list scheduling, longest first): every backup is ready when the window opens. Whenever
a worker has a free slot (`per_worker` slots each), the longest waiting backup whose source runs
fewer than `per_source` backups starts on the lowest-numbered worker with a free slot; ties go by
source, then database. When nothing may start, time moves to the next backup's end. Each
(source, kind, database) appears once a night, so one backup per database at a time holds.
This is not an optimal packing, but it is what a queue of longest-first work does, and it is
never worse than twice the optimum.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Planned:
    """One backup tonight: where it runs, what it backs up and how long it is expected to take
    (None: never completed, so not simulated)."""

    source: str
    database: str
    seconds: float | None
    kind: str = "logical"


@dataclass(frozen=True)
class Limits:
    workers: int = 1
    per_worker: int = 1  # MAX_CONCURRENT
    per_source: int = 1  # MAX_CONCURRENT_PER_SOURCE


@dataclass(frozen=True)
class Run:
    item: Planned
    worker: int  # 1-based
    start: float  # seconds after the window opens
    end: float


@dataclass(frozen=True)
class Forecast:
    window_seconds: float
    limits: Limits
    runs: list[Run]
    unmeasured: list[Planned] = field(default_factory=list)
    workers_needed: int | None = None  # the fewest that fit; None when no number does
    bottleneck: tuple[str, float] | None = None  # a source whose own work outlasts the window

    @property
    def finish(self) -> float:
        return max((run.end for run in self.runs), default=0.0)

    @property
    def misses(self) -> list[Run]:
        return [run for run in self.runs if run.end > self.window_seconds]

    @property
    def fits(self) -> bool:
        return not self.misses


def simulate(items: Iterable[Planned], limits: Limits) -> list[Run]:
    """Tonight's runs under `limits`, by the rule in the module's docstring, in start order."""
    queues = _queues(items)
    free = [limits.per_worker] * limits.workers
    running_by_source: dict[str, int] = defaultdict(int)
    ends: list[tuple[float, int, int, str]] = []  # (end, order, worker index, source)
    runs: list[Run] = []
    now = 0.0
    while any(queues.values()):
        while (slot := _free_worker(free)) is not None:
            item = _longest_startable(queues, running_by_source, limits.per_source)
            if item is None:
                break
            seconds = item.seconds or 0.0
            runs.append(Run(item, slot + 1, now, now + seconds))
            heapq.heappush(ends, (now + seconds, len(runs), slot, item.source))
            free[slot] -= 1
            running_by_source[item.source] += 1
        if any(queues.values()):
            now = _release_next(ends, free, running_by_source)
    return runs


def forecast(
    items: Sequence[Planned], limits: Limits, window_seconds: float, *, max_workers: int = 1000
) -> Forecast:
    """The night under `limits`, and the fewest workers that would fit it into the window."""
    measured = [item for item in items if item.seconds is not None]
    runs = simulate(measured, limits)
    bottleneck = _bottleneck(measured, limits.per_source, window_seconds)
    needed = None
    if measured and bottleneck is None:  # nothing measured: no number to give
        needed = _workers_needed(measured, limits, window_seconds, max_workers)
    if needed is None and bottleneck is None and measured:
        bottleneck = _latest_source(measured, limits, max_workers)
    return Forecast(
        window_seconds=window_seconds,
        limits=limits,
        runs=runs,
        unmeasured=[item for item in items if item.seconds is None],
        workers_needed=needed,
        bottleneck=bottleneck,
    )


def _queues(items: Iterable[Planned]) -> dict[str, deque[Planned]]:
    seen: set[tuple[str, str, str]] = set()
    by_source: dict[str, list[Planned]] = defaultdict(list)
    for item in items:
        key = (item.source, item.kind, item.database)
        if key in seen:
            raise ValueError(f"{item.kind} backup of {item.source}/{item.database} twice tonight")
        seen.add(key)
        by_source[item.source].append(item)
    return {
        source: deque(sorted(queue, key=lambda i: (-(i.seconds or 0.0), i.database, i.kind)))
        for source, queue in sorted(by_source.items())
    }


def _free_worker(free: list[int]) -> int | None:
    return next((index for index, slots in enumerate(free) if slots > 0), None)


def _longest_startable(
    queues: dict[str, deque[Planned]], running: dict[str, int], per_source: int
) -> Planned | None:
    """The longest head of a source's queue that the per-source limit lets start (sources are
    in name order, so ties go to the first name)."""
    best: deque[Planned] | None = None
    for source, queue in queues.items():
        startable = bool(queue) and running[source] < per_source
        if startable and (best is None or (queue[0].seconds or 0.0) > (best[0].seconds or 0.0)):
            best = queue
    return best.popleft() if best is not None else None


def _release_next(
    ends: list[tuple[float, int, int, str]], free: list[int], running: dict[str, int]
) -> float:
    """Move to the next end: free every run ending then; that moment is the new now."""
    now = ends[0][0]
    while ends and ends[0][0] == now:
        _, _, slot, source = heapq.heappop(ends)
        free[slot] += 1
        running[source] -= 1
    return now


def _bottleneck(
    items: Sequence[Planned], per_source: int, window_seconds: float
) -> tuple[str, float] | None:
    """A source whose work cannot fit however many workers run: its total over the per-source
    limit, or its longest backup, is longer than the window."""
    totals: dict[str, float] = defaultdict(float)
    longest: dict[str, float] = defaultdict(float)
    for item in items:
        seconds = item.seconds or 0.0
        totals[item.source] += seconds
        longest[item.source] = max(longest[item.source], seconds)
    bounds = {s: max(totals[s] / per_source, longest[s]) for s in totals}
    worst = max(bounds, key=lambda s: (bounds[s], s), default=None)
    if worst is None or bounds[worst] <= window_seconds:
        return None
    return worst, bounds[worst]


def _useful_workers(items: Sequence[Planned], limits: Limits, max_workers: int) -> int:
    """More workers than can run at once under the per-source limit change nothing."""
    sources = {item.source for item in items}
    useful = -(-min(len(items), len(sources) * limits.per_source) // limits.per_worker)
    return min(max(useful, 1), max_workers)


def _latest_source(items: Sequence[Planned], limits: Limits, max_workers: int) -> tuple[str, float]:
    """With as many workers as help, the source whose last backup ends latest, and when."""
    workers = _useful_workers(items, limits, max_workers)
    last = max(
        simulate(items, Limits(workers, limits.per_worker, limits.per_source)),
        key=lambda run: run.end,
    )
    return last.item.source, last.end


def _workers_needed(
    items: Sequence[Planned], limits: Limits, window_seconds: float, max_workers: int
) -> int | None:
    """The fewest workers whose simulated night ends in the window. Fewer than the total work
    over the window's slot-seconds cannot fit, so the search starts there; more than can run at
    once under the per-source limit change nothing, so it stops there."""
    total = sum(item.seconds or 0.0 for item in items)
    fewest = max(1, math.ceil(total / (window_seconds * limits.per_worker)))
    for workers in range(fewest, _useful_workers(items, limits, max_workers) + 1):
        runs = simulate(items, Limits(workers, limits.per_worker, limits.per_source))
        if max((run.end for run in runs), default=0.0) <= window_seconds:
            return workers
    return None
