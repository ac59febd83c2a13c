"""The thread lane: runs plain (sync) task functions on a bounded set of worker threads.

Threads are started lazily up to a maximum and take work from one ``SimpleQueue``. Finished
attempts are appended to a deque and the event loop is woken once per batch, not once per task,
which is what lets sync no-op tasks go faster than ``ThreadPoolExecutor``; the loop settles the
batch (its outcomes share one reading of the clock), then calls ``on_drained`` once.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .task import Task, TaskStatus, _current

__all__ = ["LAPSED", "ThreadLane"]

#: (task, token, value, error, duration)
Result = tuple[Task[Any], object, Any, BaseException | None, float]

_RESERVED = TaskStatus.RESERVED
_RUNNING = TaskStatus.RUNNING


class _Lapsed(Exception):
    """The error reported for a staged attempt not started: its ``_start_by`` passed."""


#: Reported (as the error) for a staged attempt that was not started because its lease lapsed.
LAPSED = _Lapsed("not started: its lease lapsed while it waited for a thread")


class ThreadLane:
    """Worker threads for sync task functions; all methods but ``_work`` run on the loop."""

    def __init__(
        self,
        name: str,
        max_threads: int,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[Result], None],
        on_start: Callable[[Task[Any]], None],
        on_drained: Callable[[], None],
    ) -> None:
        self._name = name
        self._max = max_threads
        self._loop = loop
        self._on_done = on_done
        self._on_start = on_start
        self._on_drained = on_drained
        self._began: deque[Task[Any]] = deque()  # reserved attempts a thread just started
        self._work_q: queue.SimpleQueue[tuple[Task[Any], object, bool] | None] = queue.SimpleQueue()
        #: Attempts handed over while every thread was busy, by token: a thread that takes
        #: one pops it, and so does ``take_back``; whichever pops it first owns the attempt.
        self._staged: dict[object, Task[Any]] = {}
        self._results: deque[Result] = deque()
        self._wake_pending = False
        self._threads: list[threading.Thread] = []
        self._busy = 0  # handed out minus returned; only touched on the loop

    @property
    def threads(self) -> int:
        """How many worker threads exist."""
        return len(self._threads)

    @property
    def saturated(self) -> bool:
        """Whether every thread is busy, so a task handed over now waits for one (reserved)."""
        return self._busy >= self._max

    def submit(self, task: Task[Any], token: object) -> None:
        """Hand an attempt to a thread, starting a new thread if all are busy."""
        staged = self._busy >= self._max
        if staged:
            self._staged[token] = task
        self._busy += 1
        if self._busy > len(self._threads) and len(self._threads) < self._max:
            thread = threading.Thread(
                target=self._work,
                name=f"dowork-{self._name}-{len(self._threads)}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        self._work_q.put((task, token, staged))

    def staged(self) -> list[tuple[object, Task[Any]]]:
        """The attempts waiting for a thread, ``(token, task)``, the latest handed over first."""
        return list(reversed(self._staged.items()))

    def take_back(self, token: object) -> bool:
        """Take a staged attempt back before any thread starts it; False if one has.

        A thread that then takes it from the queue skips it and reports nothing.
        """
        if self._staged.pop(token, None) is None:
            return False
        self._busy -= 1
        return True

    def stop(self) -> None:
        """Ask every thread to exit once the work already handed out is done."""
        for _ in self._threads:
            self._work_q.put(None)
        self._threads = []

    def _drain(self) -> None:
        self._wake_pending = False
        began = self._began
        while began:
            self._on_start(began.popleft())
        results = self._results
        if not results:
            return
        on_done = self._on_done
        try:
            while results:
                item = results.popleft()
                self._busy -= 1
                on_done(item)
        finally:
            self._on_drained()  # once for the batch

    def _work(self) -> None:
        get = self._work_q.get
        results = self._results
        perf = time.perf_counter_ns  # whole ns: a duration with a short repr (_settle_out)
        monotonic = time.monotonic
        while True:
            item = get()
            if item is None:
                return
            task, token, staged = item
            if staged and self._staged.pop(token, None) is None:
                continue  # taken back (take_back): not run, and nothing to report
            if task._runner is not token:  # cancelled while staged: do not run it
                results.append((task, token, None, None, 0.0))
                self._wake()
                continue
            if task._status is _RESERVED:  # it waited for this thread: it starts now
                start_by = task._start_by
                if start_by is not None and monotonic() >= start_by:
                    results.append((task, token, None, LAPSED, 0.0))
                    self._wake()
                    continue
                task._status = _RUNNING
                task._attempts += 1
                self._began.append(task)
                self._wake()
            reset = _current.set(task)
            start = perf()
            try:
                value = task.fn(*task.args, **task.kwargs)
                error: BaseException | None = None
                if value is not None and inspect.isawaitable(value):
                    error = _sync_returned_awaitable(task, value)
                    value = None
            except BaseException as exc:
                value = None
                error = exc
            duration = (perf() - start) / 1e9
            _current.reset(reset)
            results.append((task, token, value, error, duration))
            if not self._wake_pending and not self._wake():  # (the check inline: no call)
                return  # loop closed at interpreter exit: nothing left to report to

    def _wake(self) -> bool:
        """Have the loop drain what the threads reported; False if the loop is closed."""
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                return False
        return True


def _sync_returned_awaitable(task: Task[Any], value: object) -> BaseException:
    close = getattr(value, "close", None)
    if callable(close):
        close()
    return TypeError(
        f"{task.name} is a plain function but returned an awaitable; declare it 'async def' "
        "so dowork runs it on the event loop"
    )
