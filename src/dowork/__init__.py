"""dowork: run Python functions in the background, with retries, backoff and scheduling.

The quickest use is the global queue::

    import dowork
    task = dowork.submit(send_email, "ada@example.org")
    dowork.shutdown()          # refuse new tasks, finish the queued ones

Everything else (named queues, options, typed task functions, a fake clock for tests) is
re-exported here; see the README for a tour.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, Unpack, overload

from . import _global
from ._global import global_queue, reset_global_queue
from .chain import ArgsMap, ChainFailed, ChainLog, Reentrant, StepLog, reentrant
from .clock import Clock, FakeClock, SystemClock
from .codec import Codec, JSONCodec, PickleCodec
from .durable import DurableSettings
from .errors import (
    AlreadyComplete,
    BackendBusy,
    BackendError,
    BackendFull,
    BackendUnavailable,
    DecodeError,
    DoNotRetry,
    DoWorkError,
    EvictionPolicyError,
    GroupFailed,
    MaxRetriesExceeded,
    NotRegistered,
    NotSerializable,
    OutcomeNotWritten,
    OutcomeUnknown,
    PayloadTooLarge,
    QueueFull,
    QueueShuttingDown,
    StoreLost,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskFrozen,
    TaskGone,
    TaskNotDone,
    TaskTimeout,
    TooDeeplyNested,
    UnknownTask,
)
from .function import AsyncTaskFunction, SyncTaskFunction, TaskFunction, make_task_function
from .group import Group, GroupPolicy
from .hooks import Hooks, LoggingHooks
from .queue import Queue, _Decorator, ajoin, default_concurrency, join
from .ratelimit import RateLimit
from .retry import Backoff, RetryPolicy
from .schedule import Cron, Every
from .scheduling import Schedule
from .task import Progress, Task, TaskOptions, TaskStatus, current_task

__all__ = [
    # the global queue
    "submit",
    "enqueue",
    "start",
    "shutdown",
    "task",
    "global_queue",
    "reset_global_queue",
    # queues and tasks
    "Queue",
    "RateLimit",
    "Task",
    "TaskStatus",
    "TaskFunction",
    "SyncTaskFunction",
    "AsyncTaskFunction",
    "TaskOptions",
    "Schedule",
    "Group",
    "GroupPolicy",
    "join",
    "ajoin",
    "current_task",
    "Progress",
    "default_concurrency",
    # chained jobs (gotasks)
    "ArgsMap",
    "ChainFailed",
    "ChainLog",
    "StepLog",
    "Reentrant",
    "reentrant",
    # durable queues
    "DurableSettings",
    "Codec",
    "JSONCodec",
    "PickleCodec",
    # policies and time
    "RetryPolicy",
    "Backoff",
    "Every",
    "Cron",
    "Clock",
    "SystemClock",
    "FakeClock",
    # hooks
    "Hooks",
    "LoggingHooks",
    # errors
    "DoWorkError",
    "DoNotRetry",
    "MaxRetriesExceeded",
    "AlreadyComplete",
    "QueueShuttingDown",
    "QueueFull",
    "GroupFailed",
    "TaskExpired",
    "TaskCancelled",
    "TaskFailed",
    "TaskFrozen",
    "TaskGone",
    "TaskNotDone",
    "TaskTimeout",
    "UnknownTask",
    "NotRegistered",
    "NotSerializable",
    "PayloadTooLarge",
    "TooDeeplyNested",
    "DecodeError",
    "BackendError",
    "BackendUnavailable",
    "BackendBusy",
    "BackendFull",
    "StoreLost",
    "OutcomeNotWritten",
    "OutcomeUnknown",
    "EvictionPolicyError",
    "__version__",
]

if TYPE_CHECKING:
    __version__: str


def __getattr__(name: str) -> Any:
    """``__version__``, read from the installed package's metadata on first use.

    (``importlib.metadata`` costs a worker's start-up more than most of dowork: it is imported
    only when the version is asked for.)
    """
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    global __version__
    try:
        __version__ = version("dowork")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        __version__ = "0.0.0"
    return __version__


P = ParamSpec("P")
R = TypeVar("R")


@overload
def submit(
    fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
) -> Task[R]: ...
@overload
def submit(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Task[R]: ...
def submit(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Task[Any]:
    """Run ``fn(*args, **kwargs)`` in the background on the global queue (started lazily)."""
    return global_queue().submit(fn, *args, **kwargs)


def enqueue(task: Task[R]) -> Task[R]:
    """Enqueue a ``Task`` (built with options) on the global queue."""
    return global_queue().enqueue(task)


def start() -> Queue:
    """Make sure the global queue exists and runs; return it."""
    return global_queue()


def shutdown(timeout: float | None = None) -> bool:
    """Soft-shut the global queue: refuse new tasks and wait for the queued ones.

    Does nothing (and returns True) if the global queue was never used.
    """
    queue = _global.existing_global_queue()
    if queue is None:
        return True
    return queue.shutdown(timeout)


@overload
def task(fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTaskFunction[P, R]: ...  # type: ignore[overload-overlap]
@overload
def task(fn: Callable[P, R], /) -> SyncTaskFunction[P, R]: ...
@overload
def task(**options: Unpack[TaskOptions]) -> _Decorator: ...
def task(fn: Callable[..., Any] | None = None, /, **options: Unpack[TaskOptions]) -> Any:
    """Decorate a function as a typed task of the global queue: ``@dowork.task(retries=3)``."""
    if fn is not None:
        return make_task_function(fn, None, options)
    return _Decorator(None, options)
