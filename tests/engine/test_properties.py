"""Property: every enqueued task finishes exactly once, whatever its failures and options."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dowork
from dowork import Task, TaskStatus

plans = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=4),  # failures before success
        st.integers(min_value=-1, max_value=3),  # retries
        st.sampled_from(["exponential", "fixed", "linear", "immediate"]),
        st.booleans(),  # async?
        st.booleans(),  # raise DoNotRetry instead
        st.booleans(),  # cancel before start
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans=plans, concurrency=st.integers(min_value=1, max_value=4))
def test_every_task_finishes_exactly_once(plans: list[tuple[Any, ...]], concurrency: int) -> None:
    clock = dowork.FakeClock()
    queue = dowork.Queue("prop", clock=clock, concurrency=concurrency, log=False)
    afters: Counter[int] = Counter()
    tasks: list[tuple[Task[Any], tuple[Any, ...]]] = []
    for i, plan in enumerate(plans):
        fails, retries, backoff, is_async, dnr, cancel = plan
        calls = [0]

        def fn(calls: list[int] = calls, fails: int = fails, dnr: bool = dnr) -> int:
            calls[0] += 1
            if calls[0] <= fails:
                raise dowork.DoNotRetry() if dnr else OSError()
            return calls[0]

        async def afn(calls: list[int] = calls, fails: int = fails, dnr: bool = dnr) -> int:
            return fn(calls, fails, dnr)

        task = Task(
            afn if is_async else fn,
            retries=retries,
            backoff=backoff,
            max_delay=600,
            after=lambda t, i=i: afters.update([i]),
        )
        queue.enqueue(task)
        if cancel:
            task.cancel()
        tasks.append((task, (fails, retries, dnr, cancel, calls)))
    for _ in range(200):
        if not queue.dispatch():
            break
        clock.advance(600)
    assert len(queue) == 0
    for i, (task, plan) in enumerate(tasks):
        assert task.done
        assert afters[i] == 1
        check_outcome(task, *plan)


def check_outcome(
    task: Task[Any], fails: int, retries: int, dnr: bool, cancel: bool, calls: list[int]
) -> None:
    if cancel:
        assert task.status is TaskStatus.CANCELLED
        assert calls[0] == 0
    elif fails == 0:
        assert task.result(0) == 1
    elif dnr:
        assert calls[0] == 1
        assert task.status is TaskStatus.FAILED
    elif retries == -1 or fails <= retries:
        assert task.result(0) == fails + 1
    else:
        assert task.status is TaskStatus.FAILED
        assert calls[0] == retries + 1
    assert task.attempts == calls[0]
