"""A worker whose slots all stay busy gives back the tasks it holds beyond its hold.

README, "Prefetch": tasks a worker claimed while its tasks were short would otherwise wait
behind long ones that took every slot, while an idle worker could run them. Worker ``A`` (one
slot) claims a long task and three short ones while its hold is 3; the hold then falls to 0 (as
it does once no task has left the worker for a while); within ``min(maintenance, 0.25 s)`` of
its only slot staying busy it gives the three back (two, if the hold fell to 1), and the idle
worker ``B`` runs them while the long task still runs in ``A``. Sync tasks wait in the thread
lane (taken back before any thread starts them), async ones in the ready line. A fixed prefetch
gives none back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from dowork import DurableSettings, Queue, TaskStatus
from dowork.durable import DurableSource
from dowork.durable.pace import Pace
from tests.waiting import wait_for

from .reads import count_looks, records_of

WAIT = 20.0
pytestmark = pytest.mark.realtime


class _Falls(Pace):
    """A hold of 3 until ``fell`` is set, then ``to`` (a fixed prefetch: 3 always)."""

    def __init__(self, fell: threading.Event, window: float | None, to: int) -> None:
        super().__init__(3, window, 0.0)
        self.fell, self.to = fell, to

    def hold(self, held: int, now: float) -> int:
        return self.to if self.fell.is_set() and self.window is not None else 3


def _work(
    where: str, ran: dict[int, str], fell: threading.Event, go: threading.Event, is_async: bool
) -> Callable[[int], Any]:
    """The task function of one queue: task 0 is the long one (until ``go``)."""

    def work(n: int) -> int:
        ran[n] = where
        if n == 0:
            fell.set()
            assert go.wait(WAIT)
        return n

    async def awork(n: int) -> int:
        ran[n] = where
        if n == 0:
            fell.set()
            assert await asyncio.to_thread(go.wait, WAIT)
        return n

    return awork if is_async else work


@pytest.mark.parametrize("is_async", [False, True], ids=["def", "async"])
@pytest.mark.parametrize(
    ("window", "to", "urgent"),
    [(0.02, 0, False), (0.02, 1, False), (0.02, 1, True), (None, 0, False)],
    ids=["to-0", "to-1", "to-1-priorities", "fixed"],
)
def test_a_worker_with_every_slot_busy_gives_back_what_it_holds(
    stores: Callable[..., Queue], is_async: bool, window: float | None, to: int, urgent: bool
) -> None:
    """``urgent``: task ``n`` has priority ``n`` (the long one 9): 3 is the one kept."""
    settings = DurableSettings(lease=60.0, maintenance=0.2, prefetch_window=window)
    busy = stores(concurrency=1, durable=settings)
    # The idle worker waits up to a minute: the tasks given back wake it (a retry due now).
    idle = stores(concurrency=1, durable=DurableSettings(lease=120.0, maintenance=60.0))
    producer = stores()
    go, fell = threading.Event(), threading.Event()
    ran: dict[int, str] = {}

    def worker(where: str) -> Callable[[int], Any]:
        return _work(where, ran, fell, go, is_async)

    busy.task(name="work")(worker("busy"))
    idle.task(name="work")(worker("idle"))
    submit = producer.task(name="work")(worker("producer"))
    source = busy._engine.source
    assert isinstance(source, DurableSource)
    source._pace = _Falls(fell, window, to)
    looks = count_looks(busy)
    if urgent:
        tasks = [submit.task(n).configure(priority=9 if n == 0 else n) for n in range(4)]
        handles = [producer.enqueue(task) for task in tasks]
    else:
        handles = [submit.submit(n) for n in range(4)]
    kept = 3 if urgent else 1  # the most urgent short task
    busy.start()
    wait_for(lambda: all(r.owner is not None for r in records_of(producer).values()))
    assert fell.wait(WAIT)
    idle.start()
    shorts = handles[1:]
    if window is None:  # a fixed prefetch holds them: nothing given back, however long
        seen = looks[0]
        wait_for(lambda: looks[0] >= seen + 3)  # (each look after a whole wait: 0.2 s)
        assert all(producer.status(h.id) is TaskStatus.RESERVED for h in shorts)
        assert ran == {0: "busy"}
    else:  # the least urgent go first
        given = [h for h in shorts if to == 0 or h.args[0] != kept]
        for handle in given:
            assert handle.result(WAIT) == handle.args[0]
        assert {h.args[0]: ran[h.args[0]] for h in given} == {h.args[0]: "idle" for h in given}
        assert producer.status(handles[0].id) is TaskStatus.RUNNING  # (still in busy)
        for record in (records_of(producer)[h.id] for h in given):
            # Claimed twice, started once; the hand-back used no retry and counted no crash.
            assert (record.attempts, record.started, record.crashes) == (2, 1, 0)
        assert source._pace.taken == 4 - len(given)  # (given back: not counted as taken)
        if to:
            assert producer.status(handles[kept].id) is TaskStatus.RESERVED  # kept: hold 1
            assert kept not in ran
    go.set()
    assert handles[0].result(WAIT) == 0
    for handle in shorts:
        assert handle.result(WAIT) == handle.args[0]
    assert ran[0] == "busy"
    assert sorted(ran) == [0, 1, 2, 3]
    if to:
        assert ran[kept] == "busy"
