"""Task: one unit of work, its options, its state, and the handle to wait for its outcome.

A ``Task`` is the seed's ``*Task`` and go_do_work's task handle in one object: it carries the
function, arguments and options (retries, backoff, deadline, not-before time, after-callback),
then, once enqueued, its status, attempt count, next-attempt time and final outcome. Its options
can be changed only until it is enqueued; after that they raise ``TaskFrozen``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import os
import threading
from collections.abc import Callable, Coroutine, Generator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from inspect import CO_COROUTINE
from time import time as time_now
from types import FunctionType
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    NamedTuple,
    Protocol,
    TypedDict,
    TypeVar,
    Unpack,
    overload,
)

from ..errors import TaskFrozen, TaskNotDone
from ..options import EMPTY, UNSET, Options, to_epoch
from ..ratelimit import RateLimit
from ..retry import Backoff, RetryPolicy, seconds

if TYPE_CHECKING:
    from ..clock import Clock

__all__ = ["AfterCallback", "Progress", "Task", "TaskOptions", "TaskStatus", "current_task"]


class TaskHost(Protocol):
    """What a task asks of the engine that holds it (``dowork.engine.Engine`` is one).

    A protocol, so that tasks sit below the engine and never import it.
    """

    name: str
    clock: Clock
    durable: bool

    def register(self, task: Task[Any]) -> None:
        """Remember the task by its id (called when its id is first read)."""

    def on_loop(self) -> bool:
        """Whether the caller runs on the engine's event loop thread."""

    @property
    def progress_changed(self) -> Callable[[Task[Any]], None]:
        """Tell the hooks (and a store) about the task's progress (any thread)."""

    @property
    def watch(self) -> Callable[[Task[Any]], None]:
        """Someone waits for the task's outcome."""

    @property
    def cancel_handle(self) -> Callable[[Task[Any]], bool]:
        """Cancel the task from any thread."""

    @property
    def acancel_handle(self) -> Callable[[Task[Any]], Coroutine[Any, Any, bool]]:
        """Cancel the task from any event loop."""

    def group_complete(
        self,
        callback: Task[Any],
        results: list[Any],
        failures: list[tuple[str, BaseException]],
        policy: str,
    ) -> None:
        """Every member of ``callback``'s group finished: run or fail it."""


class GroupState(Protocol):
    """What a task knows of the in-memory group it belongs to (``dowork.group.LocalGroup``)."""

    @property
    def callback(self) -> Task[Any]:
        """The task held until every member finished."""

    def member_done(self, engine: TaskHost) -> None:
        """A member finished (on the loop)."""


R = TypeVar("R")

#: The after-callback: called once with the finished task; may be ``def`` or ``async def``.
AfterCallback = Callable[["Task[Any]"], object]

_Waiter = threading.Event | tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]
_current: ContextVar[Task[Any] | None] = ContextVar("dowork_current_task", default=None)
#: The task whose hooks and after-callback run in this context: they read its outcome even
#: while a durable queue is still writing it (see ``Task._unwritten``).
_deciding: ContextVar[Task[Any] | None] = ContextVar("dowork_deciding", default=None)
_waiter_lock = threading.Lock()

#: Option names that make up a task's retry policy (see ``RetryPolicy``).
RETRY_FIELDS = ("retries", "backoff", "base_delay", "max_delay", "jitter", "should_retry")
_UNSET: Any = UNSET  # a configure() argument not given


class TaskOptions(TypedDict, total=False):
    """The keyword options of ``Task``, ``@queue.task`` and ``@dowork.task`` (see ``Task``)."""

    retries: int
    max_delay: float | timedelta | None
    base_delay: float | timedelta
    backoff: Backoff | str
    jitter: bool | None
    should_retry: Callable[[BaseException], bool] | None
    within: float | timedelta | None
    not_before: datetime | float | None
    delay: float | timedelta | None
    after: AfterCallback | None
    policy: RetryPolicy | None
    keep_result: float | timedelta | None
    expires: float | timedelta | datetime | None
    priority: int
    rate_limit: RateLimit | str | tuple[int, float] | None
    concurrency_key: str | None


class TaskStatus(StrEnum):
    """Where a task is in its life; the last three are final."""

    PENDING = "pending"  #: enqueued and due, waiting for a free worker
    SCHEDULED = "scheduled"  #: enqueued, waiting for its not-before time
    #: held by a worker (a thread of the lane, a claimed durable lease) but not started yet
    RESERVED = "reserved"
    RUNNING = "running"  #: an attempt is in progress
    RETRYING = "retrying"  #: an attempt failed; waiting out the backoff before the next one
    SUCCEEDED = "succeeded"  #: an attempt returned; the result is available
    FAILED = "failed"  #: the last attempt failed and no further attempt will be made
    CANCELLED = "cancelled"  #: cancelled before it could finish
    DEAD = "dead"  #: dead-lettered: could not run (unknown name, bad payload, crashed workers)

    @property
    def final(self) -> bool:
        """Whether the task has finished (succeeded, failed or cancelled)."""
        return self in _FINAL


_FINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.DEAD})


class Progress(NamedTuple):
    """How far a running task says it got: a number, an optional message, and when."""

    value: float
    message: str | None
    at: datetime


def current_task() -> Task[Any]:
    """Return the task whose attempt is running in this thread or coroutine.

    A task reads its ``attempts``, ``deliveries``, ``deadline`` and ``cancel_requested`` from
    it, which is how a synchronous function notices a cancellation or a passed deadline it cannot
    be interrupted for, and how it learns that an earlier delivery may have crashed half way
    (``deliveries > attempts``).

    Raises:
        RuntimeError: when called outside a task attempt.
    """
    task = _current.get()
    if task is None:
        raise RuntimeError("dowork.current_task() called outside a running task")
    return task


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


class Task(Generic[R]):
    """A function call to run in the background, with its options and, once enqueued, its state.

    Args:
        fn: a plain or ``async def`` function; plain ones run in the queue's thread pool.
        args, kwargs: the arguments ``fn`` is called with.
        retries: re-runs allowed after the first failure (at most ``retries + 1`` runs);
            ``-1`` retries forever. Default 0: run once.
        max_delay: cap on the delay between attempts in seconds or a timedelta (default 30 min);
            ``None`` or ``0`` for no cap.
        base_delay: the base of the backoff (default 60 s).
        backoff: ``"exponential"`` (default), ``"fixed"``, ``"linear"`` or ``"immediate"``.
        jitter: randomise delays (default on for exponential backoff); ``False`` is the seed's
            ``NoJitter``.
        should_retry: a predicate on the exception; False ends the task at once.
        within: deadline for each attempt in seconds; an async attempt is cancelled when it
            passes, a sync attempt is abandoned (its thread runs on; the attempt fails with
            ``TaskTimeout`` and ``cancel_requested`` turns true for it to see).
        not_before: the earliest first run, an aware datetime or epoch seconds.
        delay: run no earlier than this many seconds after being enqueued.
        after: called exactly once when the task finishes (succeeded, failed or cancelled), with
            the task; exceptions it raises are logged and do not change the outcome.
        policy: a whole ``RetryPolicy`` to start from; the retry options above override it.
        keep_result: durable queues: seconds to keep the finished record (status, result,
            error) readable by id; ``0`` stores no result at all.
        expires: drop the task if no attempt has started by then: seconds after it is
            enqueued, or an aware datetime. An expired task is not run; it ends ``dead``
            with ``TaskExpired`` (reason ``expired`` on durable queues).

    Unset retry options take the queue's defaults (``Queue(retry=...)``).
    """

    __slots__ = (
        "__weakref__",
        "_after",
        "_attempts",
        "_cancel_requested",
        "_concurrency_key",
        "_deadline_at",
        "_delay",
        "_deliveries",
        "_engine",
        "_error",
        "_expires_at",
        "_finished",
        "_frozen",
        "_group",
        "_headers",
        "_id",
        "_idempotency_key",
        "_last_error",
        "_next_attempt",
        "_not_before",
        "_overrides",
        "_policy",
        "_prev_delay",
        "_priority",
        "_progress",
        "_rank",
        "_rate_limit",
        "_runner",
        "_seq",
        "_slot",
        "_start_by",
        "_status",
        "_timed_out",
        "_unique",
        "_unwritten",
        "_value",
        "_waiters",
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

    @overload
    def __init__(
        self: Task[R],
        fn: Callable[..., Coroutine[Any, Any, R]],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[TaskOptions],
    ) -> None: ...
    @overload
    def __init__(
        self: Task[R],
        fn: Callable[..., R],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[TaskOptions],
    ) -> None: ...
    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[TaskOptions],
    ) -> None:
        if not callable(fn):
            raise TypeError(f"a task needs a callable, not {fn!r}")
        if not isinstance(args, tuple):
            args = tuple(args)
        self._init(fn, args, kwargs if kwargs is not None else _EMPTY, is_async_callable(fn))
        if options:
            self.configure(**options)

    def _init(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        is_async: bool,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.is_async = is_async
        self._overrides: Options | None = None
        self._policy: RetryPolicy | None = None
        self._within: float | None = None
        self._after: AfterCallback | None = None
        self._not_before: float | None = None
        self._delay: float | None = None
        self._frozen = False
        self._status = TaskStatus.PENDING
        self._attempts = 0
        self._next_attempt: float | None = None
        self._prev_delay: float | None = None
        self._value: Any = None
        self._error: BaseException | None = None
        self._last_error: BaseException | None = None
        self._id: str | None = None
        self._engine: TaskHost | None = None
        self._waiters: list[_Waiter] | None = None
        self._seq = 0
        self._deadline_at: float | None = None
        self._timed_out = False
        self._cancel_requested = False
        self._finished = False
        self._runner: object = None
        self._headers: dict[str, str] | None = None
        self._expires_at: float | None = None
        self._group: GroupState | None = None
        self._progress: Progress | None = None
        self._idempotency_key: str | None = None
        self._unique = False
        self._deliveries: int | None = None
        self._priority = 0
        self._concurrency_key: str | None = None
        self._slot: float | None = None  # a start time a rate limit reserved (in-process)
        #: ``time.monotonic()`` after which a staged attempt must not start (a durable lease
        #: lapses then); None: no limit.
        self._start_by: float | None = None
        #: Its place in line (``backends._protocol.rank``): from the backend's claim, or
        #: stamped at enqueue by an in-process queue using priorities (NaN: not stamped).
        self._rank = math.nan
        self._rate_limit: RateLimit | None = None
        #: Set by a durable queue from the moment it decides this task's outcome until the
        #: store has it: the status the handle shows meanwhile (the store's, not yet final).
        self._unwritten: TaskStatus | None = None

    @classmethod
    def _fast(
        cls,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        is_async: bool,
    ) -> Task[Any]:
        """Build a task without option parsing (the hot path of ``submit``)."""
        task = cls.__new__(cls)
        task._init(fn, args, kwargs, is_async)
        return task

    # -- options ---------------------------------------------------------------------------

    def configure(
        self,
        *,
        retries: int = _UNSET,
        max_delay: float | timedelta | None = _UNSET,
        base_delay: float | timedelta = _UNSET,
        backoff: Backoff | str = _UNSET,
        jitter: bool | None = _UNSET,
        should_retry: Callable[[BaseException], bool] | None = _UNSET,
        within: float | timedelta | None = _UNSET,
        not_before: datetime | float | None = _UNSET,
        delay: float | timedelta | None = _UNSET,
        after: AfterCallback | None = _UNSET,
        policy: RetryPolicy | None = _UNSET,
        keep_result: float | timedelta | None = _UNSET,
        expires: float | timedelta | datetime | None = _UNSET,
        idempotency_key: str | None = _UNSET,
        unique_key: str | None = _UNSET,
        priority: int = _UNSET,
        rate_limit: RateLimit | str | tuple[int, float] | None = _UNSET,
        concurrency_key: str | None = _UNSET,
    ) -> Task[R]:
        """Change options before the task is enqueued; returns the task for chaining.

        ``idempotency_key`` (durable queues only): enqueueing another task with the same key on
        the same queue within ``DurableSettings.idempotency_window`` stores nothing and makes
        this task a handle on the first one (its ``id`` becomes the first task's), so a client
        may safely retry an enqueue.

        ``unique_key`` (durable queues only): the same, but the key is held only while its task
        waits or runs: once that task finished, the next enqueue with the key is stored.

        ``priority`` (-9 to 9, default 0): higher runs sooner; equal priorities run in enqueue
        order, and a waiting task overtakes newer ones of higher priority after
        ``priority_aging`` seconds per level between them (see ``DurableSettings``).

        ``rate_limit`` (queues with a backend; declare it on the task function,
        ``@queue.task(rate_limit="10/s")``): at most that many starts of the task in any
        period, across every worker; starts over it wait for a free slot (``RateLimit.of``).

        ``concurrency_key`` (queues with a backend): a tenant or customer id. Tasks of
        different keys take turns, so one key's backlog cannot hold back another's, and at
        most ``DurableSettings.key_concurrency`` tasks of one key run at once, cluster-wide.

        Raises:
            TaskFrozen: the task was already submitted or enqueued.
            ValueError, TypeError: an option is out of range or of the wrong type; an
                after-callback is already set.
        """
        if self._frozen:
            raise TaskFrozen(
                "task options cannot change after the task was submitted or enqueued; "
                "build a Task(...) with its options, then enqueue it"
            )
        given: dict[str, Any] = {
            "retries": retries,
            "max_delay": max_delay,
            "base_delay": base_delay,
            "backoff": backoff,
            "jitter": jitter,
            "should_retry": should_retry,
            "keep_result": keep_result,
            "expires": expires,
        }
        options = (self._overrides or EMPTY).configured(policy, given)
        if options is not None:
            options.retry_policy(RetryPolicy())  # validate now, where the mistake is made
        self._overrides = options  # (None: the last option was cleared, e.g. expires=None)
        if within is not _UNSET:
            value = seconds(within, "within")
            self._within = value or None
        if not_before is not _UNSET:
            self._not_before = to_epoch(not_before, "not_before")
        if delay is not _UNSET:
            self._delay = seconds(delay, "delay")
        self._set_key(idempotency_key, unique_key)
        self._set_flow(priority, rate_limit, concurrency_key)
        if after is not _UNSET:
            if after is not None and not callable(after):
                raise TypeError(f"after must be callable, not {after!r}")
            if self._after is not None and after is not None:
                raise ValueError("this task already has an after-callback")
            self._after = after
        return self

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

    # -- state -----------------------------------------------------------------------------

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
    def queue_name(self) -> str | None:
        """The name of the queue the task was enqueued on, or None."""
        return self._engine.name if self._engine is not None else None

    @property
    def status(self) -> TaskStatus:
        """The task's current status.

        On a durable queue a final status shows once the store has it (until then, the one it
        had), except to the task's own hooks and after-callback.
        """
        status = self._status  # read first: a durable queue sets _unwritten before it
        shown = self._unwritten
        if shown is None or _deciding.get() is self:
            return status
        return shown

    @property
    def done(self) -> bool:
        """Whether the task finished: succeeded, failed or cancelled.

        On a durable queue, only once its outcome is in the store (see ``status``).
        """
        if self._status in _FINAL:
            return self._unwritten is None or _deciding.get() is self
        return False

    @property
    def attempts(self) -> int:
        """How many times the function was called (the running attempt included).

        On a durable queue, a run cut short by its worker dying (SIGKILL, power loss) is not
        counted here: see ``deliveries``.
        """
        return self._attempts

    @property
    def deliveries(self) -> int:
        """How many times the task was handed to a worker, the current time included.

        On a durable queue every claim counts, also those that ended with the worker dying
        (the task ran again once its lease expired), so ``deliveries > attempts`` inside a task
        means an earlier run may have done part of its work: make side effects idempotent
        (e.g. keyed by ``task.id``). In memory it equals ``attempts``.
        """
        return self._attempts if self._deliveries is None else self._deliveries

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
    def next_attempt(self) -> datetime | None:
        """When the next attempt is due (after a failure or for a not-before task), else None."""
        na = self._next_attempt
        return None if na is None else datetime.fromtimestamp(na, UTC)

    @property
    def last_error(self) -> BaseException | None:
        """The exception of the most recent failed attempt, even while the task retries."""
        return self._last_error

    @property
    def deadline(self) -> datetime | None:
        """When the running attempt's ``within`` deadline passes, or None (no deadline)."""
        at = self._deadline_at
        return None if at is None else datetime.fromtimestamp(at, UTC)

    @property
    def cancel_requested(self) -> bool:
        """Whether the task was asked to stop (cancelled, or its attempt's deadline passed)."""
        return self._cancel_requested

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

    @property
    def progress(self) -> Progress | None:
        """The latest progress the running task reported, or None if it reported none."""
        return self._progress

    def report_progress(self, value: float, message: str | None = None) -> None:
        """Record how far the task got (e.g. ``0.4`` or ``40`` items) with an optional message.

        Call it from inside the task, usually as ``current_task().report_progress(...)``; any
        thread may call it. Handles, ``on_progress`` hooks and, on durable queues, every
        process reading the task by id see the latest value. Reports are cheap: on a durable
        queue only the latest one is written, coalesced between writes.
        """
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"progress must be a finite number, not {value!r}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"a progress message must be a str, not {type(message).__name__}")
        engine = self._engine
        at = time_now() if engine is None else engine.clock.now()
        self._progress = Progress(value, message, datetime.fromtimestamp(at, UTC))
        if engine is not None:
            engine.progress_changed(self)

    # -- outcome ---------------------------------------------------------------------------

    def _outcome(self) -> R:
        if self._status is TaskStatus.SUCCEEDED:
            return self._value  # type: ignore[no-any-return]
        error = self._error
        assert error is not None
        raise error

    def _ready_here(self) -> bool:
        """Whether the outcome can be read without waiting.

        True once finished, or once final when asked on the queue's own loop (after-callback),
        unless a durable queue is still writing the outcome (its hooks and after-callback
        excepted).
        """
        if self._finished:
            return True
        engine = self._engine
        return (
            self._status in _FINAL
            and engine is not None
            and engine.on_loop()
            and (self._unwritten is None or _deciding.get() is self)
        )

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the task finished; return False if ``timeout`` seconds passed first.

        A task that ran here on a durable queue is finished once its store has the outcome
        (so every other reader of the store sees the same), after its after-callback.
        """
        if self._ready_here():
            return True
        if timeout is not None and timeout <= 0:
            return False
        engine = self._engine
        if engine is None:
            raise RuntimeError("the task was never enqueued, so it will never finish")
        if engine.on_loop():
            raise RuntimeError(
                "blocking on a task from its queue's event loop would deadlock; "
                "use 'await task' or 'await task.aresult()' there"
            )
        engine.watch(self)
        event = threading.Event()
        self._add_waiter(event)
        if self._finished:
            return True
        return event.wait(timeout)

    def result(self, timeout: float | None = None) -> R:
        """Wait for the task and return its value, or raise its final exception.

        ``result(timeout=0)`` is the seed's ``Result()``: it raises at once if unfinished.

        Raises:
            TaskNotDone: the task did not finish within ``timeout`` seconds.
            MaxRetriesExceeded: the attempts ran out (chained to the last error).
            TaskCancelled: the task was cancelled.
            DoNotRetry, TaskTimeout, or the task's own exception: the task failed with it.
        """
        if not self.wait(timeout):
            raise TaskNotDone(f"task {self.name} is {self._status.value}, not finished")
        return self._outcome()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the task and return its final exception, or None if it succeeded."""
        if not self.wait(timeout):
            raise TaskNotDone(f"task {self.name} is {self._status.value}, not finished")
        return None if self._status is TaskStatus.SUCCEEDED else self._error

    async def aresult(self, timeout: float | None = None) -> R:
        """Await the task's value without blocking the event loop; see ``result()``."""
        if not self._ready_here():
            if self._engine is None:
                raise RuntimeError("the task was never enqueued, so it will never finish")
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._add_waiter((loop, future))
            self._engine.watch(self)
            if not self._finished:
                try:
                    async with asyncio.timeout(timeout):
                        await asyncio.shield(future)
                except TimeoutError:
                    raise TaskNotDone(
                        f"task {self.name} is {self._status.value}, not finished"
                    ) from None
        return self._outcome()

    async def aexception(self, timeout: float | None = None) -> BaseException | None:
        """Await the task and return its final exception, or None if it succeeded."""
        try:
            await self.aresult(timeout)
        except TaskNotDone:
            if not self._finished:
                raise
        except BaseException:
            pass
        return None if self._status is TaskStatus.SUCCEEDED else self._error

    def __await__(self) -> Generator[Any, None, R]:
        return self.aresult().__await__()

    def _add_waiter(self, waiter: _Waiter) -> None:
        with _waiter_lock:
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)

    def _wake_waiters(self) -> None:
        """Mark the task finished and release everyone waiting (any thread, any loop)."""
        self._finished = True
        waiters = self._waiters
        if not waiters:
            return
        with _waiter_lock:
            self._waiters = None
        for waiter in waiters:
            if isinstance(waiter, threading.Event):
                waiter.set()
            else:
                loop, future = waiter
                with contextlib.suppress(RuntimeError):  # a closed loop has nobody to wake
                    loop.call_soon_threadsafe(_resolve, future)

    # -- control ---------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the task: a waiting task never runs, a running async attempt is cancelled.

        A running sync attempt cannot be interrupted: ``cancel_requested`` turns true for it to
        check, and the task ends as cancelled when the attempt returns. Returns False if the
        task had already finished (or was never enqueued).
        """
        engine = self._engine
        if engine is None or self.done:
            return False
        return engine.cancel_handle(self)

    async def acancel(self) -> bool:
        """``cancel()`` for async callers: never blocks the caller's event loop."""
        engine = self._engine
        if engine is None or self.done:
            return False
        return await engine.acancel_handle(self)

    def __repr__(self) -> str:
        tid = self._id or "?"
        return f"<Task {self.name} id={tid} {self._status.value} attempts={self._attempts}>"


_EMPTY: Mapping[str, Any] = {}


def _checked_key(key: object, current: str | None, what: str = "idempotency_key") -> str | None:
    """Return a valid key (a non-empty str) or None; ``current`` when unset."""
    if key is _UNSET:
        return current
    if key is not None and (not isinstance(key, str) or not key):
        raise TypeError(f"{what} must be a non-empty str, not {key!r}")
    return key


#: The priorities a task may have (``configure(priority=...)``); higher runs sooner.
PRIORITIES = range(-9, 10)


def _checked_priority(priority: object) -> int:
    """Return a valid priority (an int from -9 to 9)."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int from -9 to 9, not {priority!r}")
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be from -9 to 9, not {priority}")
    return priority


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
