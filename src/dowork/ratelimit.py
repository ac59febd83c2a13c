"""Rate limits: at most ``n`` task starts in any ``per`` seconds, across every worker.

A limit is declared on a task function (``@queue.task(rate_limit="10/s")``) or on a whole
queue (``DurableSettings(rate_limit="100/m")``, shared by its tasks that have none of their
own). The backend enforces it when it claims: a task over the limit is not failed but given
the next free start time and claimed then (see ``Store.claim``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RateLimit"]

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``n`` starts in any ``per`` seconds."""

    n: int
    per: float

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"a rate limit allows at least 1 start, not {self.n!r}")
        if not self.per > 0:
            raise ValueError(f"a rate limit's period must be positive, not {self.per!r}")

    @classmethod
    def of(cls, spec: RateLimit | str | tuple[int, float]) -> RateLimit:
        """Read ``"10/s"``, ``"100/m"``, ``"5/30s"``, ``"1000/day"`` or ``(n, per_seconds)``.

        Raises:
            ValueError: the text is not ``count/[number]unit`` (unit s, m, h or d, also spelt
                out), or the numbers are out of range.
            TypeError: neither a string, a pair nor a ``RateLimit``.
        """
        if isinstance(spec, RateLimit):
            return spec
        if isinstance(spec, tuple):
            n, per = spec
            return cls(n, float(per))
        if not isinstance(spec, str):
            raise TypeError(f"a rate limit is a string like '10/s' or a pair, not {spec!r}")
        match = _SPEC.fullmatch(spec.lower())
        unit = match.group(3) if match else ""
        if len(unit) > 3 and unit.endswith("s"):  # "seconds", "mins", "days"
            unit = unit[:-1]
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"cannot read rate limit {spec!r}: write count/unit, e.g. '10/s', '100/m', "
                "'5/30s' or '1000/day'"
            )
        count, every = match.group(1), match.group(2)
        return cls(int(count), float(every or 1) * _UNITS[unit])

    def __str__(self) -> str:
        return f"{self.n}/{self.per:g}s"
