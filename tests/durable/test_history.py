"""A worker's attempts in its record's history, on every durable store: one JSON line each."""

from __future__ import annotations

import json
from collections.abc import Callable

from dowork import FakeClock, Queue, RetryPolicy
from dowork.backends import Backend
from tests.durable.reads import records_of


def test_each_attempt_leaves_one_line_with_its_start_duration_and_outcome(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    """An attempt that raised keeps its error and traceback; one that did not its number,
    start, duration and outcome only (the line a store writes from ``took``); both read back
    as JSON, in order."""
    clock = FakeClock(1_700_000_000.0)
    queue = queues(store, clock=clock, retry=RetryPolicy(retries=3, base=1.0, jitter=False))
    calls: list[int] = []

    @queue.task(name="flaky")
    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first time")
        return "ok"

    task = flaky.submit()
    while queue.dispatch():
        clock.advance(1.0)
    assert task.result(timeout=5) == "ok"
    history = records_of(queue)[task.id].history
    assert history is not None
    assert history.endswith("\n")
    failed, succeeded = (json.loads(line) for line in history.splitlines())
    assert (failed["n"], failed["outcome"]) == (1, "retry")
    assert failed["error"] == "ValueError: first time"
    assert "ValueError" in failed["traceback"]
    assert set(succeeded) == {"n", "start", "took", "outcome"}
    assert (succeeded["n"], succeeded["outcome"]) == (2, "succeeded")
    assert 0.0 <= succeeded["took"] < 5.0
    assert abs(succeeded["start"] + succeeded["took"] - clock.now()) < 1.5
