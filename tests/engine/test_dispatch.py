"""The seed's dowork behaviours, driven by hand with dispatch() on a fake clock.

Numbers in test docstrings refer to seeds-spec.md §5; where §4 recommends a change from the Go
original, the test asserts the recommended behaviour.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import dowork
from dowork import DoNotRetry, FakeClock, MaxRetriesExceeded, Queue, Task, TaskStatus

MIN = 60.0


class Recorder:
    """A task function that fails a set number of times, recording each call."""

    def __init__(self, fail: int = 0, error: BaseException | None = None) -> None:
        self.fail = fail
        self.error = error or ValueError("boom")
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.fail:
            raise self.error
        return "ok"


def drain(queue: Queue, clock: FakeClock, step: float = 3600, limit: int = 100) -> int:
    """Dispatch and advance time until nothing is left; return the number of passes."""
    for passes in range(1, limit + 1):
        if not queue.dispatch():
            return passes
        clock.advance(step)
    raise AssertionError("queue did not drain")


@pytest.fixture
def queue(make_queue: Callable[..., Queue]) -> Queue:
    return make_queue()


def test_d1_default_task_runs_once(queue: Queue, clock: FakeClock) -> None:
    """D1: a failing task with default options is called exactly once."""
    fn = Recorder(fail=99)
    task = queue.submit(fn)
    drain(queue, clock)
    assert fn.calls == 1
    assert task.status is TaskStatus.FAILED
    assert isinstance(task.exception(0), MaxRetriesExceeded)


def test_d2_retries_n_means_n_reruns(queue: Queue, clock: FakeClock) -> None:
    """D2/D3 (q→§4.1/4.2): retries=3 calls an always-failing function 4 times, no phantom call."""
    fn = Recorder(fail=99)
    task = queue.enqueue(Task(fn, retries=3, jitter=False))
    drain(queue, clock)
    assert fn.calls == 4
    assert task.attempts == 4
    error = task.exception(0)
    assert isinstance(error, MaxRetriesExceeded)
    assert error.attempts == 4
    assert error.last_error is fn.error
    assert error.__cause__ is fn.error
    with pytest.raises(MaxRetriesExceeded):
        task.result(0)


def test_d4_success(queue: Queue, clock: FakeClock) -> None:
    """D4: a successful task is done with its value and no next attempt."""
    task = queue.submit(lambda: 42)
    assert queue.dispatch() is False
    assert task.done
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result(0) == 42
    assert task.exception(0) is None
    assert task.next_attempt is None


def test_d5_finished_task_cannot_run_again(queue: Queue) -> None:
    """D5: a finished task is not attempted again (enqueueing it raises AlreadyComplete)."""
    fn = Recorder()
    task = queue.enqueue(Task(fn))
    queue.dispatch()
    with pytest.raises(dowork.AlreadyComplete):
        queue.enqueue(task)
    queue.dispatch()
    assert fn.calls == 1


def test_enqueueing_a_task_twice_raises(queue: Queue) -> None:
    task = queue.enqueue(Task(Recorder()))
    with pytest.raises(ValueError, match="already enqueued"):
        queue.enqueue(task)


def test_d6_d7_d8_after_callback_exactly_once(queue: Queue, clock: FakeClock) -> None:
    """D6-D8 (q→§4.2): the after-callback runs once, at the final attempt, with the task."""
    seen: list[tuple[TaskStatus, int]] = []
    fn = Recorder(fail=2)
    task = queue.enqueue(
        Task(fn, retries=5, jitter=False, after=lambda t: seen.append((t.status, t.attempts)))
    )
    queue.dispatch()
    assert seen == []  # D7: not on a failure with budget left
    clock.advance(2 * MIN)
    queue.dispatch()
    assert seen == []
    clock.advance(4 * MIN)
    assert queue.dispatch() is False
    assert seen == [(TaskStatus.SUCCEEDED, 3)]
    assert task.result(0) == "ok"


def test_after_callback_called_at_once_on_exhaustion(queue: Queue, clock: FakeClock) -> None:
    """§4.2: After runs right after the last failing run, not one backoff later."""
    seen: list[BaseException | None] = []
    task = queue.enqueue(
        Task(Recorder(fail=9), retries=1, jitter=False, after=lambda t: seen.append(t.exception(0)))
    )
    queue.dispatch()
    clock.advance(2 * MIN)
    assert queue.dispatch() is False
    assert len(seen) == 1
    assert isinstance(seen[0], MaxRetriesExceeded)
    assert task.done


def test_d9_backoff_stamps_follow_the_queue_clock(queue: Queue, clock: FakeClock) -> None:
    """D9/D20 (q→§4.5): next_attempt = clock + 2, 4, 8, 16, 30, 30 minutes with no jitter."""
    task = queue.enqueue(Task(Recorder(fail=99), retries=10, jitter=False))
    gaps = []
    for _ in range(6):
        queue.dispatch()
        assert task.next_attempt is not None
        gap = task.next_attempt.timestamp() - clock.now()
        gaps.append(gap)
        clock.advance(gap)
    assert gaps == [2 * MIN, 4 * MIN, 8 * MIN, 16 * MIN, 30 * MIN, 30 * MIN]


def test_d10_max_delay(queue: Queue, clock: FakeClock) -> None:
    """D10: with max_delay=10 min the delay stops growing at 10 minutes."""
    task = queue.enqueue(
        Task(Recorder(fail=99), retries=10, jitter=False, max_delay=timedelta(minutes=10))
    )
    gaps = []
    for _ in range(5):
        queue.dispatch()
        assert task.next_attempt is not None
        gaps.append(task.next_attempt.timestamp() - clock.now())
        clock.advance(gaps[-1])
    assert gaps[-2:] == [10 * MIN, 10 * MIN]


def test_d11_d12_jitter(queue: Queue, clock: FakeClock) -> None:
    """D11/D12: jittered first delay is 1-3 whole minutes; no delay exceeds 30 minutes."""
    tasks = [queue.enqueue(Task(Recorder(fail=99), retries=20)) for _ in range(30)]
    queue.dispatch()
    firsts: set[float] = set()
    for t in tasks:
        assert t.next_attempt is not None
        firsts.add(t.next_attempt.timestamp() - clock.now())
    assert firsts <= {MIN, 2 * MIN, 3 * MIN}
    assert len(firsts) > 1
    for _ in range(20):
        clock.advance(30 * MIN)
        queue.dispatch()
        for t in tasks:
            if t.next_attempt is not None:
                assert t.next_attempt.timestamp() - clock.now() <= 30 * MIN


def test_d13_do_not_retry_ends_at_once(queue: Queue, clock: FakeClock) -> None:
    """D13 (q→§4.4): DoNotRetry: called once, done at once, After once, no tight loop."""
    fn = Recorder(fail=99, error=DoNotRetry("bad address"))
    after: list[int] = []
    task = queue.enqueue(Task(fn, retries=5, after=lambda t: after.append(t.attempts)))
    assert queue.dispatch() is False
    assert fn.calls == 1
    assert task.status is TaskStatus.FAILED
    assert isinstance(task.exception(0), DoNotRetry)
    assert after == [1]


def test_do_not_retry_keeps_its_cause(queue: Queue) -> None:
    def fn() -> None:
        try:
            raise KeyError("x")
        except KeyError as exc:
            raise DoNotRetry("no such user") from exc

    task = queue.submit(fn)
    queue.dispatch()
    error = task.exception(0)
    assert isinstance(error, DoNotRetry)
    assert isinstance(error.__cause__, KeyError)


def test_d14_exceptions_become_the_outcome(queue: Queue) -> None:
    """D14: an exception (Python's panic) is a failed attempt, the worker survives."""

    def fn() -> None:
        raise RuntimeError("panic")

    task = queue.submit(fn)
    ok = queue.submit(lambda: 1)
    queue.dispatch()
    assert isinstance(task.exception(0), MaxRetriesExceeded)
    assert isinstance(task.last_error, RuntimeError)
    assert ok.result(0) == 1


def test_d16_not_before_is_respected(queue: Queue, clock: FakeClock) -> None:
    """D16 (q→§4.19): a not-before task runs once the clock reaches it (due = when <= now)."""
    fn = Recorder()
    task = queue.enqueue(Task(fn, not_before=clock.now() + 100))
    assert task.status is TaskStatus.PENDING or task.status is TaskStatus.SCHEDULED
    assert queue.dispatch() is True
    assert fn.calls == 0
    assert task.status is TaskStatus.SCHEDULED
    clock.advance(99.5)
    assert queue.dispatch() is True
    assert fn.calls == 0
    clock.advance(0.5)
    assert queue.dispatch() is False
    assert fn.calls == 1


def test_d17_d18_dispatch_return_value(queue: Queue, clock: FakeClock) -> None:
    """D17/D18: False on empty and after success; True while a retry waits."""
    assert queue.dispatch() is False
    queue.submit(Recorder())
    assert queue.dispatch() is False
    task = queue.enqueue(Task(Recorder(fail=1), retries=1, jitter=False))
    assert queue.dispatch() is True
    assert task.status is TaskStatus.RETRYING
    assert queue.dispatch() is True  # nothing due, still pending
    clock.advance(2 * MIN)
    assert queue.dispatch() is False


def test_d19_dispatch_runs_due_tasks_in_enqueue_order(make_queue: Callable[..., Queue]) -> None:
    """D19: with one worker, due tasks run one after another in enqueue order."""
    queue = make_queue(concurrency=1)
    order: list[int] = []
    for i in range(10):
        queue.submit(order.append, i)
    queue.dispatch()
    assert order == list(range(10))


def test_dispatch_attempts_each_due_task_once_per_pass(queue: Queue) -> None:
    fn = Recorder(fail=99)
    queue.enqueue(Task(fn, retries=5, backoff="immediate"))
    queue.dispatch()
    assert fn.calls == 1
    queue.dispatch()
    assert fn.calls == 2


def test_d29_task_may_enqueue_another(queue: Queue) -> None:
    """D29: a task enqueues another on its own queue without deadlock; it runs next pass."""
    ran: list[str] = []

    def child() -> None:
        ran.append("child")

    def parent() -> None:
        ran.append("parent")
        queue.submit(child)

    async def aparent() -> None:
        ran.append("aparent")
        queue.submit(child)

    queue.submit(parent)
    queue.submit(aparent)
    assert queue.dispatch() is True
    assert sorted(ran) == ["aparent", "parent"]
    assert queue.dispatch() is False
    assert ran.count("child") == 2


def test_async_and_sync_tasks_share_one_engine(queue: Queue, clock: FakeClock) -> None:
    async def aflaky(box: list[int]) -> str:
        box.append(1)
        if len(box) < 3:
            raise OSError("later")
        return "async ok"

    box: list[int] = []
    task = queue.enqueue(Task(aflaky, args=(box,), retries=3, backoff="fixed", base_delay=5))
    drain(queue, clock, step=5)
    assert task.result(0) == "async ok"
    assert task.attempts == 3


def test_should_retry_false_ends_with_the_error_itself(queue: Queue) -> None:
    fn = Recorder(fail=99, error=KeyError("k"))
    task = queue.enqueue(Task(fn, retries=5, should_retry=lambda e: isinstance(e, OSError)))
    assert queue.dispatch() is False
    assert fn.calls == 1
    assert isinstance(task.exception(0), KeyError)


def test_should_retry_that_raises_ends_the_task(queue: Queue) -> None:
    def broken(exc: BaseException) -> bool:
        raise ZeroDivisionError

    task = queue.enqueue(Task(Recorder(fail=9), retries=5, should_retry=broken))
    assert queue.dispatch() is False
    assert task.status is TaskStatus.FAILED


def test_retry_forever(queue: Queue, clock: FakeClock) -> None:
    """§4.3: retries=-1 runs (and does not end) until the function succeeds."""
    fn = Recorder(fail=50)
    task = queue.enqueue(Task(fn, retries=-1, backoff="fixed", base_delay=1))
    drain(queue, clock, step=1)
    assert fn.calls == 51
    assert task.result(0) == "ok"


def test_after_callback_that_raises_is_logged_and_outcome_stands(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_after(task: Task[Any]) -> None:
        raise RuntimeError("after broke")

    task = queue.enqueue(Task(Recorder(), after=bad_after))
    queue.submit(lambda: None)
    assert queue.dispatch() is False
    assert task.result(0) == "ok"
    assert any("after-callback" in r.message for r in caplog.records)


def test_async_after_callback_is_awaited(queue: Queue) -> None:
    seen: list[str] = []

    async def after(task: Task[Any]) -> None:
        seen.append(task.result(0))

    queue.enqueue(Task(Recorder(), after=after))
    queue.dispatch()
    assert seen == ["ok"]


def test_concurrency_bounds_parallel_attempts(make_queue: Callable[..., Queue]) -> None:
    """G46: with concurrency 2, two blocking tasks run at the same time (and never three)."""
    queue = make_queue(concurrency=2)
    barrier = threading.Barrier(2, timeout=5)
    lock = threading.Lock()
    running = [0, 0]

    def blocking() -> None:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        barrier.wait()
        with lock:
            running[0] -= 1

    tasks = [queue.submit(blocking) for _ in range(6)]
    queue.dispatch()
    assert all(t.status is TaskStatus.SUCCEEDED for t in tasks)
    assert running[1] == 2


def test_task_of_an_async_task_function_runs_on_the_loop(queue: Queue) -> None:
    @queue.task
    async def fetch(x: int) -> str:
        return f"got {x}"

    assert isinstance(fetch, dowork.AsyncTaskFunction)
    task = queue.enqueue(Task(fetch, args=(1,)))
    by_submit = queue.submit(fetch, 2)
    queue.dispatch()
    assert task.result(0) == "got 1"
    assert by_submit.result(0) == "got 2"


def test_task_function_with_options_keeps_its_class(queue: Queue) -> None:
    @queue.task(retries=2)
    def add(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3
    other = add.with_options(retries=5)
    assert isinstance(other, dowork.SyncTaskFunction)
    assert other.options == {"retries": 5}
    task = other.submit(2, 3)
    queue.dispatch()
    assert task.result(0) == 5
    assert task.policy.retries == 5
