"""Retry policy: how many attempts a task gets and how long it waits between them.

Everything here is a pure function of its inputs (plus an injected random source), so the
backoff rules are tested without a queue, threads or a clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

__all__ = ["DEFAULT_POLICY", "Backoff", "RetryPolicy", "seconds"]

#: The largest exponent used by exponential backoff; beyond it the delay stops growing.
_MAX_EXPONENT = 62


class Backoff(StrEnum):
    """How the delay between attempts grows with the number of failures ``n`` (1, 2, 3, ...)."""

    #: ``base * 2**n`` (2, 4, 8, 16, 30, 30 minutes with the defaults, as the dowork seed);
    #: with jitter, "decorrelated jitter": a whole multiple of ``base`` in ``[base, 3 * previous]``.
    EXPONENTIAL = "exponential"
    #: ``base`` every time; with jitter, ``base`` times a factor in ``[0.5, 1.5)``.
    FIXED = "fixed"
    #: ``base * n``; with jitter, times a factor in ``[0.5, 1.5)``.
    LINEAR = "linear"
    #: no delay at all (jitter does not apply).
    IMMEDIATE = "immediate"


def seconds(value: float | timedelta | None, what: str) -> float | None:
    """Return ``value`` as float seconds (``None`` stays ``None``); reject negative durations."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds or a timedelta, not {value!r}")
    if value < 0 or math.isnan(value):
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The attempt budget and backoff of a task.

    Attributes:
        retries: re-runs allowed after the first failure, so at most ``retries + 1`` runs;
            ``-1`` retries forever. (The Go seed counted total runs; Python peers count
            re-runs, and so does dowork.)
        backoff: how the delay grows, see ``Backoff``.
        base: the base delay in seconds (default one minute, as the seed).
        max_delay: the cap on any delay in seconds (default 30 minutes); ``None`` or ``0``
            means uncapped.
        jitter: randomise delays; ``None`` means on for exponential backoff, off otherwise.
        should_retry: called with the exception of a failed attempt; returning False ends the
            task at once. ``None`` retries every exception.
    """

    retries: int = 0
    backoff: Backoff = Backoff.EXPONENTIAL
    base: float = 60.0
    max_delay: float | None = 1800.0
    jitter: bool | None = None
    should_retry: Callable[[BaseException], bool] | None = None

    if TYPE_CHECKING:
        # The constructor takes what __post_init__ normalises: a backoff's name, timedeltas.
        def __init__(
            self,
            retries: int = 0,
            backoff: Backoff | str = Backoff.EXPONENTIAL,
            base: float | timedelta = 60.0,
            max_delay: float | timedelta | None = 1800.0,
            jitter: bool | None = None,
            should_retry: Callable[[BaseException], bool] | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise TypeError(f"retries must be an int, not {self.retries!r}")
        if self.retries < -1:
            raise ValueError(f"retries must be >= 0, or -1 to retry forever; got {self.retries}")
        object.__setattr__(self, "backoff", Backoff(self.backoff))
        base = seconds(self.base, "base")
        object.__setattr__(self, "base", base)
        cap = seconds(self.max_delay, "max_delay")
        object.__setattr__(self, "max_delay", cap or None)
        if self.should_retry is not None and not callable(self.should_retry):
            raise TypeError("should_retry must be a callable taking the exception")

    @property
    def jittered(self) -> bool:
        """Whether delays are randomised (resolving ``jitter=None`` by strategy)."""
        if self.jitter is None:
            return self.backoff is Backoff.EXPONENTIAL
        return self.jitter

    def may_retry(self, failures: int, exc: BaseException) -> bool:
        """Return whether a task that failed ``failures`` times (``exc`` last) runs again."""
        if self.retries != -1 and failures > self.retries:
            return False
        return self.should_retry is None or bool(self.should_retry(exc))

    def delay(self, failures: int, previous: float | None, rng: random.Random) -> float:
        """Return the seconds to wait after failure number ``failures`` (1-based).

        ``previous`` is the delay chosen after the previous failure (``None`` before the first);
        decorrelated jitter grows from it. The result is never negative and never above
        ``max_delay`` when a cap is set.
        """
        if failures < 1 or self.backoff is Backoff.IMMEDIATE:
            return 0.0
        base = self.base
        jitter = self.jittered
        if self.backoff is Backoff.EXPONENTIAL:
            if jitter:
                prev = previous if previous else base
                steps = max(1, math.floor(3 * prev / base)) if base > 0 else 1
                value = base * rng.randint(1, steps)
            else:
                value = base * 2.0 ** min(failures, _MAX_EXPONENT)
        else:
            value = base if self.backoff is Backoff.FIXED else base * failures
            if jitter:
                value *= 0.5 + rng.random()
        cap = self.max_delay
        if cap is not None and value > cap:
            value = cap
        return value


#: The policy of a task that sets no option: no retry, exponential backoff, 1 min base, 30 min cap.
DEFAULT_POLICY = RetryPolicy()
