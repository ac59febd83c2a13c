"""Scheduling: after a delay, at a time, every interval, on cron (go_do_work G47-G50)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

import dowork
from dowork import FakeClock, Queue, TaskStatus

WAIT = 5.0


def test_call_later_is_scheduled_then_runs(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    """G47 (q→§4.13): the handle is the task: scheduled, then it runs no earlier than the delay."""
    queue = make_queue().start()
    task = queue.call_later(timedelta(seconds=30), lambda: "done")
    assert task.status is TaskStatus.SCHEDULED or task.status is TaskStatus.PENDING
    assert queue.run_until_idle() == 0
    assert task.status is TaskStatus.SCHEDULED
    assert task.next_attempt == datetime.fromtimestamp(clock.now() + 30, UTC)
    clock.advance(29)
    assert queue.run_until_idle() == 0  # the queue caught up with the clock: nothing ran
    assert task.status is TaskStatus.SCHEDULED
    clock.advance(1)
    assert task.result(WAIT) == "done"


def test_call_at_in_the_past_runs_now(make_queue: Callable[..., Queue], clock: FakeClock) -> None:
    """G49."""
    queue = make_queue().start()
    task = queue.call_at(clock.now_datetime() - timedelta(hours=1), lambda: "now")
    assert task.result(WAIT) == "now"


def test_call_at_refuses_naive_datetimes(make_queue: Callable[..., Queue]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_queue().call_at(datetime(2030, 1, 1), print)


def test_every_runs_once_per_interval_not_at_zero(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    """G50: first run after one interval, then every interval; cancel stops it."""
    queue = make_queue()
    runs: list[float] = []
    schedule = queue.every(60, lambda: runs.append(clock.now()))
    start = clock.now()
    assert queue.dispatch() is False
    assert runs == []
    assert schedule.next_run == datetime.fromtimestamp(start + 60, UTC)
    for _ in range(3):
        clock.advance(60)
        queue.dispatch()
    assert [r - start for r in runs] == [60, 120, 180]
    assert schedule.runs == 3
    assert schedule.cancel() is True
    assert schedule.next_run is None
    clock.advance(600)
    queue.dispatch()
    assert len(runs) == 3


def test_every_skips_while_the_previous_run_is_unfinished(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    queue = make_queue()
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        raise OSError

    fn = queue.task(retries=5, backoff="fixed", base_delay=1000)(flaky)
    schedule = queue.every(60, fn)
    clock.advance(60)
    queue.dispatch()
    assert len(calls) == 1
    clock.advance(60)
    queue.dispatch()
    assert len(calls) == 1
    assert schedule.skipped == 1
    assert schedule.last_task is not None
    assert schedule.last_task.status is TaskStatus.RETRYING


def test_cron_schedule_fires_on_matching_minutes(make_queue: Callable[..., Queue]) -> None:
    clock = dowork.FakeClock(datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC))
    queue = make_queue(clock=clock)
    fired: list[datetime] = []
    schedule = queue.cron("*/15 * * * *", lambda: fired.append(clock.now_datetime()))
    assert schedule.next_run == datetime(2025, 1, 1, 0, 15, tzinfo=UTC)
    clock.set(datetime(2025, 1, 1, 0, 15, tzinfo=UTC))
    queue.dispatch()
    clock.set(datetime(2025, 1, 1, 0, 30, tzinfo=UTC))
    queue.dispatch()
    assert [f.minute for f in fired] == [15, 30]


def test_invalid_cron_raises_at_declaration(make_queue: Callable[..., Queue]) -> None:
    with pytest.raises(ValueError, match="invalid cron"):
        make_queue().cron("every tuesday", print)


def test_schedule_on_a_started_queue_with_the_fake_clock(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    queue = make_queue().start()
    runs: list[int] = []
    schedule = queue.every(10, runs.append, 1)
    assert schedule.next_run is not None
    for expected in (1, 2, 3):
        clock.advance(10)
        queue.run_until_idle()  # waits for the started queue to catch up with the clock
        assert len(runs) == expected
    assert queue.shutdown(timeout=WAIT) is True  # shutdown stops schedules
    assert not schedule.active


def test_task_function_scheduling(make_queue: Callable[..., Queue], clock: FakeClock) -> None:
    queue = make_queue()

    @queue.task(retries=1)
    def greet(name: str) -> str:
        return f"hi {name}"

    later = greet.call_later(5, "ada")
    at = greet.call_at(clock.now() + 10, "bob")
    queue.dispatch()
    assert not later.done
    clock.advance(10)
    queue.dispatch()
    assert later.result(0) == "hi ada"
    assert at.result(0) == "hi bob"
    every = greet.every(30, "cy")
    cron = greet.cron("* * * * *", "dee")
    assert every.active
    assert cron.active


def test_a_durable_queue_refuses_a_schedule_of_an_unregistered_function() -> None:
    """No firing could be stored: refused where it is declared, not logged at every firing."""
    queue = dowork.Queue("sched", backend="memory://", clock=dowork.FakeClock(0.0), log=False)

    def not_declared() -> None:
        pass

    with pytest.raises(dowork.NotRegistered, match="not_declared"):
        queue.every(60, not_declared)
    with pytest.raises(dowork.NotRegistered):
        queue.cron("* * * * *", print)
    declared = queue.task(name="declared")(not_declared)
    schedule = queue.every(60, declared)
    assert schedule.next_run is not None
    schedule.cancel()
