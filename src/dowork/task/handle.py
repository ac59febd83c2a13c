"""TaskHandle: what the caller of ``submit`` holds: the task's state, its outcome, its control.

It builds on ``TaskSpec`` (the call and its options) and ``Task`` on it; the engine writes the
state, the handle reads it and waits for the outcome from any thread or event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import Generator
from contextvars import ContextVar
from datetime import UTC, datetime
from time import time as time_now
from typing import Any, Generic, TypeVar

from ..errors import TaskNotDone
from .spec import TaskSpec
from .status import _FINAL, Progress, TaskStatus

R = TypeVar("R")

_Waiter = threading.Event | tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]
#: The task whose hooks and after-callback run in this context: they read its outcome even
#: while a durable queue is still writing it (see ``Task._unwritten``).
_deciding: ContextVar[TaskHandle[Any] | None] = ContextVar("dowork_deciding", default=None)
_waiter_lock = threading.Lock()


class TaskHandle(TaskSpec, Generic[R]):
    """A task's state and outcome, as its caller sees it, over its call and options."""

    __slots__ = (
        "_attempts",
        "_cancel_requested",
        "_deadline_at",
        "_deliveries",
        "_error",
        "_finished",
        "_last_error",
        "_next_attempt",
        "_progress",
        "_status",
        "_unwritten",
        "_value",
        "_waiters",
    )

    _status: TaskStatus
    #: Set by a durable queue from the moment it decides this task's outcome until the
    #: store has it: the status the handle shows meanwhile (the store's, not yet final).
    _unwritten: TaskStatus | None
    _attempts: int
    #: The claims of a durable task (None: in memory, where ``attempts`` counts them).
    _deliveries: int | None
    _next_attempt: float | None
    _last_error: BaseException | None
    _deadline_at: float | None
    _cancel_requested: bool
    _progress: Progress | None
    _value: Any
    _error: BaseException | None
    #: The outcome can be read: the engine (or a durable queue, once stored) woke the waiters.
    _finished: bool
    _waiters: list[_Waiter] | None

    @property
    def queue_name(self) -> str | None:
        """The name of the queue the task was enqueued on, or None."""
        return self._engine.name if self._engine is not None else None

    @property
    def status(self) -> TaskStatus:
        """The task's current status.

        On a durable queue a final status shows once the store has it (until then, the one it
        had), except to the task's own hooks and after-callback.
        """
        status = self._status  # read first: a durable queue sets _unwritten before it
        shown = self._unwritten
        if shown is None or _deciding.get() is self:
            return status
        return shown

    @property
    def done(self) -> bool:
        """Whether the task finished: succeeded, failed or cancelled.

        On a durable queue, only once its outcome is in the store (see ``status``).
        """
        if self._status in _FINAL:
            return self._unwritten is None or _deciding.get() is self
        return False

    @property
    def attempts(self) -> int:
        """How many times the function was called (the running attempt included).

        On a durable queue, a run cut short by its worker dying (SIGKILL, power loss) is not
        counted here: see ``deliveries``.
        """
        return self._attempts

    @property
    def deliveries(self) -> int:
        """How many times the task was handed to a worker, the current time included.

        On a durable queue every claim counts, also those that ended with the worker dying
        (the task ran again once its lease expired), so ``deliveries > attempts`` inside a task
        means an earlier run may have done part of its work: make side effects idempotent
        (e.g. keyed by ``task.id``). In memory it equals ``attempts``.
        """
        return self._attempts if self._deliveries is None else self._deliveries

    @property
    def next_attempt(self) -> datetime | None:
        """When the next attempt is due (after a failure or for a not-before task), else None."""
        na = self._next_attempt
        return None if na is None else datetime.fromtimestamp(na, UTC)

    @property
    def last_error(self) -> BaseException | None:
        """The exception of the most recent failed attempt, even while the task retries."""
        return self._last_error

    @property
    def deadline(self) -> datetime | None:
        """When the running attempt's ``within`` deadline passes, or None (no deadline)."""
        at = self._deadline_at
        return None if at is None else datetime.fromtimestamp(at, UTC)

    @property
    def cancel_requested(self) -> bool:
        """Whether the task was asked to stop (cancelled, or its attempt's deadline passed)."""
        return self._cancel_requested

    @property
    def progress(self) -> Progress | None:
        """The latest progress the running task reported, or None if it reported none."""
        return self._progress

    def report_progress(self, value: float, message: str | None = None) -> None:
        """Record how far the task got (e.g. ``0.4`` or ``40`` items) with an optional message.

        Call it from inside the task, usually as ``current_task().report_progress(...)``; any
        thread may call it. Handles, ``on_progress`` hooks and, on durable queues, every
        process reading the task by id see the latest value. Reports are cheap: on a durable
        queue only the latest one is written, coalesced between writes.
        """
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"progress must be a finite number, not {value!r}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"a progress message must be a str, not {type(message).__name__}")
        engine = self._engine
        at = time_now() if engine is None else engine.clock.now()
        self._progress = Progress(value, message, datetime.fromtimestamp(at, UTC))
        if engine is not None:
            engine.progress_changed(self)

    # -- outcome ---------------------------------------------------------------------------

    def _outcome(self) -> R:
        if self._status is TaskStatus.SUCCEEDED:
            return self._value  # type: ignore[no-any-return]
        error = self._error
        assert error is not None
        raise error

    def _ready_here(self) -> bool:
        """Whether the outcome can be read without waiting.

        True once finished, or once final when asked on the queue's own loop (after-callback),
        unless a durable queue is still writing the outcome (its hooks and after-callback
        excepted).
        """
        if self._finished:
            return True
        engine = self._engine
        return (
            self._status in _FINAL
            and engine is not None
            and engine.on_loop()
            and (self._unwritten is None or _deciding.get() is self)
        )

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the task finished; return False if ``timeout`` seconds passed first.

        A task that ran here on a durable queue is finished once its store has the outcome
        (so every other reader of the store sees the same), after its after-callback.
        """
        if self._ready_here():
            return True
        if timeout is not None and timeout <= 0:
            return False
        engine = self._engine
        if engine is None:
            raise RuntimeError("the task was never enqueued, so it will never finish")
        if engine.on_loop():
            raise RuntimeError(
                "blocking on a task from its queue's event loop would deadlock; "
                "use 'await task' or 'await task.aresult()' there"
            )
        engine.watch(self)
        event = threading.Event()
        self._add_waiter(event)
        if self._finished:
            return True
        return event.wait(timeout)

    def result(self, timeout: float | None = None) -> R:
        """Wait for the task and return its value, or raise its final exception.

        ``result(timeout=0)`` is the seed's ``Result()``: it raises at once if unfinished.

        Raises:
            TaskNotDone: the task did not finish within ``timeout`` seconds.
            MaxRetriesExceeded: the attempts ran out (chained to the last error).
            TaskCancelled: the task was cancelled.
            DoNotRetry, TaskTimeout, or the task's own exception: the task failed with it.
        """
        if not self.wait(timeout):
            raise TaskNotDone(f"task {self.name} is {self._status.value}, not finished")
        return self._outcome()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the task and return its final exception, or None if it succeeded."""
        if not self.wait(timeout):
            raise TaskNotDone(f"task {self.name} is {self._status.value}, not finished")
        return None if self._status is TaskStatus.SUCCEEDED else self._error

    async def aresult(self, timeout: float | None = None) -> R:
        """Await the task's value without blocking the event loop; see ``result()``."""
        if not self._ready_here():
            if self._engine is None:
                raise RuntimeError("the task was never enqueued, so it will never finish")
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._add_waiter((loop, future))
            self._engine.watch(self)
            if not self._finished and timeout is None:
                await future  # (a caller cancelled leaves a done future: nothing to resolve)
            elif not self._finished:
                try:
                    async with asyncio.timeout(timeout):
                        await asyncio.shield(future)
                except TimeoutError:
                    raise TaskNotDone(
                        f"task {self.name} is {self._status.value}, not finished"
                    ) from None
        return self._outcome()

    async def aexception(self, timeout: float | None = None) -> BaseException | None:
        """Await the task and return its final exception, or None if it succeeded."""
        try:
            await self.aresult(timeout)
        except TaskNotDone:
            if not self._finished:
                raise
        except BaseException:
            pass
        return None if self._status is TaskStatus.SUCCEEDED else self._error

    def __await__(self) -> Generator[Any, None, R]:
        return self.aresult().__await__()

    def _add_waiter(self, waiter: _Waiter) -> None:
        with _waiter_lock:
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)

    def _wake_waiters(self) -> None:
        """Mark the task finished and release everyone waiting (any thread, any loop)."""
        self._finished = True
        waiters = self._waiters
        if not waiters:
            return
        with _waiter_lock:
            self._waiters = None
        here = _running_loop()
        for waiter in waiters:
            if isinstance(waiter, threading.Event):
                waiter.set()
                continue
            loop, future = waiter
            if loop is here:  # this thread's loop: resolved now, not woken through its pipe
                _resolve(future)
                continue
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody to wake
                loop.call_soon_threadsafe(_resolve, future)

    # -- control ---------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the task: a waiting task never runs, a running async attempt is cancelled.

        A running sync attempt cannot be interrupted: ``cancel_requested`` turns true for it to
        check, and the task ends as cancelled when the attempt returns. Returns False if the
        task had already finished (or was never enqueued).
        """
        engine = self._engine
        if engine is None or self.done:
            return False
        return engine.cancel_handle(self)

    async def acancel(self) -> bool:
        """``cancel()`` for async callers: never blocks the caller's event loop."""
        engine = self._engine
        if engine is None or self.done:
            return False
        return await engine.acancel_handle(self)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
