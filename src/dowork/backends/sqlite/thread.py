"""The thread a SQLite file's connection lives on: calls run there in order, one at a time.

``CallThread`` takes the place of a one-thread ``ThreadPoolExecutor`` and
``loop.run_in_executor``: a call is one item on a ``SimpleQueue`` and its answer one
``call_soon_threadsafe`` onto the caller's loop, which sets the caller's own future. The
executor's way (a ``concurrent.futures.Future`` per call chained to an asyncio one, its
``Condition``, the pool's semaphore and locks, and their callbacks on both threads) cost about
110k instructions a call, on the loop's thread and the connection's; a worker makes two a
batch (its claim and its settlement). As with the executor, a call whose caller was cancelled
before it began is not run, the calls queued when the thread is stopped (``stop``, or the
interpreter's exit) run first, and a call made after that raises ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["CallThread"]

T = TypeVar("T")

#: A queued call: the function, its arguments, and the caller's loop and future (no loop: a
#: ``concurrent.futures.Future``, for a caller that blocks).
_Call = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop | None, Any]
#: The threads not stopped yet, stopped at the interpreter's exit after their queued calls.
_LIVE: weakref.WeakSet[CallThread] = weakref.WeakSet()


class CallThread:
    """A thread named ``name`` that runs the calls given to it, in order."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # a call is queued before the stop, or refused
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def _put(self, call: _Call) -> None:
        with self._lock:
            if self._stopped:
                raise RuntimeError("cannot run calls on a stopped SQLite connection thread")
            self._calls.put(call)

    async def run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """``fn(*args)`` on the thread; its result or exception, on the caller's loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put((fn, args, loop, future))
        return await future

    def wait(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the thread, blocking the calling thread until it returns."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._put((fn, args, None, future))
        return future.result()

    def stop(self) -> None:
        """Run the calls queued, then end the thread (and wait for it, unless called on it)."""
        with self._lock:
            if not self._stopped:
                self._stopped = True
                self._calls.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _serve(self) -> None:
        calls = self._calls
        while (call := calls.get()) is not None:
            _run(call)
            del call  # (nothing of it kept while the thread waits for the next)


def _run(call: _Call) -> None:
    fn, args, loop, future = call
    if loop is None:
        _run_blocking(fn, args, future)
        return
    if future.cancelled():  # (its caller gave up before it began: not run)
        return
    try:
        result = fn(*args)
    except BaseException as exc:  # (as the executor: the caller's to handle)
        _answer(loop, future, None, exc)
    else:
        _answer(loop, future, result, None)


def _run_blocking(fn: Callable[..., Any], args: tuple[Any, ...], future: Any) -> None:
    try:
        result = fn(*args)
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _answer(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
) -> None:
    try:  # (not contextlib.suppress: a Python context manager per call)
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:  # a closed loop: nobody waits for the answer
        return


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # (cancelled while it ran)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@atexit.register
def _stop_all() -> None:
    for thread in list(_LIVE):
        thread.stop()
