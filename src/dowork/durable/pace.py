"""How many claimed tasks a worker holds beyond its slots: what it finishes in a short window.

A fixed prefetch is wrong both ways: short tasks want more held (one claim in flight at a
time caps a worker at the claim's size over its latency), long ones want none (a task held
behind long ones waits while an idle worker could run it: the third most frequent complaint
about task queues). So the hold follows the rate at which tasks leave the worker.
"""

from __future__ import annotations

import math

#: Shortest interval (seconds) a rate is measured over: shorter ones say little.
_SAMPLE = 0.005
#: How fast (seconds, time constant) a measured rate falls; it rises at once.
_FALL = 0.05
#: Weight of a new claim's latency in the running estimate.
_LATENCY_WEIGHT = 0.25


class Pace:
    """The recent rate of tasks leaving a worker, and the hold it calls for.

    ``hold()`` is ``min(cap, rate * max(window, 2 * claim latency))``: as many as the slots
    finish in ``window``, or in two claims' round trips if those take longer (so a slow store
    still gets claims big enough for the rate); none while tasks are long. ``window=None``
    holds ``cap`` always (a fixed prefetch). Times are the caller's monotonic seconds.
    """

    __slots__ = ("_at", "_hold", "_left", "cap", "latency", "rate", "taken", "window")

    def __init__(self, cap: int, window: float | None, now: float) -> None:
        self.cap = cap
        self.window = window
        self.rate = 0.0  #: tasks a second that left the worker (finished, retried, dropped)
        self.latency = 0.0  #: a claim's round trip, recent (seconds)
        self.taken = 0  #: tasks claimed so far
        self._at = now  # when the rate was last measured
        self._left = 0  # tasks that had left then
        self._hold = cap if window is None else 0

    def claimed(self, n: int, took: float | None) -> None:
        """A claim returned ``n`` tasks after ``took`` seconds (None: it waited for work too)."""
        self.taken += n
        if took is not None:
            self.latency += (took - self.latency) * _LATENCY_WEIGHT

    def hold(self, held: int, now: float) -> int:
        """Tasks to hold beyond the slots, with ``held`` claimed tasks here at ``now``."""
        window = self.window
        if window is None:
            return self.cap
        elapsed = now - self._at
        if elapsed >= _SAMPLE:
            left = self.taken - held
            measured = max(0.0, (left - self._left) / elapsed)
            rate = self.rate
            if measured < rate:
                measured += (rate - measured) * math.exp(-elapsed / _FALL)
            self.rate = measured
            self._at, self._left = now, left
            self._hold = min(self.cap, int(measured * max(window, 2 * self.latency)))
        return self._hold
