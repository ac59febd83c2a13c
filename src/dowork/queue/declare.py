"""Declaring work: recurring schedules, task functions and chained jobs."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, Unpack, cast, overload

from ..chain import ArgsMap, ChainFailed, ChainLog, Handler, Reentrant, make_job_function
from ..errors import MaxRetriesExceeded, NotRegistered, QueueShuttingDown, UnknownTask
from ..function import (
    AsyncTaskFunction,
    HomeQueue,
    SyncTaskFunction,
    TaskFunction,
    make_task_function,
)
from ..schedule import Cron, Every, Trigger, aligned
from ..scheduling import Schedule
from ..task import Task, TaskOptions
from .base import QueueBase, _make

P = ParamSpec("P")
R = TypeVar("R")


class Declaring(QueueBase):
    """Declaring work: recurring schedules, task functions and chained jobs."""

    def every(
        self,
        interval: float | timedelta,
        fn: Callable[P, object],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Schedule:
        """Run ``fn(*args, **kwargs)`` every ``interval``; the first run is one interval away.

        ``fn`` may be a ``TaskFunction`` (its options apply to every run).
        """
        return self.schedule(Every.of(interval), _factory(fn, args, kwargs))

    def cron(
        self, expression: str | Cron, fn: Callable[P, object], /, *args: P.args, **kwargs: P.kwargs
    ) -> Schedule:
        """Run ``fn(*args, **kwargs)`` at the times of a cron expression (UTC by default).

        Raises:
            ValueError: the expression is not valid cron.
        """
        trigger = expression if isinstance(expression, Cron) else Cron(expression)
        return self.schedule(trigger, _factory(fn, args, kwargs))

    def schedule(self, trigger: Trigger, factory: Callable[[], Task[Any]]) -> Schedule:
        """Start a recurring schedule that enqueues ``factory()`` at each firing of ``trigger``.

        Raises:
            NotRegistered: (durable queues) the task's function is not registered with the
                queue, so no firing could be stored.
        """
        engine = self._engine
        if engine.durable:
            trigger = aligned(trigger)  # every worker must agree on the firing times
        if not engine.accepting:
            raise QueueShuttingDown(f"queue {self.name!r} is shutting down")
        probe = factory()
        if engine.durable and self.registry.name_of(probe.fn) is None:  # (else: every firing)
            raise NotRegistered(
                f"{probe.name} is not a registered task of durable queue {self.name!r}; "
                "declare it with @queue.task at module level and schedule that"
            )
        schedule = Schedule(engine, trigger, factory, probe.name)
        engine.call(schedule._start, engine.clock.now())
        return schedule

    @overload
    def task(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncTaskFunction[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> SyncTaskFunction[P, R]: ...
    @overload
    def task(self, /, *, name: str | None = None, **options: Unpack[TaskOptions]) -> _Decorator: ...
    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        **options: Unpack[TaskOptions],
    ) -> Any:
        """Decorate a function as a typed task of this queue: ``@queue.task(retries=3)``.

        Takes the same options as ``Task``; ``fn.submit(...)`` then enqueues with the
        function's own parameters, checked by mypy.
        """
        if fn is not None:
            return make_task_function(fn, self._home(), options, name)
        return _Decorator(self._home(), options, name)

    def _home(self) -> HomeQueue:
        """The queue as its task functions see it (the parts make a ``Queue``, which is one)."""
        return cast("HomeQueue", self)

    def chain(
        self, name: str, /, *handlers: Handler | Reentrant, **options: Unpack[TaskOptions]
    ) -> TaskFunction[[ArgsMap], ArgsMap]:
        """Register a named job made of handlers that pass an args dict along (gotasks).

        ``job.submit({"k": 1})`` (or ``queue.submit_job(name, args)``) runs the handlers in
        order; the result is the last handler's dict. A failing handler stops the job with
        ``ChainFailed``, whose ``log`` records where it stopped; with ``retries=`` the next
        attempt resumes at that handler with the args it had. Wrap a handler with
        ``dowork.reentrant(h, max_times=3, sleep=0.1)`` to retry just that step.

        Raises:
            ValueError: the name is taken, or no handler is given.
        """
        if name in self._jobs:
            raise ValueError(f"a job named {name!r} is already registered on {self.name!r}")
        fn = make_job_function(name, handlers)
        job = cast(
            TaskFunction[[ArgsMap], ArgsMap], make_task_function(fn, self._home(), options, name)
        )
        self._jobs[name] = job
        return job

    def submit_job(self, name: str, args: Mapping[str, Any] | None = None) -> Task[ArgsMap]:
        """Enqueue the registered job ``name`` with an args dict (gotasks' ``Enqueue``).

        Raises:
            UnknownTask: no job of that name is registered on this queue.
        """
        job = self._jobs.get(name)
        if job is None:
            raise UnknownTask(f"no job named {name!r} on queue {self.name!r}")
        return job.submit(dict(args or {}))

    def chain_log(self, task_id: str) -> ChainLog | None:
        """Return where a failed chained job stopped (handler, args, error, times), or None.

        Works across processes on a durable queue (the log is kept with the task's record).
        """
        engine = self._engine
        local = engine.get(task_id)
        if local is not None and local.done:
            return _local_chain_log(local)
        found: ChainLog | None = engine.source.chain_log(task_id)
        return found


class _Decorator:
    """What ``queue.task(**options)`` returns: applied to a function, gives a TaskFunction."""

    def __init__(
        self, queue: HomeQueue | None, options: TaskOptions, name: str | None = None
    ) -> None:
        Task(_noop, **options)  # validate the options where the decorator is written
        self._queue = queue
        self._options = options
        self._name = name

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncTaskFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> SyncTaskFunction[P, R]: ...
    def __call__(self, fn: Callable[..., Any], /) -> TaskFunction[..., Any]:
        return make_task_function(fn, self._queue, self._options, self._name)


def _factory(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[], Task[Any]]:
    if not callable(fn):
        raise TypeError(f"a schedule needs a callable, not {fn!r}")
    return lambda: _make(fn, args, kwargs)


def _local_chain_log(task: Task[Any]) -> ChainLog | None:
    error = task._error
    while error is not None:
        if isinstance(error, ChainFailed):
            return error.log
        error = error.__cause__ if isinstance(error, MaxRetriesExceeded) else None
    return None


def _noop() -> None:
    return None
