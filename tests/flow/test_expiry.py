"""Expiry: a task that has not started by its ``expires`` time never runs and ends dead."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

import dowork
from dowork import FakeClock, Hooks, Queue, Task, TaskStatus


class Failures(Hooks):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_failure(self, task: Task[Any], error: BaseException) -> None:
        self.seen.append((task.status.value, type(error).__name__))


def test_a_task_not_started_in_time_is_dead_and_never_runs(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    failures = Failures()
    queue = make_queue(hooks=[failures], log=False)
    ran: list[str] = []
    finished: list[TaskStatus] = []
    late = queue.enqueue(
        Task(
            ran.append,
            args=("late",),
            delay=20,
            expires=10,
            after=lambda t: finished.append(t.status),
        )
    )
    on_time = queue.enqueue(Task(ran.append, args=("on time",), delay=5, expires=10))
    assert late.expires_at == datetime.fromtimestamp(clock.now() + 10, UTC)
    queue.dispatch()  # accepted now: the delays count from here
    clock.advance(5)
    queue.dispatch()
    clock.advance(15)
    queue.dispatch()
    assert ran == ["on time"]
    assert on_time.status is TaskStatus.SUCCEEDED
    assert late.status is TaskStatus.DEAD
    with pytest.raises(dowork.TaskExpired, match="not started by"):
        late.result(0)
    assert finished == [TaskStatus.DEAD]  # the after-callback ran once, with the outcome
    assert failures.seen == [("dead", "TaskExpired")]


def test_expiry_also_stops_a_retry_that_would_start_too_late(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    calls = []

    def flaky() -> None:
        calls.append(clock.now())
        raise OSError("down")

    queue = make_queue(log=False)
    task = queue.enqueue(Task(flaky, retries=5, backoff="fixed", base_delay=60, expires=100))
    queue.dispatch()
    clock.advance(60)
    queue.dispatch()
    clock.advance(60)  # the third attempt would start at 120 s: past the expiry
    queue.dispatch()
    assert len(calls) == 2
    assert task.status is TaskStatus.DEAD
    assert isinstance(task.exception(0), dowork.TaskExpired)


def test_expires_takes_an_aware_datetime_and_rejects_bad_values(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    queue = make_queue(log=False)
    at = datetime.fromtimestamp(clock.now() + 30, UTC)
    task = queue.enqueue(Task(int, args=("7",), expires=at))
    assert task.expires_at == at
    queue.dispatch()
    assert task.result(0) == 7
    with pytest.raises(ValueError, match="expires"):
        Task(int, expires=-1)
    with pytest.raises(ValueError, match="naive"):
        Task(int, expires=datetime(2030, 1, 1))


def test_durable_tasks_expire_on_every_backend(
    durable_queue: Callable[..., Queue],
) -> None:
    clock = FakeClock()
    queue = durable_queue(clock=clock)
    ran: list[int] = []

    @queue.task(name="note", expires=30)
    def note(n: int) -> int:
        ran.append(n)
        return n

    stale = queue.enqueue(note.task(1).configure(delay=60))
    fresh = queue.enqueue(note.task(2).configure(delay=10))
    never = queue.enqueue(note.task(3).configure(expires=None, delay=60))  # an override wins
    clock.advance(10)
    queue.dispatch()  # runs the task due at 10 s
    clock.advance(50)  # 60 s: the next two are due, one expired at 30 s
    while queue.dispatch():
        pass
    assert sorted(ran) == [2, 3]
    assert queue.status(stale.id) is TaskStatus.DEAD
    with pytest.raises(dowork.TaskFailed, match="not started by") as caught:
        stale.result(0)
    assert caught.value.reason == "expired"
    assert queue.status(fresh.id) is TaskStatus.SUCCEEDED
    assert queue.status(never.id) is TaskStatus.SUCCEEDED
