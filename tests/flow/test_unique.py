"""Unique jobs: while a task with a unique key waits or runs, enqueueing another is a no-op."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dowork import Queue, Task, TaskStatus


def test_a_unique_task_is_enqueued_once_while_unfinished(
    durable_queue: Callable[..., Queue],
) -> None:
    queue = durable_queue()
    ran: list[str] = []

    @queue.task(name="refresh")
    def refresh(account: str) -> str:
        ran.append(account)
        return account

    first = queue.enqueue(refresh.task("ada").configure(unique_key="refresh:ada"))
    second = queue.enqueue(refresh.task("ada").configure(unique_key="refresh:ada"))
    other = queue.enqueue(refresh.task("bob").configure(unique_key="refresh:bob"))
    assert second.id == first.id  # a handle on the task already waiting
    assert first.unique_key == "refresh:ada"
    while queue.dispatch():
        pass
    assert sorted(ran) == ["ada", "bob"]
    assert queue.status(first.id) is TaskStatus.SUCCEEDED
    assert queue.status(other.id) is TaskStatus.SUCCEEDED
    later = queue.enqueue(refresh.task("ada").configure(unique_key="refresh:ada"))
    assert later.id != first.id  # the first finished: the key was free again
    while queue.dispatch():
        pass
    assert ran.count("ada") == 2


def test_unique_keys_are_checked_where_they_are_written(make_queue: Callable[..., Queue]) -> None:
    with pytest.raises(ValueError, match="not both"):
        Task(len).configure(unique_key="a", idempotency_key="b")
    with pytest.raises(TypeError, match="unique_key must be a non-empty str"):
        Task(len).configure(unique_key="")
    with pytest.raises(ValueError, match="unique_key needs a durable queue"):
        make_queue(log=False).enqueue(Task(len, args=("x",)).configure(unique_key="k"))
