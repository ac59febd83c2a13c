"""Driving a queue: dispatch by hand, serving, running until idle, shutdown and abort."""

from __future__ import annotations

import asyncio
import heapq
import math
from typing import TYPE_CHECKING, Any

from ..clock import FakeClock
from ..errors import (
    TaskCancelled,
)
from ..task import Task

if TYPE_CHECKING:
    pass

from .home import HomeLoop
from .state import (
    _CANCELLED,
    _LAUNCHED,
    _WAITING,
)


class Drive(HomeLoop):
    """Driving a queue: dispatch by hand, serving, running until idle, shutdown and abort."""

    async def core_dispatch(self) -> bool:
        """Attempt every due task once, wait for those attempts, report if work remains."""
        if self.serving:
            raise RuntimeError("dispatch() drives a queue by hand; this queue is running")
        if self.closed:
            raise RuntimeError(f"queue {self.name!r} is shut down")
        self._accept_inbox()
        self._release_due(self.clock.now(), self._ready)
        batch = [t for t in self._ready if t._status in _WAITING]
        self._ready.clear()
        if not self._prioritized:  # a priority line lists its tasks in order already
            batch.sort(key=_by_seq)
        await self._run_batch(batch)
        return self.has_work()

    async def _run_batch(self, batch: list[Task[Any]]) -> None:
        """Attempt each task of ``batch`` once, ``concurrency`` at a time, and wait for them.

        The after-callbacks are waited for too. Every ``dispatch`` (in memory or durable) ends here.
        """
        if batch:
            self._batch.extend(batch)
            self._launch_from = self._batch
            done = self._dispatch_done = asyncio.get_running_loop().create_future()
            try:
                self._pump()
                await done
            finally:
                self._dispatch_done = None
        while self._afters:
            await asyncio.gather(*self._afters, return_exceptions=True)

    def core_has_work(self) -> bool:
        """Whether unfinished tasks remain (due or not)."""
        return self._unfinished > 0 or bool(self._inbox)

    async def run_until_idle(self, advance: float | None, limit: int | None) -> int:
        """Run until nothing runs or is due; with ``advance``, step a ``FakeClock`` meanwhile.

        ``advance`` is how far the clock may go, in seconds (``inf``: until no task waits for
        a time; None: it stays). Returns the attempts that ended; see ``Queue.run_until_idle``.
        """
        if self.closed:
            raise RuntimeError(f"queue {self.name!r} is shut down")
        if self.serving and self.durable:
            raise RuntimeError(
                f"queue {self.name!r} is running with a backend, which other workers may share; "
                "run_until_idle() drives a stopped one (or an in-memory queue)"
            )
        clock = self.clock
        horizon = None if advance is None else clock.now() + advance
        ran = _Attempts(self.name, limit)
        self._h_after.append(ran)  # counts as an after-attempt hook: nothing to pay otherwise
        try:
            while True:
                if self.serving:
                    await self._until_quiet(ran)
                else:
                    await self._dispatch_until_idle(ran)
                if horizon is None:
                    break
                due = await self.next_due()
                if due is None or (horizon == math.inf and not due[1]):
                    break
                when = due[0]
                if when > horizon or when <= clock.now():
                    break
                assert isinstance(clock, FakeClock)
                clock.set(when)
        finally:
            self._h_after.remove(ran)
        if horizon is not None and horizon != math.inf and clock.now() < horizon:
            assert isinstance(clock, FakeClock)
            clock.set(horizon)
        return ran.count

    async def _dispatch_until_idle(self, ran: _Attempts) -> None:
        """Dispatch again and again (a queue driven by hand) until a pass runs nothing."""
        while True:
            before = ran.count
            await self.dispatch()
            if ran.count == before:
                return
            ran.check()

    async def _until_quiet(self, ran: _Attempts) -> None:
        """Wait until a serving queue runs nothing and has nothing due (on its clock)."""
        quiet: asyncio.Future[None] | None = None
        while True:
            self._accept_inbox()
            now = self.clock.now()
            if self._heap and self._heap[0][0] <= now:  # its timer may not have fired yet
                self._release_due(now, self._ready)
            self._pump()
            if self._afters:
                await asyncio.gather(*self._afters, return_exceptions=True)
                continue
            if not self._active and not self._inbox:
                return
            ran.check()
            if quiet is None or quiet.done():
                quiet = asyncio.get_running_loop().create_future()
                self._quiet.append(quiet)
            # Woken when the last attempt ends; a look now and then bounds endless retries.
            await asyncio.wait((quiet,), timeout=0.05)

    async def core_next_due(self) -> tuple[float, bool] | None:
        """When the next waiting task or schedule firing is due, and whether a task waits.

        None if nothing waits for a time. The durable engine asks its store instead.
        """
        heap = self._heap
        while heap:
            item = heap[0][2]
            if isinstance(item, Task) and item._status not in _WAITING:
                heapq.heappop(heap)  # cancelled meanwhile: it would be skipped when due
            elif not isinstance(item, Task) and not item.active:
                heapq.heappop(heap)
            else:
                break
        if not heap:
            return None
        when, _, item = heap[0]
        if isinstance(item, Task):
            return when, True
        waits = any(isinstance(t, Task) and t._status in _WAITING for _, _, t in heap)
        return when, waits

    def core_serve(self) -> None:
        """Start processing continuously on the home loop (call on the loop)."""
        if self.closed:
            raise RuntimeError(f"queue {self.name!r} was shut down and cannot start again")
        if self.serving:
            raise RuntimeError(f"queue {self.name!r} is already running")
        self.serving = self.started = True
        self._stopped = asyncio.get_running_loop().create_future()
        self._ready.extend(self._batch)
        self._batch.clear()
        self._launch_from = self._ready
        self._accept_inbox()
        self._release_due(self.clock.now(), self._ready)
        if self._heap:
            self._arm(self._heap[0][0])
        self._pump()

    def halt(self) -> None:
        """Stop launching attempts (on the loop); waiting tasks stay queued for a restart."""
        if not self.serving:
            return
        self.serving = False
        self._launch_from = self._batch
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        stopped = self._stopped
        if stopped is not None and not stopped.done():
            stopped.set_result(None)

    async def core_wait_stopped(self) -> None:
        """Wait until ``halt()`` or shutdown ends serving, then for running attempts to end."""
        if self._stopped is not None:
            await asyncio.shield(self._stopped)
        if self._active:
            quiet = asyncio.get_running_loop().create_future()
            self._quiet.append(quiet)
            await quiet

    async def core_shutdown(self, timeout: float | None) -> bool:
        """Refuse new tasks, let the queued ones finish, then stop; see ``Queue.shutdown``."""
        self.accepting = False
        if self.closed:
            return True
        for schedule in list(self._schedules):
            schedule._deactivate()
        self._schedules.clear()
        self._accept_inbox()
        if not self.serving and self.has_work():
            self.serve()
        drained = self._drained = asyncio.Event()
        self._check_drained()
        clean = True
        try:
            async with asyncio.timeout(timeout):
                await drained.wait()
        except TimeoutError:
            clean = False
            await self._cancel_everything()
        self.halt()
        self._close()
        return clean

    async def core_abort(self) -> list[Any]:
        """Stop at once (the second signal): describe every unfinished task for a dump file.

        Running async attempts are cancelled; every unfinished task ends as cancelled (its
        after-callback runs once) and is returned as a ``DumpLine`` so it can be re-queued.
        """
        from ..dump import line_of

        self.accepting = False
        self._accept_inbox()
        seen: dict[int, Task[Any]] = {}
        heap_tasks = [t for _, _, t in self._heap if isinstance(t, Task)]
        for task in [*self._running, *self._ready, *self._batch, *heap_tasks]:
            if not task.done:
                seen[id(task)] = task
        lines = [line_of(task, self.name) for task in seen.values()]
        for schedule in list(self._schedules):
            schedule._deactivate()
        for task in seen.values():
            self.cancel_task(task)
            if task._status in _LAUNCHED and not task.is_async:
                self._settle(task, None, None, 0.0)
        self.halt()
        self._close()
        if self._drained is not None:
            self._drained.set()
        return lines

    def _check_drained(self) -> None:
        if self._drained is None or self._inbox or self._afters:
            return
        if self._unfinished == 0 and not self._active:
            self._drained.set()

    async def _cancel_everything(self) -> None:
        for _, _, item in self._heap:
            if isinstance(item, Task):
                self.cancel_task(item)
        for task in [*self._ready, *self._batch]:
            self.cancel_task(task)
        for task in list(self._running):
            self.cancel_task(task)
            if not task.is_async and task._status in _LAUNCHED:  # its thread may never return
                self._settle(task, None, None, 0.0)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 1.0
        while (self._running or self._afters) and loop.time() < give_up:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # bounded: a task may swallow its cancellation

    def _close(self) -> None:
        self.closed = True
        for idle in self._idle:
            if not idle.done():
                idle.set_result(None)
        self._idle.clear()
        if self._threads is not None:
            self._threads.stop()
        while self._inbox:  # a submit that raced with shutdown: it will never run
            task = self._inbox.popleft()
            task._status = _CANCELLED
            task._error = TaskCancelled(f"{task.name}: queue {self.name!r} shut down")
            self._done(task)

    def abandon(self) -> list[Task[Any]]:
        """Return the tasks that never finished (for a caller that stops without draining)."""
        waiting = [t for _, _, t in self._heap if isinstance(t, Task) and not t.done]
        return waiting + [t for t in self._ready if not t.done] + list(self._inbox)


class _Attempts:
    """An after-attempt hook counting the attempts that end, for ``run_until_idle``."""

    __slots__ = ("count", "limit", "queue")

    def __init__(self, queue: str, limit: int | None) -> None:
        self.queue = queue
        self.limit = limit
        self.count = 0

    def __call__(self, task: Task[Any], error: BaseException | None, took: float) -> None:
        self.count += 1

    def check(self) -> None:
        """Raise once more attempts than the limit ran (endless retries, say)."""
        if self.limit is not None and self.count > self.limit:
            raise RuntimeError(
                f"queue {self.queue!r} is not idle after {self.count} attempts "
                f"(max_attempts={self.limit}): a task that retries or enqueues itself for ever?"
            )


def _by_seq(task: Task[Any]) -> int:
    return task._seq
