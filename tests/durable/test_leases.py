"""Reserved, running, crashed or lost, through a real queue on SQLite (issue 14 items 2, 3).

A claimed task waiting for a free slot reads ``reserved`` everywhere; it becomes ``running``
(one more attempt) when its function starts. A worker never starts a task whose lease it
knows has lapsed, and a worker that was cut off but alive is not charged a crash.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dowork import DurableSettings, Queue, TaskStatus
from dowork.backends import Record, SQLiteBackend
from dowork.errors import BackendUnavailable
from tests.upkeep import reap
from tests.waiting import wait_for

WAIT = 10.0
pytestmark = pytest.mark.realtime


class CutOff(SQLiteBackend):
    """A real SQLite store whose heartbeats fail while ``cut`` is set (a partition)."""

    cut = False

    async def heartbeat(self, leases: Any, now: float, lease: float) -> tuple[list[str], list[str]]:
        if self.cut:
            raise BackendUnavailable("cut off (test)")
        return await super().heartbeat(leases, now, lease)


@pytest.fixture
def store(tmp_path: Path) -> CutOff:
    return CutOff(str(tmp_path / "tasks.sqlite3"))


@pytest.fixture
def queues(store: CutOff) -> Iterator[Callable[..., Queue]]:
    made: list[Queue] = []

    def make(**settings: Any) -> Queue:
        settings.setdefault("lease", 2.0)
        settings.setdefault("maintenance", 0.1)
        # A fixed prefetch: these workers hold a task behind a long one (the default does not).
        settings.setdefault("prefetch_window", None)
        queue = Queue(
            "jobs", backend=store, log=False, concurrency=1, durable=DurableSettings(**settings)
        )
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.shutdown(timeout=5)


def record(store: SQLiteBackend, task_id: str) -> Record:
    async def get() -> Record:
        (found,) = await store.get([task_id])
        return found

    return asyncio.run_coroutine_threadsafe(get(), _loop()).result(WAIT)


_LOOP: asyncio.AbstractEventLoop | None = None


def _loop() -> asyncio.AbstractEventLoop:
    """A loop of the test's own to read the store from (the queue's runs on its thread)."""
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
        threading.Thread(target=_LOOP.run_forever, daemon=True).start()
    return _LOOP


def test_a_claimed_task_waiting_for_a_slot_is_reserved_then_running(
    queues: Callable[..., Queue], store: CutOff
) -> None:
    queue = queues()
    gate = threading.Event()

    @queue.task(name="block")
    def block() -> str:
        gate.wait(WAIT)
        return "done"

    @queue.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    first = block.submit()
    second = add.submit(1, 2)
    queue.start()
    wait_for(lambda: record(store, first.id).status == "running")  # its mark, after 20 ms
    wait_for(lambda: record(store, second.id).status == "reserved")
    held = record(store, second.id)
    assert (held.started, held.attempts, held.crashes) == (0, 1, 0)
    assert queue.status(second.id) is TaskStatus.RESERVED
    assert second.attempts == 0
    running = record(store, first.id)
    assert (running.started, running.attempts) == (1, 1)
    gate.set()
    assert second.result(WAIT) == 3
    assert first.result(WAIT) == "done"
    for task_id in (first.id, second.id):  # written before result() returned
        done = record(store, task_id)
        assert (done.status, done.started, done.crashes, done.lost) == ("succeeded", 1, 0, 0)


def test_a_task_whose_lease_lapsed_while_it_waited_is_not_started(
    queues: Callable[..., Queue], store: CutOff
) -> None:
    queue = queues(lease=0.6, maintenance=0.1)
    gate = threading.Event()
    runs: list[str] = []

    @queue.task(name="block")
    def block() -> None:
        gate.wait(WAIT)

    @queue.task(name="note")
    def note(tag: str) -> None:
        runs.append(tag)

    first = block.submit()
    second = note.submit("x")
    queue.start()
    wait_for(lambda: record(store, second.id).status == "reserved")
    store.cut = True  # no renewal: the waiting task's lease lapses
    time.sleep(1.0)
    store.cut = False
    gate.set()  # the slot frees up after the lapse: the worker must not start it now
    first.result(WAIT)
    assert second.result(WAIT) is None  # run here after the store handed it out again
    assert runs == ["x"]  # once, after the store handed it out again
    done = record(store, second.id)
    assert done.status == "succeeded"
    assert done.lost >= 1
    assert (done.crashes, done.started) == (0, 1)


def test_a_worker_cut_off_past_its_lease_is_not_charged_a_crash(
    queues: Callable[..., Queue], store: CutOff
) -> None:
    queue = queues(lease=0.6, maintenance=0.1, prefetch=0)
    gate = threading.Event()
    runs: list[int] = []

    @queue.task(name="slow")
    def slow() -> str:
        runs.append(1)
        gate.wait(WAIT)
        return "finished"

    handle = slow.submit()
    queue.start()
    wait_for(lambda: record(store, handle.id).status == "running")
    store.cut = True
    time.sleep(0.8)  # past the lease: another worker's reaper charges a crash
    reaped = asyncio.run_coroutine_threadsafe(reap(store, "jobs", time.time(), 3), _loop()).result(
        WAIT
    )
    assert reaped == (1, 0)
    assert record(store, handle.id).crashes == 1
    store.cut = False
    gate.set()
    assert handle.result(WAIT) == "finished"
    done = record(store, handle.id)
    assert done.status == "succeeded"
    assert (done.crashes, done.lost, done.started) == (0, 1, 1)  # the charge was taken back
    assert runs == [1]
