"""Task: one unit of work, its options, its state, and the handle to wait for its outcome.

A ``Task`` is the seed's ``*Task`` and go_do_work's task handle in one object: it carries the
function, arguments and options (retries, backoff, deadline, not-before time, after-callback),
then, once enqueued, its status, attempt count, next-attempt time and final outcome. Its options
can be changed only until it is enqueued; after that they raise ``TaskFrozen``.

``Task`` is a ``TaskHandle`` (its state, outcome and control) on a ``TaskSpec`` (the call and
its options) with the state only the engine reads and writes; what it asks of that engine is
the ``TaskHost`` protocol, so that tasks never import the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Mapping
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, TypeVar, Unpack, overload

from ..ratelimit import RateLimit
from ..retry import Backoff, RetryPolicy
from .handle import TaskHandle
from .spec import _EMPTY, _UNSET, is_async_callable
from .status import TaskStatus

#: (An enum's members read from the class cost a Python ``__getattr__`` hook each, 3.11.)
_PENDING = TaskStatus.PENDING

if TYPE_CHECKING:
    from ..clock import Clock


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

_current: ContextVar[Task[Any] | None] = ContextVar("dowork_current_task", default=None)


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


class Task(TaskHandle[R]):
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
        priority: -9 to 9, default 0: higher runs sooner; equal priorities run in enqueue
            order, and a waiting task overtakes newer ones of higher priority after
            ``priority_aging`` seconds per level between them (see ``DurableSettings``).
        rate_limit: queues with a backend; declare it on the task function,
            ``@queue.task(rate_limit="10/s")``: at most that many starts of the task in any
            period, across every worker; starts over it wait for a free slot (``RateLimit.of``).
        concurrency_key: queues with a backend: a tenant or customer id. Tasks of different
            keys take turns, so one key's backlog cannot hold back another's, and at most
            ``DurableSettings.key_concurrency`` tasks of one key run at once, cluster-wide.

    ``configure`` also takes, on durable queues only:

    - ``idempotency_key``: enqueueing another task with the same key on the same queue within
      ``DurableSettings.idempotency_window`` stores nothing and makes this task a handle on the
      first one (its ``id`` becomes the first task's), so a client may safely retry an enqueue.
    - ``unique_key``: the same, but the key is held only while its task waits or runs: once
      that task finished, the next enqueue with the key is stored.

    Unset retry options take the queue's defaults (``Queue(retry=...)``).
    """

    __slots__ = (
        "__weakref__",
        "_group",
        "_prev_delay",
        "_rank",
        "_runner",
        "_seq",
        "_slot",
        "_start_by",
        "_timed_out",
    )

    # Two attributes of ``TaskSpec``, typed with ``Task`` here (``TaskSpec`` cannot name it).
    _engine: TaskHost | None
    _after: AfterCallback | None
    # The state only the engine and its task source read and write.
    _group: GroupState | None
    _seq: int  # its place in the order the engine accepted tasks
    _runner: object  # what runs the attempt (a worker coroutine, a thread's token), or a mark
    _prev_delay: float | None  # the last retry delay (decorrelated jitter grows from it)
    _timed_out: bool  # the running attempt passed its ``within`` deadline
    _slot: float | None  # a start time a rate limit reserved (in-process)
    #: ``time.monotonic()`` after which a staged attempt must not start (a durable lease
    #: lapses then); None: no limit.
    _start_by: float | None
    #: Its place in line (``backends.flow.rank``): from the backend's claim, or
    #: stamped at enqueue by an in-process queue using priorities (NaN: not stamped).
    _rank: float

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
        template: Task[Any] | None = None,
    ) -> None:
        """Set every slot: the call, and the options of ``template`` (a task function's) or none."""
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.is_async = is_async
        if template is None:
            self._overrides = self._within = self._after = self._not_before = None
            self._delay = self._rate_limit = self._concurrency_key = None
            self._priority = 0
        else:  # (a task function's defaults, each slot set once)
            self._overrides = template._overrides
            self._within = template._within
            self._after = template._after
            self._not_before = template._not_before
            self._delay = template._delay
            self._priority = template._priority
            self._rate_limit = template._rate_limit
            self._concurrency_key = template._concurrency_key
        self._policy = self._next_attempt = self._prev_delay = None
        self._value = self._error = self._last_error = None
        self._id = self._engine = self._waiters = self._deadline_at = None
        self._runner = self._headers = self._expires_at = self._group = self._progress = None
        self._idempotency_key = self._deliveries = self._slot = self._start_by = None
        self._unwritten = None
        self._frozen = self._timed_out = self._cancel_requested = self._finished = False
        self._unique = False
        self._status = _PENDING
        self._attempts = self._seq = 0
        self._rank = math.nan

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
        """Change options (see ``Task``) before the task is enqueued; returns the task.

        Raises:
            TaskFrozen: the task was already submitted or enqueued.
            ValueError, TypeError: an option is out of range or of the wrong type; an
                after-callback is already set.
        """
        self._check_unfrozen()
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
        self._set_retry(policy, given)
        self._set_times(within, not_before, delay)
        self._set_key(idempotency_key, unique_key)
        self._set_flow(priority, rate_limit, concurrency_key)
        self._set_after(after)
        return self

    def __repr__(self) -> str:
        tid = self._id or "?"
        return f"<Task {self.name} id={tid} {self._status.value} attempts={self._attempts}>"
