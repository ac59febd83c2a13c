"""Back-pressure for bounded queues: a counter of free places, waited on by threads or loops."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque

__all__ = ["Capacity"]


class Capacity:
    """At most ``maxsize`` unfinished tasks; ``acquire`` takes a place, ``release`` frees one."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._free = maxsize
        self._cond = threading.Condition(threading.Lock())
        self._async_waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def free(self) -> int:
        """How many places are free now."""
        return self._free

    def try_acquire(self) -> bool:
        """Take a place if one is free, without waiting."""
        with self._cond:
            if self._free > 0:
                self._free -= 1
                return True
            return False

    def acquire(self, timeout: float | None) -> bool:
        """Take a place, blocking the thread up to ``timeout`` seconds; False if none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._free <= 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            self._free -= 1
            return True

    async def aacquire(self, timeout: float | None) -> bool:
        """Take a place, awaiting up to ``timeout`` seconds without blocking the loop."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not self.try_acquire():
                    future: asyncio.Future[None] = loop.create_future()
                    with self._cond:
                        if self._free > 0:
                            continue
                        self._async_waiters.append((loop, future))
                    await future
        except TimeoutError:
            return False
        return True

    def release(self) -> None:
        """Free a place and wake one waiter."""
        with self._cond:
            self._free += 1
            self._cond.notify()
            waiters = list(self._async_waiters)
            self._async_waiters.clear()
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody to wake
                loop.call_soon_threadsafe(_wake, future)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
