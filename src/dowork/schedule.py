"""Recurring triggers: when the next run of an interval or cron schedule is due.

Pure functions of ``now`` (epoch seconds); the queue keeps the timers. Cron expressions are
parsed by ``cronsim`` (the parser behind healthchecks.io), never by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Protocol

from .retry import seconds

__all__ = ["Cron", "Every", "Trigger", "aligned"]


def aligned(trigger: Trigger) -> Trigger:
    """Return ``trigger`` with firing times every process agrees on (cron already does)."""
    if isinstance(trigger, Every) and not trigger.aligned:
        return replace(trigger, aligned=True)
    return trigger


class Trigger(Protocol):
    """Something that says when a recurring schedule fires next."""

    def next_after(self, now: float) -> float:
        """Return the first firing time strictly after ``now`` (epoch seconds)."""


@dataclass(frozen=True, slots=True)
class Every:
    """Fire every ``interval`` seconds; the first run comes one interval after the start.

    With ``aligned=True`` the firings sit on a grid of multiples of ``interval`` since the
    epoch, so every process computes the same times (durable queues use this to fire once).
    """

    interval: float
    aligned: bool = False

    def __post_init__(self) -> None:
        value = seconds(self.interval, "interval")
        if not value:
            raise ValueError("a recurring interval must be positive")
        object.__setattr__(self, "interval", value)

    @classmethod
    def of(cls, interval: float | timedelta) -> Every:
        """Build from seconds or a timedelta."""
        value = seconds(interval, "interval")
        return cls(value if value is not None else 0.0)

    def next_after(self, now: float) -> float:
        """Return ``now + interval``, or the next grid point after ``now`` when aligned."""
        if self.aligned:
            return (math.floor(now / self.interval) + 1) * self.interval
        return now + self.interval


@dataclass(frozen=True, slots=True)
class Cron:
    """Fire on a five-field cron expression (``"*/5 * * * *"``), evaluated in ``tz`` (default UTC).

    Raises ``ValueError`` at construction for an expression cronsim does not accept, so a typo is
    an error where the schedule is declared, not a silent never-firing schedule.
    """

    expression: str
    tz: tzinfo = field(default=UTC)

    if TYPE_CHECKING:
        # The constructor also takes a zone's name, which __post_init__ turns into a ZoneInfo.
        def __init__(self, expression: str, tz: tzinfo | str = UTC) -> None: ...

    def __post_init__(self) -> None:
        # cronsim and zoneinfo are imported here, not at the top: only cron schedules need
        # them, and a worker's start-up should not pay for them otherwise.
        from cronsim import CronSim, CronSimError

        if not isinstance(self.expression, str):
            raise TypeError(f"a cron expression must be a string, not {self.expression!r}")
        if isinstance(self.tz, str):
            from zoneinfo import ZoneInfo

            object.__setattr__(self, "tz", ZoneInfo(self.tz))
        try:
            CronSim(self.expression, datetime.now(self.tz))
        except CronSimError as exc:
            raise ValueError(f"invalid cron expression {self.expression!r}: {exc}") from exc

    def next_after(self, now: float) -> float:
        """Return the first matching minute strictly after ``now``."""
        from cronsim import CronSim

        start = datetime.fromtimestamp(now, self.tz)
        return next(CronSim(self.expression, start)).timestamp()
