"""What the SQLite and Redis poison tests share: the pace of a started worker over healthy
tasks, without a bad record among them and with one (which must not slow it down much)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from dowork import Queue, Task


def seconds_to_run(
    queue: Queue,
    handles: Sequence[Task[Any]],
    result_of: Callable[[Task[Any]], Any],
    timeout: float,
) -> float:
    """Start ``queue``; the seconds until every handle has its result (``result_of`` it)."""
    began = time.monotonic()
    queue.start()
    assert [h.result(timeout=timeout) for h in handles] == [result_of(h) for h in handles]
    return time.monotonic() - began


def healthy_alone(
    queue: Queue,
    submit: Callable[[], Sequence[Task[Any]]],
    result_of: Callable[[Task[Any]], Any],
    timeout: float,
) -> float:
    """``seconds_to_run`` for the tasks ``submit()`` stores with no bad record among them (the
    pace to compare with); ``queue`` is shut down after."""
    try:
        return seconds_to_run(queue, submit(), result_of, timeout)
    finally:
        queue.shutdown(timeout=5)
