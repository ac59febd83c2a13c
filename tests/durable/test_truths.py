"""Statuses tell the truth (issue 14): delayed handles, chained DoNotRetry, retries on time,
exact counts, handles whose record is gone, and one run at a time per id in a process.

Each case runs on every store it concerns: the in-process queue (``None``), the in-process
``MemoryBackend``, SQLite and Redis (a real server).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dowork import FakeClock, Queue, TaskStatus
from dowork.backends import Backend, MemoryBackend, RedisBackend, SQLiteBackend

WAIT = 20.0


def _store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind == "memory":
        return MemoryBackend()
    if kind == "sqlite":
        return SQLiteBackend(tmp_path / "tasks.db", poll_interval=0.01)
    url = request.getfixturevalue("redis_server").url
    return RedisBackend(url, prefix=f"dowork:t{uuid.uuid4().hex[:10]}")


@pytest.fixture(params=["inprocess", "memory", "sqlite", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def queues(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Queue]]:
    """``make(kind, **options)``: a queue on a fresh store of that kind, shut down after."""
    made: list[Queue] = []

    def make(kind: str, **options: Any) -> Queue:
        options.setdefault("log", False)
        if kind != "inprocess":
            options["backend"] = _store(kind, request, tmp_path)
        queue = Queue("jobs", **options)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        if queue.running or queue.durable:
            queue.shutdown(timeout=2)


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.002)


# -- a) delayed handles ---------------------------------------------------------------------


def test_call_later_and_call_at_handles_read_scheduled_at_once(
    kind: str, queues: Callable[..., Queue]
) -> None:
    clock = FakeClock()
    queue = queues(kind, clock=clock)
    work = queue.task(name="work")(lambda n: n)
    later = queue.call_later(10, work, 1)
    at = queue.call_at(clock.now() + 10, work, 2)
    for handle in (later, at):
        assert handle.status is TaskStatus.SCHEDULED
        assert handle.next_attempt is not None
        assert handle.next_attempt.timestamp() == clock.now() + 10
    assert queue.status(later.id) is TaskStatus.SCHEDULED


def test_a_delay_counts_from_the_call_on_a_queue_driven_by_dispatch(
    kind: str, queues: Callable[..., Queue]
) -> None:
    clock = FakeClock()
    queue = queues(kind, clock=clock)
    work = queue.task(name="work")(lambda n: n)
    later = queue.call_later(10, work, 1)
    at = queue.call_at(clock.now() + 10, work, 2)
    clock.advance(10)  # no dispatch() before: the delays ran from the calls
    queue.dispatch()
    assert (later.result(timeout=5), at.result(timeout=5)) == (1, 2)


def test_a_started_queue_counts_a_delay_from_the_call_not_from_its_loop(
    queues: Callable[..., Queue],
) -> None:
    """The race of ``test_join_shuts_several_queues_in_parallel`` on a busy machine: the
    clock moved before the queue's loop took the delayed task in."""
    clock = FakeClock()
    queue = queues("inprocess", clock=clock).start()
    busy, free = threading.Event(), threading.Event()

    async def hold_the_loop() -> None:
        busy.set()
        free.wait(WAIT)  # blocks the queue's event loop on purpose

    queue.submit(hold_the_loop)
    assert busy.wait(WAIT)
    later = queue.call_later(10, lambda: "on time")
    assert later.status is TaskStatus.SCHEDULED
    clock.advance(10)  # before the loop took the task in: it is due all the same
    free.set()
    assert later.result(WAIT) == "on time"
