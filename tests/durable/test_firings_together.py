"""Schedules due together are pushed in batches, and each firing is still stored once when
several workers fire them, on every durable store (memory, SQLite, Redis)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from dowork import DurableSettings, FakeClock, Queue
from dowork.scheduling import Schedule
from tests.durable.reads import records_in

START = 1_700_000_000.0
WAIT = 60.0

ran: Counter[int] = Counter()
lock = threading.Lock()


def job(n: int) -> None:
    with lock:
        ran[n] += 1


def wait_until(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"not reached in {WAIT}s: {what}"
        time.sleep(0.01)


def test_workers_firing_overlapping_batches_store_each_firing_once(
    stores: Callable[..., Queue],
) -> None:
    """Worker A has schedules 0-29, B 0-59 (and C 30-89): B's batch holds firings A pushed.

    Whichever worker pushes first, a batch with some firings stored already is refused
    whole; each of its firings is then pushed alone: stored once, counted once (in ``runs``
    of one worker, ``fired_elsewhere`` of the others).
    """
    ran.clear()
    clock = FakeClock(START)
    settings = DurableSettings(lease=30.0, maintenance=0.25)
    workers: list[tuple[Queue, list[Schedule]]] = []
    for numbers in (range(30), range(60), range(30, 90)):
        queue = stores(clock=clock, durable=settings)
        queue.task(name="job")(job)
        workers.append((queue, [queue.every(60, job, n) for n in numbers]))
    for queue, _ in workers:
        queue.start()
    schedules = [s for _, mine in workers for s in mine]
    clock.set(START + 61)  # past the next grid point: every schedule is due on it

    def accounted() -> bool:
        return sum(s.runs + s.fired_elsewhere for s in schedules) == len(schedules)

    wait_until(accounted, "every worker's firings stored or refused as duplicates")
    wait_until(lambda: len(ran) == 90, "every firing ran")
    time.sleep(0.2)
    assert ran == Counter(range(90))  # each once
    assert sum(s.runs for s in schedules) == 90  # each stored by one worker
    assert sum(s.fired_elsewhere for s in schedules) == len(schedules) - 90
    records = records_in(workers[0][0])
    assert len(records) == 90
    due = schedules[0].trigger.next_after(START)
    assert all(r.id.endswith(f":{due:.3f}") for r in records)


def test_a_schedule_declared_twice_fires_once_per_due_time(stores: Callable[..., Queue]) -> None:
    """Two schedules of the same call on one worker: one firing id, due in one batch."""
    ran.clear()
    clock = FakeClock(START)
    queue = stores(clock=clock, durable=DurableSettings(lease=30.0, maintenance=0.25))
    queue.task(name="job")(job)
    twins = [queue.every(60, job, 7), queue.every(60, job, 7), queue.every(60, job, 8)]
    queue.start()
    clock.set(START + 61)
    wait_until(lambda: sum(s.runs + s.fired_elsewhere for s in twins) == 3, "all accounted")
    wait_until(lambda: len(ran) == 2, "both firings ran")
    time.sleep(0.2)
    assert ran == Counter({7: 1, 8: 1})
    assert [s.runs for s in twins[:2]] in ([1, 0], [0, 1])
    assert sum(s.fired_elsewhere for s in twins) == 1
    assert len(records_in(queue)) == 2
