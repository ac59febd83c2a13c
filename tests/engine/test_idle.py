"""run_until_idle: run what is due (and what that makes due) until the queue is idle.

With a FakeClock and ``advance``, time steps from due time to due time, so backoffs,
delays and schedules run in order without sleeping; a bound stops endless work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

import dowork
from dowork import FakeClock, Queue, Task, TaskStatus


def _flaky(clock: FakeClock, times: list[float], fails: int = 2) -> Callable[[], str]:
    def flaky() -> str:
        times.append(clock.now())
        if len(times) <= fails:
            raise OSError("not yet")
        return "ok"

    return flaky


def test_runs_what_is_due_and_what_that_enqueues_but_not_what_waits(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    queue = make_queue(log=False)
    ran: list[str] = []
    start = clock.now()

    def grandchild() -> None:
        ran.append("grandchild")

    def child() -> None:
        ran.append("child")
        queue.submit(grandchild)

    def parent() -> None:
        ran.append("parent")
        queue.submit(child)

    queue.submit(parent)
    later = queue.call_later(10, ran.append, "later")
    times: list[float] = []
    flaky = queue.enqueue(Task(_flaky(clock, times), retries=3, jitter=False))
    assert queue.run_until_idle() == 4  # parent, child, grandchild, flaky's first attempt
    assert sorted(ran) == ["child", "grandchild", "parent"]
    assert clock.now() == start  # the clock stays where it was
    assert later.status is TaskStatus.SCHEDULED
    assert flaky.status is TaskStatus.RETRYING
    assert times == [start]
    assert queue.run_until_idle() == 0  # idle: nothing else runs
    assert len(queue) == 2


def test_advance_runs_retries_through_their_backoffs_sync_and_async(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    queue = make_queue(log=False)
    start = clock.now()
    sync_times: list[float] = []
    async_times: list[float] = []

    async def async_flaky() -> str:
        async_times.append(clock.now())
        await asyncio.sleep(0)
        if len(async_times) < 3:
            raise OSError("not yet")
        return "async ok"

    sync_task = queue.enqueue(Task(_flaky(clock, sync_times), retries=5, jitter=False))
    async_task = queue.enqueue(Task(async_flaky, retries=5, jitter=False))
    assert queue.run_until_idle(advance=True) == 6
    assert sync_task.result(0) == "ok"
    assert async_task.result(0) == "async ok"
    assert [t - start for t in sync_times] == [0, 120, 360]
    assert [t - start for t in async_times] == [0, 120, 360]
    assert clock.now() == start + 360  # it stops at the last due time, not beyond
    assert len(queue) == 0


def test_advance_a_duration_fires_schedules_and_leaves_the_clock_there(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    queue = make_queue(log=False)
    start = clock.now()
    runs: list[float] = []
    schedule = queue.every(60, lambda: runs.append(clock.now() - start))
    soon = queue.call_later(90, lambda: clock.now() - start)
    late = queue.call_later(1000, lambda: "late")
    assert queue.run_until_idle(advance=timedelta(minutes=5)) == 6
    assert runs == [60, 120, 180, 240, 300]
    assert schedule.runs == 5
    assert soon.result(0) == 90
    assert late.status is TaskStatus.SCHEDULED
    assert clock.now() == start + 300
    assert queue.run_until_idle(advance=700) == 12  # 11 firings, 360 to 960, and late
    assert late.result(0) == "late"
    assert runs[-1] == 960
    assert clock.now() == start + 1000


def test_advance_true_does_not_chase_a_schedule_alone(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    """A recurring schedule always has a next firing: only waiting tasks keep time moving."""
    queue = make_queue(log=False)
    start = clock.now()
    runs: list[float] = []
    queue.every(60, lambda: runs.append(clock.now() - start))
    assert queue.run_until_idle(advance=True) == 0
    assert runs == []
    assert clock.now() == start
    task = queue.call_later(150, lambda: clock.now() - start)
    assert queue.run_until_idle(advance=True) == 3
    assert runs == [60, 120]  # the firings on the way happen, in order
    assert task.result(0) == 150
    assert clock.now() == start + 150


def test_max_attempts_bounds_endless_work(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    queue = make_queue(log=False)
    attempts: list[int] = []

    def fails() -> None:
        attempts.append(1)
        raise OSError("always")

    queue.enqueue(Task(fails, retries=-1, backoff="fixed", base_delay=1))
    with pytest.raises(RuntimeError, match=r"not idle after 21 attempts \(max_attempts=20\)"):
        queue.run_until_idle(advance=True, max_attempts=20)
    assert len(attempts) == 21

    again = make_queue("again", log=False)
    spawned: list[int] = []

    def respawns() -> None:
        spawned.append(1)
        again.submit(respawns)

    again.submit(respawns)
    with pytest.raises(RuntimeError, match="not idle after 6 attempts"):
        again.run_until_idle(max_attempts=5)  # no clock needed to loop for ever
    assert len(spawned) == 6


def test_arguments_are_checked(make_queue: Callable[..., Queue]) -> None:
    real = make_queue("real", clock=dowork.SystemClock(), log=False)
    with pytest.raises(ValueError, match="advance= moves a FakeClock"):
        real.run_until_idle(advance=True)
    task = real.submit(lambda: "ran")
    assert real.run_until_idle() == 1  # without advance, any clock will do
    assert task.result(0) == "ran"
    fake = make_queue("fake", log=False)
    for bad in (-1, timedelta(seconds=-1), float("nan"), "1"):
        with pytest.raises(ValueError, match="advance must be"):
            fake.run_until_idle(advance=bad)  # type: ignore[arg-type]  # "1" is not a duration
    with pytest.raises(ValueError, match="max_attempts must be >= 1"):
        fake.run_until_idle(max_attempts=0)
    with pytest.raises(TypeError, match="max_attempts must be an int"):
        fake.run_until_idle(max_attempts=2.5)  # type: ignore[arg-type]  # deliberately wrong


def test_a_started_queue_is_waited_for(make_queue: Callable[..., Queue], clock: FakeClock) -> None:
    queue = make_queue(log=False).start()
    start = clock.now()
    later = queue.call_later(30, lambda: clock.now() - start)
    done = [queue.submit(int, i) for i in range(20)]
    queue.run_until_idle()  # counts the attempts that end meanwhile: some may have already
    assert all(t.done for t in done)
    clock.advance(29)
    assert queue.run_until_idle() == 0
    assert later.status is TaskStatus.SCHEDULED
    assert queue.run_until_idle(advance=True) == 1
    assert later.result(0) == 30
    ticks: list[float] = []
    queue.every(10, lambda: ticks.append(clock.now() - start))
    assert queue.run_until_idle(advance=35) == 3
    assert ticks == [40, 50, 60]
    assert clock.now() == start + 65
    assert queue.shutdown(timeout=5) is True
    with pytest.raises(RuntimeError, match="shut down"):
        queue.run_until_idle()


def test_arun_until_idle_on_the_running_loop(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    queue = make_queue(log=False)
    start = clock.now()

    async def main() -> None:
        times: list[float] = []
        task = queue.enqueue(Task(_flaky(clock, times, fails=1), retries=1, jitter=False))
        assert await queue.arun_until_idle(advance=True) == 2
        assert await task == "ok"
        assert [t - start for t in times] == [0, 120]
        async with queue:
            other = await queue.asubmit(asyncio.sleep, 0, "slept")
            assert await queue.arun_until_idle() == 1
            assert other.result(0) == "slept"

    asyncio.run(main())


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_durable_queue_driven_by_hand(clock: FakeClock, tmp_path: Path, store: str) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'idle.sqlite3'}"
    queue = Queue("durable", backend=url, clock=clock, log=False)
    start = clock.now()
    times: list[float] = []

    @queue.task(name="flaky", retries=3, jitter=False)
    def flaky() -> str:
        times.append(clock.now() - start)
        if len(times) < 3:
            raise OSError("not yet")
        return "ok"

    handle = flaky.submit()
    assert queue.run_until_idle() == 1
    assert queue.status(handle.id) is TaskStatus.RETRYING
    assert queue.run_until_idle(advance=True) == 2
    assert times == [0, 120, 360]
    assert queue.status(handle.id) is TaskStatus.SUCCEEDED
    assert clock.now() == start + 360
    queue.start()
    try:
        with pytest.raises(RuntimeError, match="running with a backend"):
            queue.run_until_idle()
    finally:
        queue.shutdown(timeout=5)


def test_the_global_queue_is_waited_for() -> None:
    """Code under test that calls dowork.submit: wait for its background work, no handle."""
    ran: list[int] = []
    for i in range(3):
        dowork.submit(ran.append, i)
    dowork.global_queue().run_until_idle()
    assert sorted(ran) == [0, 1, 2]
