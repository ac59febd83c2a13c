"""TaskFunction: a function made into a typed task by ``@queue.task`` or ``@dowork.task``.

It keeps the function's signature (``ParamSpec``), so ``send.submit(to, body)`` is checked by
mypy like ``send(to, body)``, and the handle it returns is ``Task[R]`` for the function's
return type (the awaited type for ``async def``). Options are parsed once, at decoration.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, Self, TypeVar, Unpack

from .schedule import Cron, Every, Trigger
from .scheduling import Schedule
from .task import Task, TaskOptions

__all__ = [
    "AsyncTaskFunction",
    "HomeQueue",
    "SyncTaskFunction",
    "TaskFunction",
    "default_name",
    "make_task_function",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def default_name(fn: Any) -> str:
    """Return ``module:qualname`` for a function, the default registered name."""
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{qualname}"


class HomeQueue(Protocol):
    """What a task function asks of its queue (``dowork.Queue`` is one).

    A protocol, so that task functions sit below the queue and never import it.
    """

    @property
    def name(self) -> str:
        """The queue's name."""

    def enqueue(self, task: Task[T], *, block: bool = ..., timeout: float | None = ...) -> Task[T]:
        """Enqueue a task."""

    def enqueue_many(self, tasks: Iterable[Task[T]]) -> list[Task[T]]:
        """Enqueue several tasks at once."""

    async def aenqueue(self, task: Task[T], *, timeout: float | None = ...) -> Task[T]:
        """Enqueue from async code."""

    def schedule(self, trigger: Trigger, factory: Callable[[], Task[Any]]) -> Schedule:
        """Start a recurring schedule."""

    def _register(self, task_function: TaskFunction[..., Any]) -> None:
        """Record a task function declared on the queue."""


#: Returns the global queue behind ``@dowork.task`` functions; set by ``dowork._global``
#: (which sits above the queue) when it is imported, as ``import dowork`` does.
global_queue: Callable[[], HomeQueue] | None = None


class TaskFunction(Generic[P, R]):
    """A function bound to a queue (or the global queue) with default task options.

    ``submit`` runs it in the background; calling it (``SyncTaskFunction`` or
    ``AsyncTaskFunction``, by what it wraps) runs the function directly.
    """

    def __init__(
        self,
        fn: Callable[P, Coroutine[Any, Any, R]] | Callable[P, R],
        queue: HomeQueue | None,
        options: TaskOptions,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@task needs a function, not {fn!r}")
        template: Task[Any] = Task(fn, **options)  # validates every option once
        self.fn = fn
        self.queue = queue
        #: The registered name a durable queue stores (``module:qualname`` unless given).
        self.name = name if name is not None else default_name(fn)
        self.explicit_name = name is not None
        self.options = options
        self._template = template
        self._dowork_is_async = template.is_async
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function now, in the caller, without the queue."""
        return self.fn(*args, **kwargs)

    def _queue(self) -> HomeQueue:
        if self.queue is not None:
            return self.queue
        if global_queue is None:  # pragma: no cover - ``import dowork`` sets it
            raise RuntimeError("dowork._global is not imported: import dowork first")
        return global_queue()

    def task(self, *args: P.args, **kwargs: P.kwargs) -> Task[R]:
        """Build (but do not enqueue) a task of this function, with its default options."""
        # The task calls the task function (not the bare function) so it always knows its
        # registered name, even when one function is registered under several names.
        task: Task[R] = Task.__new__(Task)  # (Task._fast, without its frame)
        task._init(self, args, kwargs, self._dowork_is_async, self._template)
        return task

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Task[R]:
        """Enqueue a call on the function's queue and return its handle (waits if full)."""
        return self._queue().enqueue(self.task(*args, **kwargs))

    def submit_nowait(self, *args: P.args, **kwargs: P.kwargs) -> Task[R]:
        """Enqueue a call, raising ``QueueFull`` instead of waiting for room."""
        return self._queue().enqueue(self.task(*args, **kwargs), block=False)

    def map(self, calls: Iterable[tuple[Any, ...]]) -> list[Task[R]]:
        """Enqueue one call per tuple of positional arguments, in one batch.

        ``send.map([("ada",), ("bob",)])`` is ``send.submit("ada")`` and ``send.submit("bob")``
        in a single write to a durable backend.
        """
        make: Callable[..., Task[R]] = self.task
        return self._queue().enqueue_many(make(*args) for args in calls)

    async def asubmit(self, *args: P.args, **kwargs: P.kwargs) -> Task[R]:
        """Enqueue a call from async code; waits for room without blocking the event loop."""
        return await self._queue().aenqueue(self.task(*args, **kwargs))

    def call_later(self, delay: float | timedelta, /, *args: P.args, **kwargs: P.kwargs) -> Task[R]:
        """Enqueue a call to run no earlier than ``delay`` seconds from now."""
        return self._queue().enqueue(self.task(*args, **kwargs).configure(delay=delay))

    def call_at(self, when: datetime | float, /, *args: P.args, **kwargs: P.kwargs) -> Task[R]:
        """Enqueue a call to run no earlier than ``when`` (aware datetime or epoch seconds)."""
        return self._queue().enqueue(self.task(*args, **kwargs).configure(not_before=when))

    def every(self, interval: float | timedelta, /, *args: P.args, **kwargs: P.kwargs) -> Schedule:
        """Run the function every ``interval`` (first run one interval from now)."""
        return self._queue().schedule(Every.of(interval), lambda: self.task(*args, **kwargs))

    def cron(self, expression: str | Cron, /, *args: P.args, **kwargs: P.kwargs) -> Schedule:
        """Run the function at the times a cron expression names (UTC unless a ``Cron`` says)."""
        trigger = expression if isinstance(expression, Cron) else Cron(expression)
        return self._queue().schedule(trigger, lambda: self.task(*args, **kwargs))

    def with_options(self, **options: Unpack[TaskOptions]) -> Self:
        """Return a copy of this task function with some options changed."""
        merged: TaskOptions = {**self.options, **options}
        return type(self)(self.fn, self.queue, merged, self.name if self.explicit_name else None)

    def __repr__(self) -> str:
        where = self.queue.name if self.queue is not None else "global"
        return f"<TaskFunction {self.__qualname__} on {where}>"


class SyncTaskFunction(TaskFunction[P, R]):
    """A task function wrapping a plain function; calling it runs the function inline."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function now, in the caller, without the queue."""
        return self.fn(*args, **kwargs)  # type: ignore[return-value]


class AsyncTaskFunction(TaskFunction[P, R]):
    """A task function wrapping an ``async def``; calling it returns the coroutine."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Return the coroutine of a direct call, without the queue."""
        return self.fn(*args, **kwargs)  # type: ignore[return-value]


def make_task_function(
    fn: Callable[..., Any], queue: HomeQueue | None, options: TaskOptions, name: str | None = None
) -> TaskFunction[..., Any]:
    """Wrap ``fn`` in the sync or async task function class that fits it.

    On a durable queue the function is registered under its name at once, so mistakes (a
    lambda, a duplicate name) are reported where the task is declared.
    """
    from .task import is_async_callable

    if not callable(fn):
        raise TypeError(f"@task needs a function, not {fn!r}")
    cls = AsyncTaskFunction if is_async_callable(fn) else SyncTaskFunction
    task_function = cls(fn, queue, options, name)
    if queue is not None:
        queue._register(task_function)
    return task_function
