"""Task options: defaults, validation, freezing (seed behaviours D21-D23)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

import dowork
from dowork import Task, TaskFrozen, TaskStatus


def work() -> int:
    return 1


def test_defaults() -> None:
    task = Task(work)
    assert task.policy.retries == 0
    assert task.policy.max_delay == 1800
    assert task.within is None
    assert task.not_before is None
    assert task.status is TaskStatus.PENDING
    assert not task.done
    assert task.attempts == 0
    assert task.next_attempt is None
    assert not task.frozen


def test_unfinished_is_every_status_but_the_final_ones_in_one_place() -> None:
    """``UNFINISHED`` is what dispatch(), the dashboard's Cancel and the demo wait on; the
    operators' lists and the stores' record statuses agree with it."""
    from dowork.admin import PURGEABLE, STATUSES
    from dowork.backends._protocol import LEASED, WAITING
    from dowork.task import UNFINISHED

    assert set(UNFINISHED) == {s for s in TaskStatus if not s.final}
    assert set(UNFINISHED) == {"pending", "scheduled", "retrying", "reserved", "running"}
    assert sorted(UNFINISHED) == sorted(WAITING + LEASED)
    assert tuple(TaskStatus) == STATUSES  # the same strings, in the same order
    assert set(PURGEABLE) == set(STATUSES) - {"reserved", "running"}


def test_options_in_constructor_and_configure() -> None:
    when = datetime(2030, 1, 1, tzinfo=UTC)
    task = Task(work, retries=5, max_delay=timedelta(minutes=10), within=10, not_before=when)
    assert task.policy.retries == 5
    assert task.policy.max_delay == 600
    assert task.within == 10
    assert task.not_before == when
    assert task.configure(jitter=False) is task
    assert not task.policy.jittered


def test_submitted_task_cannot_be_configured(make_queue: Callable[..., dowork.Queue]) -> None:
    queue = make_queue()
    task = queue.submit(work)
    with pytest.raises(TaskFrozen):
        task.configure(retries=3)
    enqueued = queue.enqueue(Task(work))
    with pytest.raises(TaskFrozen):
        enqueued.configure(within=1)


def test_second_after_callback_raises() -> None:
    task = Task(work, after=lambda t: None)
    with pytest.raises(ValueError, match="already has an after-callback"):
        task.configure(after=lambda t: None)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"retries": -2}, ValueError),
        ({"max_delay": -1}, ValueError),
        ({"within": -5}, ValueError),
        ({"within": "10"}, TypeError),
        ({"after": 42}, TypeError),
        ({"not_before": "tomorrow"}, TypeError),
        ({"delay": -1}, ValueError),
        ({"backoff": "sometimes"}, ValueError),
        ({"no_such_option": 1}, TypeError),
    ],
)
def test_bad_options_raise_where_written(
    options: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        Task(work, **options)  # type: ignore[call-overload]  # deliberately bad options


def test_naive_not_before_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Task(work, not_before=datetime(2030, 1, 1))


def test_non_callable_is_refused(make_queue: Callable[..., dowork.Queue]) -> None:
    with pytest.raises(TypeError, match="callable"):
        Task(42)  # type: ignore[call-overload]  # deliberately not callable
    with pytest.raises(TypeError, match="callable"):
        make_queue().submit("not a function")  # type: ignore[call-overload]  # not callable


def test_result_of_unfinished_task_raises_at_once(make_queue: Callable[..., dowork.Queue]) -> None:
    task = make_queue().submit(work)
    with pytest.raises(dowork.TaskNotDone):
        task.result(timeout=0)
    with pytest.raises(RuntimeError, match="never enqueued"):
        Task(work).result(timeout=1)


def test_id_is_stable_and_unique() -> None:
    a, b = Task(work), Task(work)
    assert a.id == a.id
    assert a.id != b.id
    assert len(a.id) == 32


def test_async_detection() -> None:
    import functools

    async def coro(x: int) -> int:
        return x

    class AsyncCallable:
        async def __call__(self) -> None:
            return None

    assert Task(coro).is_async
    assert Task(functools.partial(coro, 1)).is_async
    assert Task(AsyncCallable()).is_async
    assert not Task(work).is_async
    assert not Task(functools.partial(work)).is_async
