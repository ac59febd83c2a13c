"""Looking tasks up and driving the queue: dispatch, run, stop, shut down."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from ..clock import FakeClock
from ..dump import DumpLine
from ..errors import UnknownTask
from ..task import Task, TaskStatus
from .base import QueueBase, _check_int

P = ParamSpec("P")
R = TypeVar("R")


class Driving(QueueBase):
    """Looking tasks up and driving the queue: dispatch, run, stop, shut down."""

    def get(self, task_id: str) -> Task[Any] | None:
        """Return the task with this id, or None (finished tasks are kept ``keep_finished``).

        On a durable queue the backend is asked too, so a task enqueued or run by another
        process is found; its handle shows the stored status, attempts and outcome.
        """
        return self._engine.source.lookup(task_id)

    def status(self, task_id: str) -> TaskStatus:
        """Return the status of the task with this id.

        Raises:
            UnknownTask: no such task (or it was forgotten after retention).
        """
        task = self.get(task_id)
        if task is None:
            raise UnknownTask(f"no task {task_id!r} in queue {self.name!r}")
        return task.status

    def cancel(self, task_id: str) -> bool:
        """Cancel a task by id (on a durable queue, whichever process holds it).

        Returns False if the task is unknown or already finished.
        """
        task = self.get(task_id)
        return task.cancel() if task is not None else False

    def dispatch(self) -> bool:
        """Attempt every due task, wait for those attempts, and say if unfinished tasks remain.

        Returns True while tasks are due later, retrying, or were enqueued meanwhile. Each due
        task is attempted at most once per call, in enqueue order, up to ``concurrency`` at a
        time. For driving a queue by hand (tests, cron-like scripts); a started queue
        dispatches by itself and raises ``RuntimeError`` here.
        """
        engine = self._engine
        if engine.closed:
            raise RuntimeError(f"queue {self.name!r} is shut down")
        if engine.loop is None:  # unbound: run this pass on a short-lived loop in this thread
            try:
                return asyncio.run(self._dispatch_here())
            finally:
                engine.unbind()
        return engine.run_on_home(engine.dispatch())

    async def _dispatch_here(self) -> bool:
        engine = self._engine
        engine.bind_running()
        return await engine.dispatch()

    async def adispatch(self) -> bool:
        """``dispatch`` for async code (binds the queue to the running loop if unbound)."""
        engine = self._engine
        if engine.closed:
            raise RuntimeError(f"queue {self.name!r} is shut down")
        return await engine.arun_on_home(engine.dispatch())

    def run_until_idle(
        self, *, advance: bool | float | timedelta = False, max_attempts: int | None = 10_000
    ) -> int:
        """Run until no attempt is running and no task is due; return how many attempts ran.

        A queue driven by hand is dispatched again and again, so retries due at once and
        tasks enqueued by tasks run too; a started queue is waited for instead (the count is
        then of the attempts that ended meanwhile, not of those that ended before the call).
        Tasks due later (a backoff, ``call_later``, a schedule's next firing) stay waiting,
        so after the call "nothing else ran" is a plain assertion, with no sleeping.

        With a ``FakeClock``, ``advance`` moves time as well: the clock steps to each next due
        time in turn and what is due there runs. ``advance=True`` goes on while any task
        waits (a schedule alone does not keep it going); ``advance=3600`` or a ``timedelta``
        goes no further than that and leaves the clock there, firing schedules on the way.

        A queue with a backend, driven by hand, is dispatched the same way and steps to the
        store's next due task (schedules fire only on a started worker, as with
        ``dispatch()``); a started one raises ``RuntimeError``, as other workers may share it.

        Raises:
            RuntimeError: more than ``max_attempts`` attempts ran (a task retrying or
                enqueuing itself for ever; None: no bound), the queue is shut down or is a
                started queue with a backend, or this is a started queue's own event loop
                (use ``arun_until_idle``).
            ValueError: ``advance`` without a ``FakeClock``, or a negative duration.
        """
        limit = _check_limit(max_attempts)
        seconds = self._idle_advance(advance)
        engine = self._engine
        if engine.closed:
            raise RuntimeError(f"queue {self.name!r} is shut down")
        if engine.loop is None:  # unbound: run on a short-lived loop in this thread
            try:
                return asyncio.run(self._idle_here(seconds, limit))
            finally:
                engine.unbind()
        return engine.run_on_home(engine.run_until_idle(seconds, limit))

    async def _idle_here(self, seconds: float | None, limit: int | None) -> int:
        engine = self._engine
        engine.bind_running()
        return await engine.run_until_idle(seconds, limit)

    async def arun_until_idle(
        self, *, advance: bool | float | timedelta = False, max_attempts: int | None = 10_000
    ) -> int:
        """``run_until_idle`` for async code (binds the queue to the running loop if unbound)."""
        limit = _check_limit(max_attempts)
        seconds = self._idle_advance(advance)
        engine = self._engine
        if engine.closed:
            raise RuntimeError(f"queue {self.name!r} is shut down")
        return await engine.arun_on_home(engine.run_until_idle(seconds, limit))

    def _idle_advance(self, advance: bool | float | timedelta) -> float | None:
        """``run_until_idle``'s ``advance`` as seconds (``inf``: while tasks wait), or None."""
        if advance is False:
            return None
        if not isinstance(self.clock, FakeClock):
            raise ValueError(
                f"advance= moves a FakeClock; queue {self.name!r} runs on {self.clock!r}"
            )
        if advance is True:
            return math.inf
        if isinstance(advance, timedelta):
            advance = advance.total_seconds()
        if not isinstance(advance, int | float) or not advance >= 0:
            raise ValueError(
                f"advance must be True, False, or a duration of 0 or more, not {advance!r}"
            )
        return float(advance)

    def start(self) -> Self:
        """Start processing in the background (a private loop thread); returns the queue.

        Raises:
            RuntimeError: already started, or shut down.
        """
        engine = self._engine
        engine.ensure_loop()
        engine.call(engine.serve)
        return self

    async def astart(self) -> Self:
        """Start processing on the running event loop (async tasks then run on it)."""
        engine = self._engine
        engine.bind_running()
        await engine.acall(engine.serve)
        return self

    def run(self) -> None:
        """Process tasks in the calling thread until ``stop()``/``shutdown()`` or Ctrl-C.

        Tasks not started when it returns stay queued; ``start()`` or ``run()`` resume them.
        """
        engine = self._engine
        if engine.loop is None:
            try:
                asyncio.run(self.arun())
            finally:
                engine.unbind()
            return
        engine.call(engine.serve)
        try:
            engine.run_on_home(engine.wait_stopped())
        except KeyboardInterrupt:
            engine.call(engine.halt)
            raise
        self._raise_lost()

    def _raise_lost(self) -> None:
        """Raise ``StoreLost`` if the queue stopped because its store was deleted or replaced."""
        lost = self._engine.source.lost
        if lost is not None:
            raise lost

    async def arun(self) -> None:
        """Process tasks on the running loop until ``stop()``, ``shutdown()`` or cancelled."""
        engine = self._engine
        engine.bind_running()
        await engine.acall(engine.serve)
        try:
            await engine.arun_on_home(engine.wait_stopped())
        except asyncio.CancelledError:
            await asyncio.shield(engine.acall(engine.halt))
            raise
        self._raise_lost()

    def stop(self) -> None:
        """Stop starting new attempts (running ones finish); queued tasks stay for a restart."""
        engine = self._engine
        engine.call(engine.halt)

    async def astop(self) -> None:
        """``stop`` for async code."""
        engine = self._engine
        await engine.acall(engine.halt)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Refuse new tasks, block until every queued task finished, then stop.

        Tasks waiting out a backoff or a not-before time are waited for too (as in the seed).
        With ``timeout``, tasks still unfinished after that many seconds are cancelled (their
        after-callbacks run) and False is returned; True means everything finished. Calling
        it again returns at once.

        Raises:
            RuntimeError: the queue was never started (drive it with ``dispatch()`` instead),
                or this is the queue's own event loop (use ``ashutdown``).
        """
        engine = self._engine
        if engine.closed:
            return True
        if not engine.started and not engine.durable:
            raise RuntimeError(
                f"queue {self.name!r} was never started; call start() first, or drive it with "
                "dispatch() until it returns False"
            )
        engine.accepting = False
        clean = engine.run_on_home(engine.shutdown(timeout))
        engine.release_thread()
        return clean

    async def ashutdown(self, timeout: float | None = None) -> bool:
        """``shutdown`` for async code: never blocks the caller's event loop."""
        engine = self._engine
        if engine.closed:
            return True
        if not engine.started and not engine.durable:
            raise RuntimeError(f"queue {self.name!r} was never started; call start() first")
        engine.accepting = False
        clean = await engine.arun_on_home(engine.shutdown(timeout))
        if not engine.on_loop():
            await asyncio.to_thread(engine.release_thread)
        return clean

    def abort(self) -> list[DumpLine]:
        """Stop at once (a second Ctrl-C): return the unfinished tasks as dump lines.

        An in-memory queue cancels running async attempts and returns every unfinished task
        (write them with ``dowork.dump.write_dump``); a durable queue hands its claimed tasks
        back to the store and returns nothing. The queue cannot be used afterwards.
        """
        engine = self._engine
        if engine.closed or engine.loop is None:
            engine.accepting = False
            return []
        lines: list[DumpLine] = engine.run_on_home(engine.abort())
        engine.release_thread()
        return lines

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.ashutdown()


def _check_limit(max_attempts: int | None) -> int | None:
    if max_attempts is not None:
        _check_int(max_attempts, "max_attempts", 1)
    return max_attempts
