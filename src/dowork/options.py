"""A task's own options over its function's and its queue's defaults: typed and frozen.

``Task.configure`` builds an ``Options`` (an unset field defers to the defaults); the engine
turns it into a retry policy and an expiry; a durable record and a dump line store the part
of it that can be written down (``STORABLE``: never a callable) and read it back with
``Options.from_stored``. One list of storable options serves both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Final

from .errors import NotSerializable
from .retry import Backoff, RetryPolicy, seconds

__all__ = ["STORABLE", "UNSET", "Options", "Unset", "to_epoch"]


class Unset(Enum):
    """The type of ``UNSET``: an option left to the defaults (``None`` is a value of some)."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET

#: The options a durable record or a dump line can carry: the retry settings, the result's
#: retention and the expiry (``should_retry`` and a whole ``policy`` are callables or hold one).
STORABLE = (
    "retries", "backoff", "base_delay", "max_delay", "jitter", "keep_result", "expires",
    "expires_at",
)  # fmt: skip

#: Retry options named differently on ``RetryPolicy``.
_POLICY_NAME = {"base_delay": "base"}
_RETRY = ("retries", "backoff", "base_delay", "max_delay", "jitter", "should_retry")


def to_epoch(value: datetime | float | None, what: str) -> float | None:
    """Return a point in time as epoch seconds; naive datetimes are refused (ambiguous zone)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ValueError(
                f"{what} must be timezone-aware (e.g. datetime.now(UTC) + timedelta(...)); "
                "a naive datetime is ambiguous"
            )
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise TypeError(f"{what} must be an aware datetime or epoch seconds, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Options:
    """A task's own options; ``UNSET`` fields defer to its function's and queue's defaults.

    ``policy`` is a whole retry policy replacing the queue's default (the retry fields then
    apply over it); ``expires`` counts seconds from the enqueue, ``expires_at`` is an epoch
    time (both may be set: the earlier wins).
    """

    policy: RetryPolicy | Unset = UNSET
    retries: int | Unset = UNSET
    backoff: Backoff | str | Unset = UNSET
    base_delay: float | timedelta | Unset = UNSET
    max_delay: float | timedelta | Unset | None = UNSET
    jitter: bool | Unset | None = UNSET
    should_retry: Callable[[BaseException], bool] | Unset | None = UNSET
    keep_result: float | Unset | None = UNSET
    expires: float | Unset = UNSET
    expires_at: float | Unset = UNSET

    def __bool__(self) -> bool:
        """Whether any option is set."""
        return any(getattr(self, f.name) is not UNSET for f in fields(self))

    def set(self) -> dict[str, Any]:
        """The options that are set, by name."""
        return {
            f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not UNSET
        }

    def configured(
        self, policy: RetryPolicy | Unset | None, given: Mapping[str, Any]
    ) -> Options | None:
        """These options after ``Task.configure`` (``UNSET`` leaves one as is); None if empty.

        A ``policy`` replaces every retry option set before (``None`` clears them all);
        ``keep_result`` and ``expires`` are checked and normalised here.
        """
        current = self
        if policy is not UNSET:
            if policy is not None and not isinstance(policy, RetryPolicy):
                raise TypeError(f"policy must be a RetryPolicy, not {policy!r}")
            current = Options(policy=UNSET if policy is None else policy)
        changes = {k: v for k, v in given.items() if v is not UNSET and k in _RETRY}
        keep_result = given.get("keep_result", UNSET)
        if keep_result is not UNSET:
            changes["keep_result"] = seconds(keep_result, "keep_result")
        expires = given.get("expires", UNSET)
        if expires is not UNSET:
            changes["expires"] = changes["expires_at"] = UNSET
            if isinstance(expires, datetime):
                changes["expires_at"] = to_epoch(expires, "expires")
            elif expires is not None:
                changes["expires"] = seconds(expires, "expires")
        result = replace(current, **changes) if changes else current
        return result or None

    def retry_policy(self, base: RetryPolicy) -> RetryPolicy:
        """``base`` (or this ``policy``) with these retry options applied, validated."""
        start = base if self.policy is UNSET else self.policy
        given = {
            _POLICY_NAME.get(name, name): value
            for name in _RETRY
            if (value := getattr(self, name)) is not UNSET
        }
        if not given:
            return start
        return RetryPolicy(
            retries=given.get("retries", start.retries),
            backoff=given.get("backoff", start.backoff),
            base=given.get("base", start.base),
            max_delay=given.get("max_delay", start.max_delay),
            jitter=given.get("jitter", start.jitter),
            should_retry=given.get("should_retry", start.should_retry),
        )

    def expiry(self, now: float) -> float | None:
        """The absolute expiry these options give a task enqueued at ``now``, or None."""
        at = None if self.expires_at is UNSET else self.expires_at
        if self.expires is not UNSET:
            relative = now + self.expires
            at = relative if at is None else min(at, relative)
        return at

    def keep(self, default: float | None) -> float | None:
        """``keep_result`` if set, else ``default``."""
        return default if self.keep_result is UNSET else self.keep_result

    def storable(self) -> dict[str, Any]:
        """The options a dump line keeps, as JSON values (a backoff by its name)."""
        return {
            name: str(value) if name == "backoff" else value
            for name, value in self.set().items()
            if name in STORABLE
        }

    def to_stored(self, within: float | None, expires_at: float | None) -> str:
        """These options as a durable record stores them, with ``within`` and the expiry.

        ``expires`` is stored as the absolute ``expires_at`` (computed at the enqueue).

        Raises:
            NotSerializable: an option that cannot be stored is set (``should_retry``, a
                whole ``policy``), or a value JSON cannot hold.
        """
        stored: dict[str, Any] = {}
        for name, value in self.set().items():
            if name not in STORABLE:
                raise NotSerializable(
                    f"option {name!r} cannot be stored with a durable task; set it on the task "
                    "function (@queue.task(...)) instead"
                )
            if name not in ("expires", "expires_at"):
                stored[name] = str(value) if name == "backoff" else value
        if expires_at is not None:
            stored["expires_at"] = expires_at
        if within is not None:
            stored["within"] = within
        try:
            return json.dumps(stored, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise NotSerializable(f"task options cannot be stored: {exc}") from exc

    @classmethod
    def from_stored(
        cls, stored: Mapping[str, Any]
    ) -> tuple[Options | None, float | None, float | None]:
        """The options, ``within`` and ``expires_at`` of a record's stored options.

        Keys that are no option are ignored. Raises ``TypeError`` or ``ValueError`` on a
        stored option of the wrong type or value (the record cannot run as stored).
        """
        within = stored.get("within")
        if within is not None:
            within = float(within)
            if not within > 0:
                raise ValueError(f"within must be a positive number, not {within!r}")
        expires_at = stored.get("expires_at")
        if expires_at is not None:
            expires_at = float(expires_at)
        found = {n: stored[n] for n in STORABLE if n in stored and not n.startswith("expires")}
        if "keep_result" in found:
            found["keep_result"] = seconds(found["keep_result"], "keep_result")
        jitter = found.get("jitter")
        if jitter is not None and not isinstance(jitter, bool):
            raise TypeError(f"jitter must be true, false or null, not {jitter!r}")
        options = cls(**found) if found else None
        if options is not None:
            options.retry_policy(RetryPolicy())  # checks the retry options' types and values
        return options, within, expires_at


EMPTY: Final = Options()
