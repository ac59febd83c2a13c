"""A busy worker claims again as its tasks finish, without being woken by each of them.

While the fetcher waits for room (every slot and prefetched place taken), a finished task
wakes it only once a claim would take something: with a long maintenance interval, a wake
missed for one ``concurrency`` and ``prefetch`` would leave the backlog waiting a minute, and
a wake from every task would show in how often the fetcher looked for room. A fixed
prefetch (``prefetch_window=None``) fixes how much room there is; the adaptive default
(``window`` 0.02) is run through too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from dowork import DurableSettings, Queue

from .reads import count_looks

WAIT = 20.0
TASKS = 60
pytestmark = pytest.mark.realtime


@pytest.mark.parametrize(
    ("concurrency", "prefetch", "window"),
    [
        *[(1, 0, None), (1, 1, None), (2, 3, None), (3, 7, None), (1, 32, None), (4, 32, None)],
        *[(1, 32, 0.02), (4, 64, 0.02)],
    ],
)
@pytest.mark.parametrize("is_async", [False, True], ids=["def", "async"])
def test_a_backlog_runs_through_with_each_concurrency_and_prefetch(
    stores: Callable[..., Queue],
    concurrency: int,
    prefetch: int,
    window: float | None,
    is_async: bool,
) -> None:
    settings = DurableSettings(
        lease=120.0, maintenance=60.0, prefetch=prefetch, prefetch_window=window
    )
    producer = stores()
    queue = stores(concurrency=concurrency, durable=settings)
    ran: list[int] = []

    def work(n: int) -> int:  # (a millisecond: tasks end one at a time, as real ones do)
        time.sleep(0.001)
        ran.append(n)
        return n

    async def awork(n: int) -> int:
        await asyncio.sleep(0.001)
        ran.append(n)
        return n

    for q in (producer, queue):
        q.task(name="work")(awork if is_async else work)
    handles = [producer.submit(awork if is_async else work, n) for n in range(TASKS)]
    looks = count_looks(queue)
    queue.start()
    assert [h.result(WAIT) for h in handles] == list(range(TASKS))
    assert sorted(ran) == list(range(TASKS))
    if (
        window is None and prefetch >= 8 * concurrency
    ):  # then a claim takes some prefetch // 2 at a time
        assert looks[0] < TASKS // 2, looks[0]  # (a look per task before: 60 and more)
