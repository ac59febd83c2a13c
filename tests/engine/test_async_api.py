"""The async face: a queue on the caller's loop, and a-prefixed twins from other loops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

import dowork
from dowork import FakeClock, Queue, Task, TaskStatus


def test_astart_runs_async_tasks_on_the_callers_loop(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[bool] = []

        async def where() -> str:
            seen.append(asyncio.get_running_loop() is loop)
            return "here"

        def sync_where() -> str:
            return threading.current_thread().name

        await queue.astart()
        task = queue.submit(where)
        assert await task == "here"
        assert seen == [True]
        assert (await queue.asubmit(sync_where)).__class__ is Task
        name = await (await queue.asubmit(sync_where))
        assert name.startswith("dowork-test-")
        assert await queue.ashutdown() is True

    asyncio.run(main())


def test_awaiting_from_another_loop(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue().start()  # private loop thread

    async def main() -> None:
        async def add(a: int, b: int) -> int:
            return a + b

        task = await queue.asubmit(add, 2, 3)
        assert await task.aresult(5) == 5
        assert await task.aexception(5) is None
        never = queue.call_later(3600, lambda: None)
        with pytest.raises(dowork.TaskNotDone):
            await never.aresult(timeout=0.01)
        assert await never.acancel() is True
        with pytest.raises(dowork.TaskCancelled):
            await never
        assert await dowork.ajoin(queue) is True

    asyncio.run(main())


def test_adispatch_binds_to_the_running_loop(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    queue = make_queue()

    async def main() -> None:
        calls: list[int] = []

        async def flaky() -> str:
            calls.append(1)
            if len(calls) < 2:
                raise OSError
            return "ok"

        task = queue.enqueue(Task(flaky, retries=1, backoff="fixed", base_delay=10))
        assert await queue.adispatch() is True
        assert task.status is TaskStatus.RETRYING
        clock.advance(10)
        assert await queue.adispatch() is False
        assert await task == "ok"

    asyncio.run(main())


def test_async_bounded_enqueue_waits_without_blocking_the_loop(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue(maxsize=1).start()

    async def main() -> None:
        gate = threading.Event()
        first = await queue.asubmit(gate.wait, 5)
        ticks = 0

        ticked = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                if ticks > 5:
                    ticked.set()
                await asyncio.sleep(0.001)

        tick = asyncio.create_task(ticker())
        waiting = asyncio.create_task(queue.asubmit(lambda: "second"))
        # A busy machine ticks slowly: wait for the ticks, within the first task's 5 s.
        await asyncio.wait_for(ticked.wait(), 4.0)
        assert not waiting.done()
        assert ticks > 5  # the loop kept running while asubmit waited
        gate.set()
        second = await asyncio.wait_for(waiting, 5)
        assert await second == "second"
        assert await first is True
        tick.cancel()
        gate2 = threading.Event()
        blocker = await queue.asubmit(gate2.wait, 5)
        with pytest.raises(dowork.QueueFull):
            await queue.aenqueue(Task(lambda: None), timeout=0.01)
        gate2.set()
        assert await blocker is True

    asyncio.run(main())


def test_arun_until_cancelled(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()

    async def main() -> None:
        runner = asyncio.create_task(queue.arun())
        task = queue.submit(lambda: 7)
        assert await task == 7
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        assert not queue.running

    asyncio.run(main())


def test_async_context_manager(make_queue: Callable[..., Queue]) -> None:
    async def main() -> None:
        async with make_queue() as queue:
            task = await queue.asubmit(asyncio.sleep, 0, "slept")
        assert task.result(0) == "slept"

    asyncio.run(main())


def test_asubmit_checks_as_submit_does(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()

    async def main() -> None:
        async def add(a: int, b: int = 0) -> int:
            return a + b

        await queue.astart()
        task = await queue.asubmit(add, 2, b=3)
        assert task.is_async
        with pytest.raises(dowork.TaskFrozen):
            task.configure(retries=1)
        assert await task == 5
        with pytest.raises(TypeError):
            await queue.asubmit(42)  # type: ignore[call-overload]
        assert await queue.ashutdown() is True
        with pytest.raises(dowork.QueueShuttingDown):
            await queue.asubmit(add, 1)

    asyncio.run(main())


def test_aenqueue_that_waited_for_room_is_refused_once_shutdown_began(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue(maxsize=1).start()

    async def main() -> None:
        gate = threading.Event()
        first = await queue.asubmit(gate.wait, 5)
        waiting = asyncio.create_task(queue.aenqueue(Task(lambda: "late")))
        await asyncio.sleep(0)
        assert not waiting.done()  # no room: it waits
        stopped: list[bool] = []
        stopper = threading.Thread(target=lambda: stopped.append(queue.shutdown(5)))
        stopper.start()
        for _ in range(4000):  # up to 4 s on a busy machine
            if not queue.accepting:
                break
            await asyncio.sleep(0.001)
        assert not queue.accepting
        gate.set()  # room now, but the queue shuts down: checked again, refused
        with pytest.raises(dowork.QueueShuttingDown):
            await asyncio.wait_for(waiting, 5)
        await asyncio.to_thread(stopper.join, 5)
        assert stopped == [True]
        assert await first is True

    asyncio.run(main())


def test_a_cancelled_await_leaves_the_task_and_its_other_waiters_alone(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue()

    async def main() -> None:
        await queue.astart()
        gate = asyncio.Event()

        async def job() -> int:
            await gate.wait()
            return 7

        task = queue.submit(job)
        cancelled = asyncio.create_task(task.aresult())
        other = asyncio.create_task(task.aresult())
        await asyncio.sleep(0)  # both wait now
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert not task.done
        gate.set()
        assert await other == 7  # woken on its loop, as the task finished there
        assert await task == 7
        assert await queue.ashutdown() is True

    asyncio.run(main())
