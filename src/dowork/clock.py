"""Clocks: where the engine gets the time and its timers, so tests can move time by hand.

The engine never calls ``time.time`` or ``asyncio.sleep`` directly. It asks its queue's clock for
``now()`` (epoch seconds, used for not-before times, backoff stamps and schedules) and for timers
(``call_at``), used for due tasks, recurring schedules and per-attempt deadlines. ``FakeClock``
fires those timers when a test calls ``advance()``, so a 30-minute backoff takes no real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "TimerHandle"]


class TimerHandle(Protocol):
    """A timer that can be cancelled before it fires."""

    def cancel(self) -> None:
        """Stop the timer; cancelling a fired or cancelled timer does nothing."""


class Clock(Protocol):
    """The time source of one queue.

    ``call_at`` is called on the queue's event loop, and ``callback`` must run on that loop.
    """

    def now(self) -> float:
        """Return the current time as seconds since the epoch (UTC)."""

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback`` on the running event loop once ``now() >= when``."""


class SystemClock:
    """The real clock: wall time for timestamps, the event loop's monotonic timer for waits."""

    __slots__ = ()

    #: ``time.time`` itself (the current time as seconds since the epoch): read once or more
    #: a task, so without a Python frame of its own.
    now = staticmethod(time.time)

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Schedule ``callback`` on the running loop after ``when - now()`` seconds."""
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.time()), callback)

    def __repr__(self) -> str:
        return "SystemClock()"


class _FakeTimer:
    __slots__ = ("_callback", "_clock", "_loop", "cancelled", "when")

    def __init__(
        self,
        clock: FakeClock,
        when: float,
        callback: Callable[[], object],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._clock = clock
        self.when = when
        self._callback = callback
        self._loop = loop
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._callback)


class FakeClock:
    """A clock that stands still until a test moves it with ``advance()`` or ``set()``.

    Timers whose time has come fire on their own event loop as soon as the clock passes them,
    whichever thread moved it. Use one with ``Queue(clock=FakeClock())`` and drive the queue
    with ``dispatch()``, or ``start()`` it and ``advance()`` past backoffs and schedules.
    """

    def __init__(self, start: float | datetime = 1_700_000_000.0) -> None:
        self._now = _to_epoch(start)
        self._lock = threading.Lock()
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        """Return the fake current time in epoch seconds."""
        return self._now

    def now_datetime(self) -> datetime:
        """Return the fake current time as an aware UTC datetime."""
        return datetime.fromtimestamp(self._now, UTC)

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Register ``callback`` to run on the running loop when the clock reaches ``when``."""
        timer = _FakeTimer(self, when, callback, asyncio.get_running_loop())
        with self._lock:
            if when <= self._now:
                due = True
            else:
                due = False
                heapq.heappush(self._timers, (when, next(self._seq), timer))
        if due:
            timer.fire()
        return timer

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` and fire every timer that became due."""
        if seconds < 0:
            raise ValueError("a FakeClock only moves forward")
        self.set(self._now + seconds)

    def set(self, when: float | datetime) -> None:
        """Move the clock to ``when`` (not backwards) and fire every timer that became due."""
        target = _to_epoch(when)
        fired: list[_FakeTimer] = []
        with self._lock:
            if target < self._now:
                raise ValueError("a FakeClock only moves forward")
            self._now = target
            while self._timers and self._timers[0][0] <= target:
                fired.append(heapq.heappop(self._timers)[2])
        for timer in fired:
            timer.fire()

    def pending_timers(self) -> int:
        """Return how many timers are waiting for the clock to reach them."""
        with self._lock:
            return sum(1 for _, _, t in self._timers if not t.cancelled)

    def next_timer(self) -> float | None:
        """Return the time of the earliest waiting timer, or None."""
        with self._lock:
            live = [w for w, _, t in self._timers if not t.cancelled]
        return min(live) if live else None

    def __repr__(self) -> str:
        return f"FakeClock({self.now_datetime().isoformat()})"


def _to_epoch(value: float | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware datetime (e.g. tzinfo=UTC)")
        return value.timestamp()
    return float(value)
