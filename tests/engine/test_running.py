"""A started queue: background loop, soft shutdown, join, cancel, deadlines, back-pressure.

These run the real loop thread but move time with the fake clock; waits are on task
completion (with generous timeouts), never on sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import dowork
from dowork import FakeClock, Queue, Task, TaskStatus
from tests.waiting import wait_for

WAIT = 5.0


def test_start_runs_tasks_in_the_background(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue().start()
    assert queue.running

    def doubled(i: int) -> Callable[[], int]:
        return lambda: i * 2

    tasks = [queue.submit(doubled(i)) for i in range(100)]
    assert [t.result(WAIT) for t in tasks] == [i * 2 for i in range(100)]


def test_start_twice_raises(make_queue: Callable[..., Queue]) -> None:
    """D27."""
    queue = make_queue().start()
    with pytest.raises(RuntimeError, match="already running"):
        queue.start()


def test_shutdown_requires_start(make_queue: Callable[..., Queue]) -> None:
    """D26."""
    with pytest.raises(RuntimeError, match="never started"):
        make_queue().shutdown()


def test_shutdown_waits_for_backoff_and_not_before(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    """D24/D25: shutdown drains everything (retries, delayed tasks), then refuses new tasks."""
    queue = make_queue().start()
    flaky = queue.enqueue(Task(_fails_once(), retries=1, jitter=False))
    later = queue.call_later(600, lambda: "later")
    queue.run_until_idle()
    assert flaky.status is TaskStatus.RETRYING
    done = threading.Event()
    result: list[bool] = []

    def shut() -> None:
        result.append(queue.shutdown())
        done.set()

    threading.Thread(target=shut).start()
    wait_for(lambda: not queue.accepting)
    with pytest.raises(dowork.QueueShuttingDown):
        queue.submit(lambda: None)
    assert not done.wait(0.05)
    clock.advance(120)
    queue.run_until_idle()  # a shutting-down queue still runs what is due
    assert flaky.done
    assert not done.is_set()
    clock.advance(600)
    assert done.wait(WAIT)
    assert result == [True]
    assert flaky.result(0) == "ok"
    assert later.result(0) == "later"
    with pytest.raises(dowork.QueueShuttingDown):
        queue.submit(lambda: None)
    assert queue.shutdown() is True  # idempotent


def _fails_once() -> Callable[[], str]:
    calls = [0]

    def fn() -> str:
        calls[0] += 1
        if calls[0] == 1:
            raise OSError("first")
        return "ok"

    return fn


def test_shutdown_timeout_cancels_leftovers(make_queue: Callable[..., Queue]) -> None:
    """§4.8: shutdown(timeout) never hangs; leftovers are cancelled and After still runs once."""
    queue = make_queue().start()
    seen: list[TaskStatus] = []
    waiting = queue.enqueue(Task(lambda: None, delay=3600, after=lambda t: seen.append(t.status)))
    started = time.monotonic()
    assert queue.shutdown(timeout=0.1) is False
    assert time.monotonic() - started < WAIT
    assert waiting.status is TaskStatus.CANCELLED
    assert seen == [TaskStatus.CANCELLED]
    with pytest.raises(dowork.TaskCancelled):
        waiting.result(0)


def test_join_shuts_several_queues_in_parallel(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    """D28: join returns only when every queue has drained."""
    q1, q2 = make_queue("one").start(), make_queue("two").start()
    t1 = q1.call_later(10, lambda: 1)
    t2 = q2.call_later(20, lambda: 2)
    done = threading.Event()

    def join_both() -> None:
        dowork.join(q1, q2)
        done.set()

    threading.Thread(target=join_both).start()
    wait_for(lambda: not q1.accepting and not q2.accepting)
    clock.advance(10)
    assert t1.result(WAIT) == 1
    assert not done.wait(0.05)
    clock.advance(10)
    assert done.wait(WAIT)
    assert t2.result(0) == 2


def test_stop_keeps_queued_tasks_for_a_restart(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    gate = threading.Event()
    queue.start()
    first = queue.submit(gate.wait, WAIT)
    queue.stop()
    second = queue.submit(lambda: "resumed")
    gate.set()
    assert first.result(WAIT) is True
    queue.stop()  # a round trip through the loop: the end of the first attempt was handled
    assert second.status is TaskStatus.PENDING
    queue.start()
    assert second.result(WAIT) == "resumed"


def test_run_blocks_until_stopped(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    task = queue.submit(lambda: "ran")
    stopper = queue.submit(lambda: queue.stop())
    queue.run()  # returns when the second task stops it
    assert task.result(0) == "ran"
    assert stopper.done


def test_cancel_pending_task_never_runs(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    ran: list[int] = []
    task = queue.call_later(100, ran.append, 1)
    assert task.cancel() is True
    assert task.status is TaskStatus.CANCELLED
    assert task.cancel() is False
    queue.start()
    queue.shutdown(timeout=1)
    assert ran == []
    with pytest.raises(dowork.TaskCancelled):
        task.result(0)


def test_cancel_running_async_task(make_queue: Callable[..., Queue]) -> None:
    import asyncio

    queue = make_queue().start()
    started = threading.Event()
    cleaned: list[bool] = []

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append(True)

    seen: list[TaskStatus] = []
    task = queue.enqueue(Task(forever, retries=3, after=lambda t: seen.append(t.status)))
    assert started.wait(WAIT)
    assert task.cancel() is True
    assert task.wait(WAIT)
    assert task.status is TaskStatus.CANCELLED
    assert cleaned == [True]
    assert seen == [TaskStatus.CANCELLED]
    assert task.attempts == 1  # no retry after a cancel
    assert queue.submit(lambda: "alive").result(WAIT) == "alive"


def test_cancel_running_sync_task_sets_the_flag(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue().start()
    started = threading.Event()

    def cooperative() -> str:
        started.set()
        me = dowork.current_task()
        deadline = time.monotonic() + WAIT
        while not me.cancel_requested and time.monotonic() < deadline:
            time.sleep(0.001)
        return "saw flag" if me.cancel_requested else "no flag"

    task = queue.submit(cooperative)
    assert started.wait(WAIT)
    assert task.cancel() is True
    assert task.wait(WAIT)
    assert task.status is TaskStatus.CANCELLED


def test_async_deadline_cancels_the_attempt_and_retries(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    """D15: within=d bounds each attempt; a late async attempt is cancelled and counts failed."""
    import asyncio

    queue = make_queue().start()
    attempts: list[int] = []

    async def slow_then_fast() -> str:
        attempts.append(dowork.current_task().attempts)
        if len(attempts) == 1:
            await asyncio.sleep(3600)
        return "fast"

    task = queue.enqueue(Task(slow_then_fast, within=10, retries=1, backoff="immediate"))
    wait_for(lambda: attempts == [1])
    clock.advance(10)
    assert task.result(WAIT) == "fast"
    assert attempts == [1, 2]
    assert isinstance(task.last_error, dowork.TaskTimeout)


def test_sync_deadline_abandons_the_attempt(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    queue = make_queue().start()
    release = threading.Event()
    started = threading.Event()
    flags: list[bool] = []

    def stuck() -> None:
        started.set()
        release.wait(WAIT)
        flags.append(dowork.current_task().cancel_requested)

    task = queue.enqueue(Task(stuck, within=5))
    assert started.wait(WAIT)  # RUNNING alone may mean staged for a thread, not yet called
    clock.advance(5)
    assert task.wait(WAIT)
    error = task.exception(0)
    assert isinstance(error, dowork.MaxRetriesExceeded)
    assert isinstance(error.last_error, dowork.TaskTimeout)
    release.set()
    wait_for(lambda: bool(flags))
    assert flags == [True]
    assert task.status is TaskStatus.FAILED  # the late return changes nothing


def test_bounded_queue_back_pressure(make_queue: Callable[..., Queue]) -> None:
    """G44 (q→§4.11): a full queue makes submit wait, submit_nowait raise QueueFull."""
    queue = make_queue(maxsize=2, concurrency=1).start()
    gate = threading.Event()
    first = queue.submit(gate.wait, WAIT)
    second = queue.submit(lambda: 2)
    with pytest.raises(dowork.QueueFull):
        queue.submit_nowait(lambda: 3)
    with pytest.raises(dowork.QueueFull):
        queue.enqueue(Task(lambda: 3), timeout=0.01)
    waited: list[Task[int]] = []
    thread = threading.Thread(target=lambda: waited.append(queue.submit(lambda: 3)))
    thread.start()
    time.sleep(0.02)
    assert waited == []
    gate.set()
    thread.join(WAIT)
    assert [first.result(WAIT), second.result(WAIT), waited[0].result(WAIT)] == [True, 2, 3]
    assert len(queue) == 0


def test_status_by_id(make_queue: Callable[..., Queue], clock: FakeClock) -> None:
    """G33/G34/G38/G45: status by id through the life of a task."""
    queue = make_queue().start()
    task = queue.enqueue(Task(_fails_once(), retries=1, backoff="fixed", base_delay=30))
    tid = task.id
    queue.run_until_idle()
    assert queue.status(tid) is TaskStatus.RETRYING
    assert queue.get(tid) is task
    assert task.attempts == 1
    assert isinstance(task.last_error, OSError)
    clock.advance(30)
    task.result(WAIT)
    assert queue.status(tid) is TaskStatus.SUCCEEDED
    with pytest.raises(dowork.UnknownTask):
        queue.status("nope")
    assert queue.get("nope") is None


def test_finished_tasks_are_forgotten_after_retention(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(keep_finished=3)
    tasks = [queue.submit(lambda: None) for _ in range(5)]
    ids = [t.id for t in tasks]
    queue.dispatch()
    assert queue.get(ids[0]) is None
    assert queue.get(ids[-1]) is tasks[-1]


def test_a_task_enqueued_from_a_task_while_running(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue().start()
    children: list[Task[str]] = []

    def parent() -> None:
        children.append(queue.submit(lambda: "child"))

    queue.submit(parent).result(WAIT)
    assert children[0].result(WAIT) == "child"


def test_blocking_on_a_task_from_its_loop_is_refused(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue().start()

    async def waits_badly() -> None:
        other = queue.call_later(100, lambda: None)
        other.result(1)

    task = queue.submit(waits_badly)
    with pytest.raises(dowork.MaxRetriesExceeded) as info:
        task.result(WAIT)
    assert "deadlock" in str(info.value.last_error)
    assert queue.shutdown(timeout=0) is False  # cancels the other, still scheduled task


def test_context_manager(make_queue: Callable[..., Queue]) -> None:
    with make_queue() as queue:
        task = queue.submit(lambda: 5)
    assert task.result(0) == 5
    assert not queue.accepting


def test_queue_name_and_option_validation() -> None:
    for bad in ("", "has space", "dash-ed", "ünïcode"):
        with pytest.raises(ValueError, match="must match"):
            Queue(bad)
    assert Queue("ok:name_1").name == "ok:name_1"
    with pytest.raises(ValueError, match="concurrency"):
        Queue("q", concurrency=0)
    with pytest.raises(ValueError, match="concurrency"):
        Queue("q", concurrency=-3)
    with pytest.raises(TypeError, match="concurrency"):
        Queue("q", concurrency=2.5)  # type: ignore[arg-type]  # deliberately not an int
    with pytest.raises(ValueError, match="maxsize"):
        Queue("q", maxsize=-1)
    with pytest.raises(TypeError, match="Hooks"):
        Queue("q", hooks=[object()])  # type: ignore[list-item]  # deliberately not Hooks
    assert Queue("q").concurrency == dowork.default_concurrency()


def test_global_queue_submit_and_shutdown() -> None:
    """The seed's global queue: lazily started on first submit, refuses after shutdown."""
    assert dowork.shutdown() is True  # nothing to do before first use
    task = dowork.submit(lambda x: x + 1, 1)
    assert dowork.global_queue().name == "global"
    assert dowork.global_queue().running
    assert task.result(WAIT) == 2
    other = dowork.enqueue(Task(lambda: "opts", retries=2))
    assert other.result(WAIT) == "opts"
    assert dowork.shutdown() is True
    with pytest.raises(dowork.QueueShuttingDown):
        dowork.submit(lambda: None)


def test_global_task_decorator() -> None:
    @dowork.task(retries=2)
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8  # a direct call runs inline
    assert double.submit(5).result(WAIT) == 10


def test_many_threads_submitting_at_once(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(concurrency=4).start()
    results: list[list[Task[int]]] = [[] for _ in range(8)]

    def returns(i: int) -> Callable[[], int]:
        return lambda: i

    def producer(k: int) -> None:
        for i in range(500):
            results[k].append(queue.submit(returns(i)))

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert queue.shutdown(timeout=WAIT)
    assert all(t.result(0) == i for tasks in results for i, t in enumerate(tasks))


def test_sync_function_returning_a_coroutine_is_a_clear_error(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue()

    async def inner() -> int:
        return 1

    task = queue.submit(lambda: inner())
    queue.dispatch()
    error = task.exception(0)
    assert isinstance(error, dowork.MaxRetriesExceeded)
    assert "async def" in str(error.last_error)


def _unused(_: Any) -> None:  # keeps the Any import honest for type checkers
    return None


def test_d15_deadline_is_readable_inside_the_attempt(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    """D15: each attempt's deadline is `within` after the attempt starts."""
    queue = make_queue()
    seen: list[float | None] = []

    def look() -> None:
        deadline = dowork.current_task().deadline
        seen.append(None if deadline is None else deadline.timestamp())

    queue.enqueue(Task(look, within=30))
    queue.submit(look)
    queue.dispatch()
    assert seen == [clock.now() + 30, None]


def test_current_task_outside_a_task_raises() -> None:
    with pytest.raises(RuntimeError, match="outside"):
        dowork.current_task()


def test_driving_a_shut_down_queue_by_hand_is_a_clear_error(
    make_queue: Callable[..., Queue],
) -> None:
    import asyncio

    queue = make_queue().start()
    assert queue.shutdown() is True
    with pytest.raises(RuntimeError, match="'test' is shut down"):
        queue.dispatch()

    async def adispatch() -> None:
        with pytest.raises(RuntimeError, match="'test' is shut down"):
            await queue.adispatch()

    asyncio.run(adispatch())
