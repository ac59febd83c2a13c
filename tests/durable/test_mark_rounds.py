"""A start mark is written once an attempt ran a whole round, never for a shorter attempt.

The rounds are driven by hand here (``_MARK_DELAY`` is a minute, so no round comes on its
own): the test calls ``_write_marks`` on the worker's loop, as its timer would, and reads what
that round put in the outbox at once, so nothing depends on the machine's speed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from dowork import Queue, TaskStatus
from dowork.backends import Outcome
from dowork.durable import DurableSource, starts
from tests.waiting import wait_for

from .reads import records_of

WAIT = 20.0
pytestmark = pytest.mark.realtime


def _round(queue: Queue, source: DurableSource) -> list[str]:
    """Run one round of marks on the worker's loop: the ids whose mark it queued."""

    def run() -> list[str]:
        before = {id(s) for s in source._outbox}
        source._write_marks()
        return [
            s.id for s in source._outbox if s.outcome is Outcome.STARTED and id(s) not in before
        ]

    return queue._engine.call(run)


def test_a_mark_waits_a_whole_round_and_a_shorter_attempt_writes_none(
    stores: Callable[..., Queue], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(starts, "_MARK_DELAY", 60.0)
    queue = stores(concurrency=2)
    reader = stores()
    began = {1: threading.Event(), 2: threading.Event()}
    go = {1: threading.Event(), 2: threading.Event()}

    @queue.task(name="work")
    def work(n: int) -> int:
        began[n].set()
        assert go[n].wait(WAIT)
        return n

    reader.task(name="work")(work)
    source = queue._engine.source
    assert isinstance(source, DurableSource)
    queue.start()
    first = queue.submit(work, 1)
    assert began[1].wait(WAIT)
    wait_for(lambda: first.id in source._marks)
    assert _round(queue, source) == []  # it started during this round: not yet
    second = queue.submit(work, 2)
    assert began[2].wait(WAIT)
    wait_for(lambda: second.id in source._marks)
    assert _round(queue, source) == [first.id]  # a whole round: marked; the second not yet
    wait_for(lambda: reader.status(first.id) is TaskStatus.RUNNING)
    go[2].set()  # the second ends before its round: its outcome counts its start
    assert second.result(WAIT) == 2
    assert _round(queue, source) == []
    go[1].set()
    assert first.result(WAIT) == 1
    assert _round(queue, source) == []
    assert queue.shutdown(timeout=WAIT)
    records = records_of(reader)
    for task in (first, second):  # each start counted once: by its mark or by its outcome
        assert (records[task.id].status, records[task.id].started) == ("succeeded", 1)
