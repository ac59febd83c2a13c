"""Priorities: higher ones run first, equal ones in enqueue order, and low ones age.

Each test runs on the plain in-process queue (``make_queue``) or on every backend
(``durable_queue``), with the fake clock.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dowork import FakeClock, Queue, Task


def _drain(queue: Queue) -> None:
    while queue.dispatch():
        pass


def test_higher_priorities_run_first_on_a_backend(durable_queue: Callable[..., Queue]) -> None:
    queue = durable_queue(concurrency=1)
    ran: list[str] = []

    @queue.task(name="work", priority=-1)
    def work(label: str) -> None:
        ran.append(label)

    work.submit("default-a")  # the task's own priority: -1
    queue.enqueue(work.task("high-a").configure(priority=5))
    queue.enqueue(work.task("zero").configure(priority=0))
    queue.enqueue(work.task("high-b").configure(priority=5))
    urgent = queue.enqueue(work.task("top").configure(priority=9))
    work.submit("default-b")
    assert urgent.priority == 9
    _drain(queue)
    assert ran == ["top", "high-a", "high-b", "zero", "default-a", "default-b"]


def test_a_low_priority_task_overtakes_newer_high_ones_once_aged(
    durable_queue: Callable[..., Queue],
) -> None:
    clock = FakeClock()
    queue = durable_queue(concurrency=1, clock=clock, priority_aging=10.0)
    ran: list[str] = []

    @queue.task(name="work")
    def work(label: str) -> None:
        ran.append(label)

    queue.enqueue(work.task("old-low").configure(priority=-1))
    clock.advance(15)  # 1.5 levels' worth: not yet past the 2 levels between -1 and 1
    queue.enqueue(work.task("new-high").configure(priority=1))
    queue.enqueue(work.task("new-zero"))
    _drain(queue)
    assert ran == ["new-high", "old-low", "new-zero"]  # old-low: 10 s older than new-zero
    ran.clear()
    queue.enqueue(work.task("old-low").configure(priority=-1))
    clock.advance(25)  # more than 2 levels' worth: the old one goes first
    queue.enqueue(work.task("new-high").configure(priority=1))
    _drain(queue)
    assert ran == ["old-low", "new-high"]


def test_a_retry_keeps_its_priority(durable_queue: Callable[..., Queue]) -> None:
    clock = FakeClock()
    queue = durable_queue(concurrency=1, clock=clock)
    ran: list[str] = []

    @queue.task(name="flaky", retries=1, backoff="fixed", base_delay=1, jitter=False)
    def flaky(label: str) -> None:
        ran.append(label)
        if ran.count(label) == 1 and label == "high":
            raise RuntimeError("first try fails")

    queue.enqueue(flaky.task("high").configure(priority=3))
    assert queue.dispatch()  # the retry waits a second
    flaky.submit("plain")
    clock.advance(1)
    assert not queue.dispatch()
    assert ran == ["high", "high", "plain"]


def test_priorities_are_checked_where_they_are_written() -> None:
    with pytest.raises(ValueError, match="-9 to 9"):
        Task(len).configure(priority=10)
    with pytest.raises(TypeError, match="priority must be an int"):
        Task(len).configure(priority="high")  # type: ignore[arg-type]  # deliberately a str
    with pytest.raises(TypeError, match="priority must be an int"):
        Task(len).configure(priority=True)
    assert Task(len, priority=-9).priority == -9
    with pytest.raises(ValueError, match="priority_aging"):
        Queue(priority_aging=0)


def test_higher_priorities_run_first_in_process(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(concurrency=1)
    ran: list[str] = []
    for label, priority in [("low", -3), ("a", 0), ("high", 4), ("b", 0), ("top", 9)]:
        queue.enqueue(Task(ran.append, args=(label,), priority=priority))
    _drain(queue)
    assert ran == ["top", "high", "a", "b", "low"]


def test_in_process_a_low_priority_ages_too(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    queue = make_queue(concurrency=1, priority_aging=10.0)
    ran: list[str] = []
    queue.enqueue(Task(ran.append, args=("old-low",), priority=-1))
    clock.advance(25)
    queue.enqueue(Task(ran.append, args=("new-high",), priority=1))
    queue.enqueue(Task(ran.append, args=("new-zero",)))
    _drain(queue)
    assert ran == ["old-low", "new-high", "new-zero"]


def test_a_running_queue_starts_urgent_tasks_first(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(concurrency=1)
    ran: list[str] = []
    tasks = [queue.enqueue(Task(ran.append, args=(f"low{i}",), priority=-2)) for i in range(20)]
    tasks.append(queue.enqueue(Task(ran.append, args=("urgent",), priority=9)))
    queue.start()
    for task in tasks:
        task.result(timeout=10)
    assert ran[0] == "urgent"
    assert ran[1:] == [f"low{i}" for i in range(20)]
