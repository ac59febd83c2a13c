"""TaskSpec: the call a task makes and its options, fixed once the task is enqueued.

``TaskHandle`` builds on it, and ``Task`` on that. ``Task.configure`` takes every option and
hands each group of them to a ``_set_*`` method here, which checks it where the mistake is made.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from inspect import CO_COROUTINE
from types import FunctionType
from typing import Any

from ..errors import TaskFrozen
from ..options import EMPTY, UNSET, Options, to_epoch
from ..ratelimit import RateLimit
from ..retry import RetryPolicy, seconds
from .status import HostView

#: Option names that make up a task's retry policy (see ``RetryPolicy``).
RETRY_FIELDS = ("retries", "backoff", "base_delay", "max_delay", "jitter", "should_retry")
#: The priorities a task may have (``configure(priority=...)``); higher runs sooner.
PRIORITIES = range(-9, 10)
_UNSET: Any = UNSET  # a configure() argument not given
_EMPTY: Mapping[str, Any] = {}


def is_async_callable(fn: object) -> bool:
    """Return whether calling ``fn`` gives a coroutine (``async def``, partials and callables)."""
    if type(fn) is FunctionType:  # the common case, fast
        return bool(fn.__code__.co_flags & CO_COROUTINE)
    flag = getattr(fn, "_dowork_is_async", None)  # a TaskFunction knows what it wraps
    if isinstance(flag, bool):
        return flag
    while True:
        if inspect.iscoroutinefunction(fn):
            return True
        inner = getattr(fn, "func", None)  # functools.partial
        if inner is None or inner is fn:
            break
        fn = inner
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the bound __call__ itself
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


class TaskSpec:
    """The call (function, arguments) and its options; ``TaskHandle`` builds on it."""

    __slots__ = (
        "_after",
        "_concurrency_key",
        "_delay",
        "_engine",
        "_expires_at",
        "_frozen",
        "_headers",
        "_id",
        "_idempotency_key",
        "_not_before",
        "_overrides",
        "_policy",
        "_priority",
        "_rate_limit",
        "_unique",
        "_within",
        "args",
        "fn",
        "is_async",
        "kwargs",
    )

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    is_async: bool
    #: The engine holding the task once it is enqueued (``Task`` types it as a ``TaskHost``).
    _engine: HostView | None
    _id: str | None
    _frozen: bool
    #: The options set by ``configure`` over the function's and queue's defaults (None: none).
    _overrides: Options | None
    #: The retry policy in force, once the engine resolved it (None: not yet).
    _policy: RetryPolicy | None
    _within: float | None
    _not_before: float | None
    _delay: float | None
    _expires_at: float | None
    _after: Callable[[Any], object] | None
    _headers: dict[str, str] | None
    _idempotency_key: str | None
    _unique: bool
    _priority: int
    _concurrency_key: str | None
    _rate_limit: RateLimit | None

    # -- configure's parts, in the order it applies them ------------------------------------

    def _check_unfrozen(self) -> None:
        if self._frozen:
            raise TaskFrozen(
                "task options cannot change after the task was submitted or enqueued; "
                "build a Task(...) with its options, then enqueue it"
            )

    def _set_retry(self, policy: RetryPolicy | None, given: dict[str, Any]) -> None:
        """Apply ``configure``'s retry options, ``keep_result`` and ``expires``."""
        options = (self._overrides or EMPTY).configured(policy, given)
        if options is not None:
            options.retry_policy(RetryPolicy())  # validate now, where the mistake is made
        self._overrides = options  # (None: the last option was cleared, e.g. expires=None)

    def _set_times(
        self,
        within: float | timedelta | None,
        not_before: datetime | float | None,
        delay: float | timedelta | None,
    ) -> None:
        """Apply ``configure``'s ``within``, ``not_before`` and ``delay``."""
        if within is not _UNSET:
            value = seconds(within, "within")
            self._within = value or None
        if not_before is not _UNSET:
            self._not_before = to_epoch(not_before, "not_before")
        if delay is not _UNSET:
            self._delay = seconds(delay, "delay")

    def _set_key(self, idempotency_key: object, unique_key: object) -> None:
        """Apply ``configure``'s ``idempotency_key`` or ``unique_key`` (one of them at most)."""
        if idempotency_key is not _UNSET and unique_key is not _UNSET:
            raise ValueError("give idempotency_key or unique_key, not both")
        if unique_key is not _UNSET:
            self._idempotency_key = _checked_key(unique_key, None, "unique_key")
            self._unique = self._idempotency_key is not None
        elif idempotency_key is not _UNSET:
            self._idempotency_key = _checked_key(idempotency_key, None)
            self._unique = False

    def _set_flow(self, priority: object, rate_limit: object, concurrency_key: object) -> None:
        """Apply ``configure``'s flow-control options: priority, rate limit, concurrency key."""
        if priority is not _UNSET:
            self._priority = _checked_priority(priority)
        if concurrency_key is not _UNSET:
            self._concurrency_key = _checked_key(concurrency_key, None, "concurrency_key")
        if rate_limit is not _UNSET:
            self._rate_limit = (
                None if rate_limit is None else RateLimit.of(rate_limit)  # type: ignore[arg-type]
            )

    def _set_after(self, after: Callable[[Any], object] | None) -> None:
        """Apply ``configure``'s after-callback (one at most)."""
        if after is not _UNSET:
            if after is not None and not callable(after):
                raise TypeError(f"after must be callable, not {after!r}")
            if self._after is not None and after is not None:
                raise ValueError("this task already has an after-callback")
            self._after = after

    # -- the options -----------------------------------------------------------------------

    @property
    def frozen(self) -> bool:
        """Whether the options are fixed (the task was submitted or enqueued)."""
        return self._frozen

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy in force (the queue's default merged with this task's options)."""
        if self._policy is not None:
            return self._policy
        return (self._overrides or EMPTY).retry_policy(RetryPolicy())

    @property
    def within(self) -> float | None:
        """The per-attempt deadline in seconds, or None."""
        return self._within

    @property
    def expires_at(self) -> datetime | None:
        """When an enqueued task that has not started by then is dropped as expired."""
        at = self._expires_at
        return None if at is None else datetime.fromtimestamp(at, UTC)

    @property
    def not_before(self) -> datetime | None:
        """The earliest first run, or None."""
        nb = self._not_before
        return None if nb is None else datetime.fromtimestamp(nb, UTC)

    @property
    def id(self) -> str:
        """A unique id (128 random bits in hex); ``Queue.get(id)`` finds the task by it."""
        tid = self._id
        if tid is None:
            tid = self._id = os.urandom(16).hex()
            engine = self._engine
            if engine is not None:
                engine.register(self)
        return tid

    @property
    def name(self) -> str:
        """The function's qualified name, for logs."""
        fn = getattr(self.fn, "func", self.fn)
        return getattr(fn, "__qualname__", None) or type(fn).__qualname__

    @property
    def idempotency_key(self) -> str | None:
        """The key that de-duplicates this task's enqueue (or its ``unique_key``), or None."""
        return self._idempotency_key

    @property
    def unique_key(self) -> str | None:
        """The key held while this task waits or runs (``configure(unique_key=...)``), or None."""
        return self._idempotency_key if self._unique else None

    @property
    def priority(self) -> int:
        """How soon the task is claimed next to others (-9 to 9, higher sooner)."""
        return self._priority

    @property
    def concurrency_key(self) -> str | None:
        """The key whose tasks take turns with other keys' (``configure``), or None."""
        return self._concurrency_key

    @property
    def rate_limit(self) -> RateLimit | None:
        """The task function's rate limit (``configure(rate_limit=...)``), or None."""
        return self._rate_limit

    @property
    def headers(self) -> dict[str, str]:
        """String metadata that travels with the task to whichever process runs it.

        Set them before the task is stored (a ``before_enqueue`` hook is the place: tracing
        puts its context here); on a durable queue they are stored with the arguments.
        """
        headers = self._headers
        if headers is None:
            headers = self._headers = {}
        return headers


def _checked_key(key: object, current: str | None, what: str = "idempotency_key") -> str | None:
    """Return a valid key (a non-empty str) or None; ``current`` when unset."""
    if key is _UNSET:
        return current
    if key is not None and (not isinstance(key, str) or not key):
        raise TypeError(f"{what} must be a non-empty str, not {key!r}")
    return key


def _checked_priority(priority: object) -> int:
    """Return a valid priority (an int from -9 to 9)."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int from -9 to 9, not {priority!r}")
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be from -9 to 9, not {priority}")
    return priority
