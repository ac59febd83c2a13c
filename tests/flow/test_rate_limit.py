"""Rate limits: at most n starts in any period, per task or per queue; the rest wait, in order.

Each test runs on the plain in-process queue (``make_queue``) or on every backend
(``durable_queue``), with the fake clock.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dowork import FakeClock, Queue, RateLimit, Task, TaskStatus
from dowork.backends import Backend, MemoryBackend


def _started(queue: Queue, ran: list[str]) -> list[str]:
    """Run what is due now (one dispatch) and return what started in it."""
    before = len(ran)
    queue.dispatch()
    return ran[before:]


def test_a_task_rate_limit_delays_the_starts_over_it(durable_queue: Callable[..., Queue]) -> None:
    clock = FakeClock()
    queue = durable_queue(clock=clock, concurrency=1)
    ran: list[str] = []

    @queue.task(name="call_api", rate_limit="2/10s")
    def call_api(i: int) -> None:
        ran.append(f"api{i}")

    @queue.task(name="free")
    def free(i: int) -> None:
        ran.append(f"free{i}")

    tasks = [call_api.submit(i) for i in range(5)]
    free.submit(0)
    assert _started(queue, ran) == ["api0", "api1", "free0"]
    waiting = queue.status(tasks[2].id)
    assert waiting in (TaskStatus.PENDING, TaskStatus.SCHEDULED)  # delayed, not failed
    clock.advance(9.9)
    assert _started(queue, ran) == []
    clock.advance(0.1)
    assert _started(queue, ran) == ["api2", "api3"]
    clock.advance(10)
    assert _started(queue, ran) == ["api4"]
    assert not queue.dispatch()
    assert all(queue.status(t.id) is TaskStatus.SUCCEEDED for t in tasks)


def test_a_queue_rate_limit_is_shared_by_tasks_without_their_own(
    durable_queue: Callable[..., Queue],
) -> None:
    clock = FakeClock()
    queue = durable_queue(clock=clock, concurrency=1, rate_limit="1/s")
    ran: list[str] = []

    @queue.task(name="a")
    def a(i: int) -> None:
        ran.append(f"a{i}")

    @queue.task(name="b")
    def b(i: int) -> None:
        ran.append(f"b{i}")

    @queue.task(name="own", rate_limit=(3, 1.0))
    def own(i: int) -> None:
        ran.append(f"own{i}")

    a.submit(0)
    b.submit(0)
    a.submit(1)
    for i in range(3):
        own.submit(i)
    assert _started(queue, ran) == ["a0", "own0", "own1", "own2"]
    clock.advance(1)
    assert _started(queue, ran) == ["b0"]
    clock.advance(1)
    assert _started(queue, ran) == ["a1"]


def test_two_workers_share_one_limit(backend_url: str) -> None:
    # A memory:// URL opens a store of its own per queue: share one store object instead.
    backend: Backend | str = MemoryBackend() if backend_url == "memory://" else backend_url
    clock = FakeClock()
    ran: list[str] = []
    workers = []
    for _ in range(2):
        queue = Queue("shared", backend=backend, clock=clock, log=False, concurrency=1)

        @queue.task(name="send", rate_limit="3/m")
        def send(i: int) -> None:
            ran.append(f"send{i}")

        workers.append((queue, send))
    try:
        send = workers[0][1]
        for i in range(7):
            send.submit(i)
        started = 0
        for minute in range(3):
            for queue, _ in workers:
                started += len(_started(queue, ran))
            assert started == min(7, 3 * (minute + 1))  # never more than 3 a minute in all
            clock.advance(60)
        assert sorted(ran) == [f"send{i}" for i in range(7)]
    finally:
        for queue, _ in workers:
            queue.shutdown(timeout=5)


def test_rate_limits_are_checked_where_they_are_written(
    durable_queue: Callable[..., Queue],
) -> None:
    with pytest.raises(ValueError, match="cannot read rate limit"):
        Task(len, rate_limit="ten per second")
    with pytest.raises(ValueError, match="at least 1"):
        RateLimit.of("0/s")
    with pytest.raises(ValueError, match="cannot read rate limit"):
        Queue(rate_limit="10/fortnight")
    assert RateLimit.of("100/m") == RateLimit(100, 60.0)
    assert RateLimit.of("5/30s").per == 30.0
    queue = durable_queue()

    @queue.task(name="plain")
    def plain() -> None:
        pass

    with pytest.raises(ValueError, match="declare it on the task function"):
        queue.enqueue(plain.task().configure(rate_limit="1/s"))


def test_in_process_rate_limits_delay_starts_in_order(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    queue = make_queue(concurrency=1)
    ran: list[str] = []

    @queue.task(rate_limit="2/10s")
    def call_api(i: int) -> None:
        ran.append(f"api{i}")

    tasks = [call_api.submit(i) for i in range(5)]
    queue.enqueue(Task(ran.append, args=("free",)))
    assert _started(queue, ran) == ["api0", "api1", "free"]
    assert tasks[2].status is TaskStatus.SCHEDULED
    clock.advance(10)
    assert _started(queue, ran) == ["api2", "api3"]
    clock.advance(10)
    assert _started(queue, ran) == ["api4"]
    assert not queue.dispatch()


def test_a_running_in_process_queue_waits_for_its_slots(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    queue = make_queue(concurrency=4, rate_limit="1/s")
    ran: list[str] = []
    for i in range(3):
        queue.enqueue(Task(ran.append, args=(f"t{i}",)))
    queue.start()
    for second in range(3):
        queue.run_until_idle()  # the queue's threads caught up with the fake clock
        assert ran == [f"t{i}" for i in range(second + 1)]
        clock.advance(1)
    assert queue.shutdown(timeout=5)
