"""A task handed to a busy thread lane reads ``reserved`` until a thread starts it (issue 14).

``running`` and one more attempt only when the function starts: the handle, hooks and
deadlines agree on that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from dowork import Hooks, Queue, Task, TaskStatus
from tests.waiting import wait_for

WAIT = 5.0


def test_task_waiting_for_a_thread_is_reserved_not_running(
    make_queue: Callable[..., Queue],
) -> None:
    gate = threading.Event()
    seen: list[tuple[str, TaskStatus, int]] = []

    class Watch(Hooks):
        def before_attempt(self, task: Task[Any]) -> None:
            seen.append((task.id, task.status, task.attempts))

    queue = make_queue(concurrency=1, hooks=[Watch()]).start()
    first = queue.submit(gate.wait, WAIT)
    wait_for(lambda: first.status is TaskStatus.RUNNING)
    second = queue.submit(lambda: "second")
    wait_for(lambda: second.status is not TaskStatus.PENDING)
    assert second.status is TaskStatus.RESERVED
    assert second.attempts == 0
    assert first.attempts == 1
    gate.set()
    assert second.result(WAIT) == "second"
    assert second.attempts == 1
    status: TaskStatus = second.status  # read again: mypy still narrows it to RESERVED above
    assert status is TaskStatus.SUCCEEDED
    # The hook saw each attempt once, as started: running, counted.
    assert [(i, s, n) for i, s, n in seen if i == second.id] == [(second.id, TaskStatus.RUNNING, 1)]


def test_reserved_task_cancelled_never_runs(make_queue: Callable[..., Queue]) -> None:
    gate = threading.Event()
    ran: list[int] = []
    queue = make_queue(concurrency=1).start()
    first = queue.submit(gate.wait, WAIT)
    wait_for(lambda: first.status is TaskStatus.RUNNING)
    second = queue.submit(lambda: ran.append(1))
    wait_for(lambda: second.status is TaskStatus.RESERVED)
    assert second.cancel()
    gate.set()
    first.result(WAIT)
    wait_for(lambda: second.done)
    assert second.status is TaskStatus.CANCELLED
    assert second.attempts == 0
    assert ran == []
