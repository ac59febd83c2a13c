"""The outcomes of one turn of the loop share one reading of the clock, and only they do.

The engine reads the clock once for the outcomes a drain of the thread lane settles, and once
for the async attempts ending in one turn of the loop (``Engine.stamp``, issue 16): an outcome
of a later turn reads the clock again.
"""

from __future__ import annotations

import dowork
from dowork import FakeClock
from dowork.backends import MemoryBackend


def test_an_outcome_of_a_later_turn_reads_the_clock_again() -> None:
    clock = FakeClock(1000.0)
    backend = MemoryBackend()
    queue = dowork.Queue("stamp", backend=backend, clock=clock, log=False)

    @queue.task(name="a")
    async def a() -> int:
        return 1

    @queue.task(name="s")
    def s() -> int:
        return 2

    queue.start()
    try:
        finished: list[float | None] = []
        for fn in (a, s, a, s):
            task = fn.submit()
            assert task.result(timeout=10) in (1, 2)
            (record,) = queue._engine.run_on_home(backend.get([task.id]))
            finished.append(record.finished_at)
            clock.advance(60.0)
        assert finished == [1000.0, 1060.0, 1120.0, 1180.0]
        assert queue._engine.call(lambda: queue._engine.stamp) is None
    finally:
        queue.shutdown()
