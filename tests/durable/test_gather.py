"""A busy worker lets outcomes gather for a moment after a write, never when tasks are few.

``_GATHER`` is set to a minute here, so that nothing depends on the machine's speed: a write
that waited for it would fail the test (its results arrive within ``WAIT``). So is the delay
before a running task's start mark is written, which would write the outcomes gathered so far
with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from dowork import DurableSettings, Queue, TaskStatus
from dowork.backends import Outcome, Settlement
from dowork.durable import DurableSource, flush, starts

WAIT = 20.0
pytestmark = pytest.mark.realtime


def test_outcomes_gather_after_a_write_and_a_stop_writes_them(
    stores: Callable[..., Queue], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flush, "_GATHER", 60.0)
    monkeypatch.setattr(starts, "_MARK_DELAY", 60.0)
    queue = stores(concurrency=1, durable=DurableSettings(batch=4))
    reader = stores()

    @queue.task(name="work")
    def work(n: int) -> int:
        return n

    reader.task(name="work")(work)
    source = queue._engine.source
    assert isinstance(source, DurableSource)
    writes: list[list[str]] = []
    settle = source.backend.settle

    async def recorded(settlements: Sequence[Settlement], **kw: Any) -> list[str]:
        writes.append([s.id for s in settlements if s.outcome is not Outcome.STARTED])
        return await settle(settlements, **kw)

    monkeypatch.setattr(source.backend, "settle", recorded)
    queue.start()
    first = queue.submit(work, 1)
    assert first.result(WAIT) == 1  # no write before it: written at once
    assert [w for w in writes if w] == [[first.id]]
    second, third = queue.submit(work, 2), queue.submit(work, 3)
    assert (second.result(WAIT), third.result(WAIT)) == (2, 3)  # half a batch: written then
    assert [w for w in writes if w][1:] == [[second.id, third.id]]
    fourth = queue.submit(work, 4)
    deadline = time.monotonic() + WAIT
    while source._gathering is None:  # its outcome waits for the next write
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert not fourth.done
    assert reader.status(fourth.id) is not TaskStatus.SUCCEEDED
    assert queue.shutdown(timeout=WAIT)  # a stop writes it at once
    assert fourth.result(0) == 4
    assert reader.status(fourth.id) is TaskStatus.SUCCEEDED
    assert [w for w in writes if w][2:] == [[fourth.id]]


def test_a_worker_that_has_not_written_for_a_while_writes_at_once(
    stores: Callable[..., Queue], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flush, "_GATHER", 60.0)
    queue = stores(concurrency=2)

    @queue.task(name="work")
    def work(n: int) -> int:
        return n

    source = queue._engine.source
    assert isinstance(source, DurableSource)
    queue.start()
    assert queue.submit(work, 1).result(WAIT) == 1
    source._written_at -= 60.0  # as if its last write were a minute ago
    assert queue.submit(work, 2).result(WAIT) == 2
