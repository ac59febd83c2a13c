"""``Queue.abort()`` of a durable queue, in-process, with the race a second Ctrl-C meets.

The queue's event loop is held still while the abort is scheduled and a running function
returns, so the finished attempts reach the loop only after the abort began. Their outcomes
must still be recorded, and the tasks prefetched behind them must be handed back without being
started here (were they started, they would run twice: here and on the next worker).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import dowork
from dowork import DurableSettings
from dowork.durable import DurableSource
from tests.redis_server import RedisServer

T = TypeVar("T")


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'stop.sqlite3'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=t{uuid.uuid4().hex[:8]}"


def _wait(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.mark.realtime
def test_abort_records_a_returned_function_and_starts_nothing_more(url: str) -> None:
    release = threading.Event()
    returning = threading.Event()
    ran: list[int] = []
    queue = dowork.Queue(
        "stop",
        backend=url,
        concurrency=1,
        durable=DurableSettings(lease=30.0, maintenance=5.0, prefetch=8, prefetch_window=None),
        log=False,
    )

    @queue.task(name="gate")
    def gate() -> str:
        release.wait(20)
        returning.set()
        return "returned"

    @queue.task(name="quick")
    def quick(n: int) -> int:
        ran.append(n)
        return n

    first = gate.submit()
    behind = quick.map([(n,) for n in range(8)])
    queue.start()
    engine = queue._engine
    source = engine.source
    assert isinstance(source, DurableSource)
    _wait(lambda: len(source._claimed) == 9 and engine._running, "all nine claimed")
    loop = engine.loop
    assert loop is not None
    held, go_on = threading.Event(), threading.Event()

    def hold_the_loop() -> None:
        held.set()
        go_on.wait(20)

    loop.call_soon_threadsafe(hold_the_loop)
    assert held.wait(5)
    scheduled = threading.Event()

    def run_on_home(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        scheduled.set()  # the abort is now in line on the held loop
        return future.result(timeout)

    engine.run_on_home = run_on_home  # type: ignore[method-assign]  # to know when it is queued
    aborting = threading.Thread(target=queue.abort)
    aborting.start()
    assert scheduled.wait(5)
    release.set()  # the function returns; its outcome is queued behind the abort
    assert returning.wait(5)
    lane = engine._threads
    assert lane is not None
    _wait(lambda: lane._results, "the returned function's outcome handed to the loop")
    go_on.set()
    began = time.monotonic()
    aborting.join(20)
    assert not aborting.is_alive()
    # The abort cancels the fetcher in the same turn of the loop as its claim's write ends,
    # which Python 3.11's wait_for swallowed (redis-py writes in one): the fetcher went on to
    # block in its pop for 5 s, and the abort waited for it.
    assert time.monotonic() - began < 2.0
    producer = dowork.Queue("stop", backend=url, log=False)
    try:
        assert producer.status(first.id) is dowork.TaskStatus.SUCCEEDED  # its outcome is kept
        stored = producer.get(first.id)
        assert stored is not None
        assert stored.result(timeout=5) == "returned"
        status = {n: producer.status(t.id) for n, t in enumerate(behind)}
    finally:
        producer.shutdown(timeout=1)
    # A function that ran here has its outcome recorded; any other was handed back at once
    # (waiting to run again, not running until a lease expires), never both.
    for n, now in status.items():
        expected = dowork.TaskStatus.SUCCEEDED if n in ran else dowork.TaskStatus.RETRYING
        assert now is expected, (n, ran, status)
    assert len(ran) < len(behind), ran  # the prefetched ones did not start after the abort


def test_abort_ends_a_fetcher_that_swallowed_its_cancel(url: str) -> None:
    """A fetcher that lost one cancellation (as 3.11's wait_for may swallow it) and went on to
    block, as a Redis pop does for its block time (5 s), is cancelled again: abort() returns
    at once, and the task claimed meanwhile is handed back."""
    queue = dowork.Queue("lost", backend=url, durable=DurableSettings(lease=30.0), log=False)
    release = threading.Event()

    @queue.task(name="gate")
    def gate() -> None:
        release.wait(20)

    task = gate.submit()
    queue.start()
    engine = queue._engine
    source = engine.source
    assert isinstance(source, DurableSource)
    try:
        _wait(lambda: engine._running, "the task running")
        swallowed = threading.Event()

        async def deaf_fetcher() -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                swallowed.set()  # lost on its way, as in wait_for
            await asyncio.sleep(5)  # the blocking pop

        deaf: list[asyncio.Task[None]] = []

        def swap() -> None:
            assert source._fetcher is not None
            source._fetcher.cancel()
            deaf.append(asyncio.get_running_loop().create_task(deaf_fetcher()))
            source._fetcher = deaf[0]

        assert engine.loop is not None
        engine.loop.call_soon_threadsafe(swap)
        _wait(lambda: deaf, "the fetcher swapped")
        began = time.monotonic()
        queue.abort()
        took = time.monotonic() - began
    finally:
        release.set()
    assert swallowed.is_set()
    assert took < 1.0, took
    producer = dowork.Queue("lost", backend=url, log=False)
    try:
        assert producer.status(task.id) is dowork.TaskStatus.RETRYING  # handed back at once
    finally:
        producer.shutdown(timeout=1)
