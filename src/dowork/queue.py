"""Queue: the public face of one named task queue, for sync and async callers alike.

Naming convention: every method that may block has an ``a``-prefixed coroutine twin that never
blocks the caller's event loop (``shutdown``/``ashutdown``, ``dispatch``/``adispatch``, ...).
The engine behind both lives in ``dowork._engine``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import datetime, timedelta
from inspect import CO_COROUTINE
from types import FunctionType, TracebackType
from typing import Any, ParamSpec, Self, TypeVar, Unpack, cast, overload

from ._durable import DurableSettings, DurableSource
from ._engine import Engine
from .backends import Backend, open_backend
from .backends._protocol import PRIORITY_AGING
from .chain import ArgsMap, ChainFailed, ChainLog, Handler, Reentrant, make_job_function
from .clock import Clock, FakeClock, SystemClock
from .codec import Codec, JSONCodec
from .dump import DumpLine
from .errors import MaxRetriesExceeded, NotRegistered, QueueShuttingDown, UnknownTask
from .function import AsyncTaskFunction, SyncTaskFunction, TaskFunction, make_task_function
from .group import POLICIES, Group, GroupPolicy
from .hooks import Hooks, LoggingHooks
from .ratelimit import RateLimit
from .registry import Registry
from .retry import DEFAULT_POLICY, RetryPolicy
from .schedule import Cron, Every, Trigger, aligned
from .scheduling import Schedule
from .task import Task, TaskOptions, TaskStatus, is_async_callable

__all__ = ["Queue", "ajoin", "default_concurrency", "join"]

P = ParamSpec("P")
R = TypeVar("R")

_NAME = re.compile(r"[A-Za-z0-9:_]+")


def default_concurrency() -> int:
    """The default number of concurrent attempts: ``min(32, cpu_count + 4)``, as stdlib pools."""
    return min(32, (os.cpu_count() or 1) + 4)


class Queue:
    """A named task queue with a pool of workers, retries, scheduling and a soft shutdown.

    Args:
        name: used in logs and metric labels; letters, digits, ``:`` and ``_`` only.
        concurrency: most attempts running at once (sync ones each take a thread);
            default ``min(32, cpu_count + 4)``.
        maxsize: most unfinished tasks held; ``submit`` then waits for room (``0``: unbounded).
        clock: time source; pass a ``FakeClock`` in tests to move time by hand.
        retry: the default ``RetryPolicy`` of tasks that set no retry options.
        rng: random source for backoff jitter (seed it for repeatable delays).
        hooks: ``Hooks`` instances notified of every task event.
        log: install dowork's ``LoggingHooks`` (retries at INFO, failures at WARNING).
        keep_finished: how many finished tasks stay findable by id with ``get()``.
        priority_aging: seconds of waiting one priority level is worth: a ready task starts
            before newer ones of higher priority once it has waited this long per level
            between them, so no priority starves another for longer than that.
        rate_limit: at most this many task starts per period (``"100/m"``, see
            ``RateLimit.of``), across every worker of a queue with a backend; shared by the
            tasks without a ``rate_limit`` of their own. Starts over it wait, they never fail.
    """

    def __init__(
        self,
        name: str = "default",
        *,
        concurrency: int | None = None,
        maxsize: int = 0,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        hooks: Iterable[Hooks] = (),
        log: bool = True,
        keep_finished: int = 10_000,
        backend: Backend | str | None = None,
        codec: Codec | None = None,
        durable: DurableSettings | None = None,
        priority_aging: float = PRIORITY_AGING,
        rate_limit: RateLimit | str | tuple[int, float] | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"queue name {name!r} must match [A-Za-z0-9:_]+ (it is used as a metric label)"
            )
        self._settings: dict[str, Any] = {
            "concurrency": concurrency,
            "maxsize": maxsize,
            "clock": clock,
            "retry": retry,
            "rng": rng,
            "hooks": tuple(hooks),
            "log": log,
            "keep_finished": keep_finished,
            "backend": backend,
            "codec": codec,
            "durable": durable,
            "priority_aging": priority_aging,
            "rate_limit": rate_limit,
        }
        self._registry = Registry()
        self._jobs: dict[str, TaskFunction[[ArgsMap], ArgsMap]] = {}
        self._engine = self._build(name, **self._settings)

    def _build(
        self,
        name: str,
        *,
        concurrency: int | None,
        maxsize: int,
        clock: Clock | None,
        retry: RetryPolicy | None,
        rng: random.Random | None,
        hooks: Iterable[Hooks],
        log: bool,
        keep_finished: int,
        backend: Backend | str | None,
        codec: Codec | None,
        durable: DurableSettings | None,
        priority_aging: float,
        rate_limit: RateLimit | str | tuple[int, float] | None,
    ) -> Engine:
        """Check the options and build the engine (in memory, or over a backend)."""
        if concurrency is None:
            concurrency = default_concurrency()
        _check_int(concurrency, "concurrency", 1)
        _check_int(maxsize, "maxsize", 0)
        _check_int(keep_finished, "keep_finished", 0)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, not {retry!r}")
        hook_list = list(hooks)
        for hook in hook_list:
            if not isinstance(hook, Hooks):
                raise TypeError(f"hooks must be dowork.Hooks instances, not {hook!r}")
        if log:
            hook_list.insert(0, LoggingHooks())
        options: dict[str, Any] = {
            "concurrency": concurrency,
            "maxsize": maxsize,
            "clock": clock if clock is not None else SystemClock(),
            "retry": retry if retry is not None else DEFAULT_POLICY,
            "rng": rng if rng is not None else random.Random(),
            "hooks": hook_list,
            "keep_finished": keep_finished,
            "priority_aging": _check_aging(priority_aging),
            "rate_limit": None if rate_limit is None else RateLimit.of(rate_limit),
        }
        if backend is None:
            if codec is not None or durable is not None:
                raise ValueError("codec= and durable= only apply to a queue with a backend=")
            return Engine(name, **options)
        if maxsize:
            raise ValueError("maxsize= applies to in-memory queues; a backend holds the tasks")
        for task_function in self._registry.task_functions():
            if not task_function.explicit_name:
                self._registry.add(task_function, False)  # lambdas cannot go durable
        store = open_backend(backend) if isinstance(backend, str) else backend
        codec = codec if codec is not None else JSONCodec()
        settings = durable if durable is not None else DurableSettings()
        owns = isinstance(backend, str)  # built from a URL: closed at shutdown

        def durable_source(engine: Engine) -> DurableSource:
            return DurableSource(
                engine,
                backend=store,
                codec=codec,
                registry=self._registry,
                settings=settings,
                owns_backend=owns,
            )

        return Engine(name, source=durable_source, **options)

    def reconfigure(self, **changes: Any) -> None:
        """Change constructor options (``backend``, ``concurrency``, ``hooks``, ...) before use.

        The ``dowork worker`` command uses it for ``--backend`` and ``--concurrency``; task
        functions already declared on the queue stay registered.

        Raises:
            RuntimeError: the queue was started or already holds tasks.
            TypeError, ValueError: as the constructor.
        """
        engine = self._engine
        if engine.started or engine.loop is not None or len(self) or engine.closed:
            raise RuntimeError(f"queue {self.name!r} is in use; reconfigure it before using it")
        unknown = set(changes) - set(self._settings)
        if unknown:
            raise TypeError(f"unknown queue option(s): {', '.join(sorted(unknown))}")
        settings = self._settings | changes
        self._engine = self._build(self.name, **settings)
        self._settings = settings

    # -- properties ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._engine.name

    @property
    def concurrency(self) -> int:
        """Most attempts running at once."""
        return self._engine.concurrency

    @property
    def maxsize(self) -> int:
        """Most unfinished tasks held (0: unbounded)."""
        cap = self._engine.capacity
        return cap.maxsize if cap is not None else 0

    @property
    def clock(self) -> Clock:
        """The queue's clock."""
        return self._engine.clock

    @property
    def durable(self) -> bool:
        """Whether tasks go through a backend (named tasks only) rather than memory."""
        return self._engine.durable

    @property
    def backend(self) -> Backend | None:
        """The backend holding this queue's tasks, or None for an in-memory queue."""
        return self._engine.source.backend

    @property
    def registry(self) -> Registry:
        """The task functions declared on this queue with ``@queue.task``, by name."""
        return self._registry

    def _register(self, task_function: TaskFunction[..., Any]) -> None:
        """Record a task function declared on this queue, by name.

        Durable queues need the name to run it; in-memory queues use it to restore dumped
        tasks. Only a durable queue refuses functions another process could not find.
        """
        if self._engine.durable:
            self._registry.add(task_function, task_function.explicit_name)
        else:
            with contextlib.suppress(NotRegistered):
                self._registry.add(task_function, task_function.explicit_name)

    @property
    def running(self) -> bool:
        """Whether the queue is processing tasks (started and not stopped)."""
        return self._engine.serving

    @property
    def accepting(self) -> bool:
        """Whether the queue accepts new tasks (False once shutdown began)."""
        return self._engine.accepting

    def __len__(self) -> int:
        """The number of unfinished tasks (waiting, scheduled, retrying or running)."""
        engine = self._engine
        return engine._unfinished + len(engine._inbox)

    def __repr__(self) -> str:
        state = "running" if self.running else ("closed" if self._engine.closed else "idle")
        return f"<Queue {self.name!r} {state} unfinished={len(self)}>"

    # -- submitting ------------------------------------------------------------------------

    @overload
    def submit(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Task[R]: ...
    @overload
    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Task[R]: ...
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Task[Any]:
        """Run ``fn(*args, **kwargs)`` in the background with default options.

        The returned task's options cannot be changed (``TaskFrozen``); build a ``Task`` and
        ``enqueue`` it to set options. Waits for room if the queue is bounded and full.

        Raises:
            QueueShuttingDown: the queue no longer accepts tasks.
            TypeError: ``fn`` is not callable.
        """
        engine = self._engine
        if (
            type(fn) is FunctionType
            and engine.capacity is None
            and engine.accepting
            and not engine.durable
        ):
            task: Task[Any] = Task._fast(
                fn, args, kwargs or _EMPTY, bool(fn.__code__.co_flags & CO_COROUTINE)
            )  # the hot path: a plain function on an unbounded queue
            task._frozen = True
            engine.enqueue(task)
            return task
        return self._put(_make(fn, args, kwargs), True, None)

    @overload
    def submit_nowait(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Task[R]: ...
    @overload
    def submit_nowait(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Task[R]: ...
    def submit_nowait(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Task[Any]:
        """``submit`` that raises ``QueueFull`` instead of waiting when the queue is full."""
        return self._put(_make(fn, args, kwargs), False, None)

    @overload
    async def asubmit(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Task[R]: ...
    @overload
    async def asubmit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Task[R]: ...
    async def asubmit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Task[Any]:
        """``submit`` for async code: waits for room without blocking the event loop."""
        return await self.aenqueue(_make(fn, args, kwargs))

    def enqueue(
        self, task: Task[R], *, block: bool = True, timeout: float | None = None
    ) -> Task[R]:
        """Enqueue a ``Task`` built with options; its options are frozen from now on.

        Args:
            task: the task to run.
            block: wait for room in a full bounded queue (else raise ``QueueFull``).
            timeout: most seconds to wait for room before ``QueueFull``.

        Raises:
            QueueShuttingDown, QueueFull, AlreadyComplete (a finished task), ValueError (a task
            that is already enqueued).
        """
        if not isinstance(task, Task):
            raise TypeError(f"enqueue() takes a dowork.Task; use submit() for {task!r}")
        return self._put(task, block, timeout)

    def enqueue_many(self, tasks: Iterable[Task[R]]) -> list[Task[R]]:
        """Enqueue several tasks at once; on a durable queue in one atomic write.

        Every task is checked (and encoded) before anything is stored, so a bad one means
        none is enqueued. The fast way to load a backlog (one round trip per call).
        """
        batch = list(tasks)
        engine = self._engine
        for task in batch:
            if not isinstance(task, Task):
                raise TypeError(f"enqueue_many() takes dowork.Task objects, not {task!r}")
            engine.check_new(task)
        if len({id(t) for t in batch}) != len(batch):
            raise ValueError("the same task appears twice")
        for task in batch:
            task._frozen = True
        engine.source.enqueue_many(batch)
        return batch

    async def aenqueue_many(self, tasks: Iterable[Task[R]]) -> list[Task[R]]:
        """``enqueue_many`` for async code."""
        batch = list(tasks)
        engine = self._engine
        for task in batch:
            if not isinstance(task, Task):
                raise TypeError(f"aenqueue_many() takes dowork.Task objects, not {task!r}")
            engine.check_new(task)
        if len({id(t) for t in batch}) != len(batch):
            raise ValueError("the same task appears twice")
        for task in batch:
            task._frozen = True
        await engine.source.aenqueue_many(batch)
        return batch

    def group(
        self,
        members: Iterable[Task[Any]],
        then: Task[R],
        *,
        on_failure: GroupPolicy = "fail",
        check_every: float = 60.0,
    ) -> Group[R]:
        """Enqueue ``members`` and hold ``then`` until every one of them has finished.

        ``then`` runs once, with the list of the members' results (in member order) before its
        own arguments. ``on_failure="fail"`` fails it unrun with ``GroupFailed`` if a member
        did not succeed; ``"pass"`` runs it with the member's exception in the list. Members
        may be any tasks, chained jobs included. On a durable queue everything is written in
        one atomic push and the members' results must be kept (``keep_result`` not 0);
        ``check_every`` bounds how late the callback runs if the worker that finished the last
        member died before releasing it.

        Raises:
            ValueError: an unknown ``on_failure``, a task given twice, no members.
        """
        batch, callback = self._group_check(members, then, on_failure, check_every)
        self._engine.source.enqueue_group(batch, callback, on_failure, check_every)
        return Group(batch, callback)

    async def agroup(
        self,
        members: Iterable[Task[Any]],
        then: Task[R],
        *,
        on_failure: GroupPolicy = "fail",
        check_every: float = 60.0,
    ) -> Group[R]:
        """``group`` for async code."""
        batch, callback = self._group_check(members, then, on_failure, check_every)
        await self._engine.source.aenqueue_group(batch, callback, on_failure, check_every)
        return Group(batch, callback)

    def _group_check(
        self, members: Iterable[Task[Any]], then: Task[R], on_failure: str, check_every: float
    ) -> tuple[list[Task[Any]], Task[R]]:
        batch = list(members)
        if on_failure not in POLICIES:
            raise ValueError(f"on_failure must be one of {POLICIES}, not {on_failure!r}")
        if not batch:
            raise ValueError("a group needs at least one member")
        if not check_every > 0:
            raise ValueError(f"check_every must be positive, not {check_every!r}")
        everything = [*batch, then]
        if len({id(t) for t in everything}) != len(everything):
            raise ValueError("the same task appears twice in the group")
        engine = self._engine
        for task in everything:
            if not isinstance(task, Task):
                raise TypeError(f"a group takes dowork.Task objects, not {task!r}")
            if task._idempotency_key is not None:  # a de-duplicated member would never report
                raise ValueError("a group's tasks cannot carry an idempotency_key")
            engine.check_new(task)
        return batch, then

    async def aenqueue(self, task: Task[R], *, timeout: float | None = None) -> Task[R]:
        """``enqueue`` for async code: waits for room without blocking the event loop."""
        if not isinstance(task, Task):
            raise TypeError(f"aenqueue() takes a dowork.Task; use asubmit() for {task!r}")
        engine = self._engine
        engine.check_new(task)
        task._frozen = True
        await engine.source.aenqueue(task, timeout)
        return task

    def _put(
        self, task: Task[R], block: bool, timeout: float | None, reserved: bool = False
    ) -> Task[R]:
        self._engine.put(task, block, timeout, reserved)
        return task

    @overload
    def call_later(
        self,
        delay: float | timedelta,
        fn: Callable[P, Coroutine[Any, Any, R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Task[R]: ...
    @overload
    def call_later(
        self, delay: float | timedelta, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Task[R]: ...
    def call_later(
        self, delay: float | timedelta, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Task[Any]:
        """Run ``fn(*args, **kwargs)`` no earlier than ``delay`` seconds from now."""
        return self._put(_make(fn, args, kwargs).configure(delay=delay), True, None)

    @overload
    def call_at(
        self,
        when: datetime | float,
        fn: Callable[P, Coroutine[Any, Any, R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Task[R]: ...
    @overload
    def call_at(
        self, when: datetime | float, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Task[R]: ...
    def call_at(
        self, when: datetime | float, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Task[Any]:
        """Run ``fn(*args, **kwargs)`` no earlier than ``when`` (aware datetime or epoch s).

        A time in the past runs at once.
        """
        return self._put(_make(fn, args, kwargs).configure(not_before=when), True, None)

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
            return make_task_function(fn, self, options, name)
        return _Decorator(self, options, name)

    # -- chained jobs (gotasks) -------------------------------------------------------------

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
        job = cast(TaskFunction[[ArgsMap], ArgsMap], make_task_function(fn, self, options, name))
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

    # -- looking tasks up ------------------------------------------------------------------

    def get(self, task_id: str) -> Task[Any] | None:
        """Return the task with this id, or None (finished tasks are kept ``keep_finished``).

        On a durable queue the backend is asked too, so a task enqueued or run by another
        process is found; its handle shows the stored status, attempts and outcome.
        """
        return self._engine.source.lookup(task_id)

    def status(self, task_id: str) -> TaskStatus:
        """Return the status of the task with this id.

        Raises:
            UnknownTask: no such task (or it was forgotten after retention).
        """
        task = self.get(task_id)
        if task is None:
            raise UnknownTask(f"no task {task_id!r} in queue {self.name!r}")
        return task.status

    def cancel(self, task_id: str) -> bool:
        """Cancel a task by id (on a durable queue, whichever process holds it).

        Returns False if the task is unknown or already finished.
        """
        task = self.get(task_id)
        return task.cancel() if task is not None else False

    # -- driving ---------------------------------------------------------------------------

    def dispatch(self) -> bool:
        """Attempt every due task, wait for those attempts, and say if unfinished tasks remain.

        Returns True while tasks are due later, retrying, or were enqueued meanwhile. Each due
        task is attempted at most once per call, in enqueue order, up to ``concurrency`` at a
        time. For driving a queue by hand (tests, cron-like scripts); a started queue
        dispatches by itself and raises ``RuntimeError`` here.
        """
        engine = self._engine
        if engine.closed:
            raise RuntimeError(f"queue {self.name!r} is shut down")
        if engine.loop is None:  # unbound: run this pass on a short-lived loop in this thread
            try:
                return asyncio.run(self._dispatch_here())
            finally:
                engine.unbind()
        return engine.run_on_home(engine.dispatch())

    async def _dispatch_here(self) -> bool:
        engine = self._engine
        engine.bind_running()
        return await engine.dispatch()

    async def adispatch(self) -> bool:
        """``dispatch`` for async code (binds the queue to the running loop if unbound)."""
        engine = self._engine
        if engine.closed:
            raise RuntimeError(f"queue {self.name!r} is shut down")
        return await engine.arun_on_home(engine.dispatch())

    def run_until_idle(
        self, *, advance: bool | float | timedelta = False, max_attempts: int | None = 10_000
    ) -> int:
        """Run until no attempt is running and no task is due; return how many attempts ran.

        A queue driven by hand is dispatched again and again, so retries due at once and
        tasks enqueued by tasks run too; a started queue is waited for instead (the count is
        then of the attempts that ended meanwhile, not of those that ended before the call).
        Tasks due later (a backoff, ``call_later``, a schedule's next firing) stay waiting,
        so after the call "nothing else ran" is a plain assertion, with no sleeping.

        With a ``FakeClock``, ``advance`` moves time as well: the clock steps to each next due
        time in turn and what is due there runs. ``advance=True`` goes on while any task
        waits (a schedule alone does not keep it going); ``advance=3600`` or a ``timedelta``
        goes no further than that and leaves the clock there, firing schedules on the way.

        A queue with a backend, driven by hand, is dispatched the same way and steps to the
        store's next due task (schedules fire only on a started worker, as with
        ``dispatch()``); a started one raises ``RuntimeError``, as other workers may share it.

        Raises:
            RuntimeError: more than ``max_attempts`` attempts ran (a task retrying or
                enqueuing itself for ever; None: no bound), the queue is shut down or is a
                started queue with a backend, or this is a started queue's own event loop
                (use ``arun_until_idle``).
            ValueError: ``advance`` without a ``FakeClock``, or a negative duration.
        """
        limit = _check_limit(max_attempts)
        seconds = self._idle_advance(advance)
        engine = self._engine
        if engine.closed:
            raise RuntimeError(f"queue {self.name!r} is shut down")
        if engine.loop is None:  # unbound: run on a short-lived loop in this thread
            try:
                return asyncio.run(self._idle_here(seconds, limit))
            finally:
                engine.unbind()
        return engine.run_on_home(engine.run_until_idle(seconds, limit))

    async def _idle_here(self, seconds: float | None, limit: int | None) -> int:
        engine = self._engine
        engine.bind_running()
        return await engine.run_until_idle(seconds, limit)

    async def arun_until_idle(
        self, *, advance: bool | float | timedelta = False, max_attempts: int | None = 10_000
    ) -> int:
        """``run_until_idle`` for async code (binds the queue to the running loop if unbound)."""
        limit = _check_limit(max_attempts)
        seconds = self._idle_advance(advance)
        engine = self._engine
        if engine.closed:
            raise RuntimeError(f"queue {self.name!r} is shut down")
        return await engine.arun_on_home(engine.run_until_idle(seconds, limit))

    def _idle_advance(self, advance: bool | float | timedelta) -> float | None:
        """``run_until_idle``'s ``advance`` as seconds (``inf``: while tasks wait), or None."""
        if advance is False:
            return None
        if not isinstance(self.clock, FakeClock):
            raise ValueError(
                f"advance= moves a FakeClock; queue {self.name!r} runs on {self.clock!r}"
            )
        if advance is True:
            return math.inf
        if isinstance(advance, timedelta):
            advance = advance.total_seconds()
        if not isinstance(advance, int | float) or not advance >= 0:
            raise ValueError(
                f"advance must be True, False, or a duration of 0 or more, not {advance!r}"
            )
        return float(advance)

    def start(self) -> Self:
        """Start processing in the background (a private loop thread); returns the queue.

        Raises:
            RuntimeError: already started, or shut down.
        """
        engine = self._engine
        engine.ensure_loop()
        engine.call(engine.serve)
        return self

    async def astart(self) -> Self:
        """Start processing on the running event loop (async tasks then run on it)."""
        engine = self._engine
        engine.bind_running()
        await engine.acall(engine.serve)
        return self

    def run(self) -> None:
        """Process tasks in the calling thread until ``stop()``/``shutdown()`` or Ctrl-C.

        Tasks not started when it returns stay queued; ``start()`` or ``run()`` resume them.
        """
        engine = self._engine
        if engine.loop is None:
            try:
                asyncio.run(self.arun())
            finally:
                engine.unbind()
            return
        engine.call(engine.serve)
        try:
            engine.run_on_home(engine.wait_stopped())
        except KeyboardInterrupt:
            engine.call(engine.halt)
            raise
        self._raise_lost()

    def _raise_lost(self) -> None:
        """Raise ``StoreLost`` if the queue stopped because its store was deleted or replaced."""
        lost = getattr(self._engine.source, "lost", None)
        if lost is not None:
            raise lost

    async def arun(self) -> None:
        """Process tasks on the running loop until ``stop()``, ``shutdown()`` or cancelled."""
        engine = self._engine
        engine.bind_running()
        await engine.acall(engine.serve)
        try:
            await engine.arun_on_home(engine.wait_stopped())
        except asyncio.CancelledError:
            await asyncio.shield(engine.acall(engine.halt))
            raise
        self._raise_lost()

    def stop(self) -> None:
        """Stop starting new attempts (running ones finish); queued tasks stay for a restart."""
        engine = self._engine
        engine.call(engine.halt)

    async def astop(self) -> None:
        """``stop`` for async code."""
        engine = self._engine
        await engine.acall(engine.halt)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Refuse new tasks, block until every queued task finished, then stop.

        Tasks waiting out a backoff or a not-before time are waited for too (as in the seed).
        With ``timeout``, tasks still unfinished after that many seconds are cancelled (their
        after-callbacks run) and False is returned; True means everything finished. Calling
        it again returns at once.

        Raises:
            RuntimeError: the queue was never started (drive it with ``dispatch()`` instead),
                or this is the queue's own event loop (use ``ashutdown``).
        """
        engine = self._engine
        if engine.closed:
            return True
        if not engine.started and not engine.durable:
            raise RuntimeError(
                f"queue {self.name!r} was never started; call start() first, or drive it with "
                "dispatch() until it returns False"
            )
        engine.accepting = False
        clean = engine.run_on_home(engine.shutdown(timeout))
        engine.release_thread()
        return clean

    async def ashutdown(self, timeout: float | None = None) -> bool:
        """``shutdown`` for async code: never blocks the caller's event loop."""
        engine = self._engine
        if engine.closed:
            return True
        if not engine.started and not engine.durable:
            raise RuntimeError(f"queue {self.name!r} was never started; call start() first")
        engine.accepting = False
        clean = await engine.arun_on_home(engine.shutdown(timeout))
        if not engine.on_loop():
            await asyncio.to_thread(engine.release_thread)
        return clean

    def abort(self) -> list[DumpLine]:
        """Stop at once (a second Ctrl-C): return the unfinished tasks as dump lines.

        An in-memory queue cancels running async attempts and returns every unfinished task
        (write them with ``dowork.dump.write_dump``); a durable queue hands its claimed tasks
        back to the store and returns nothing. The queue cannot be used afterwards.
        """
        engine = self._engine
        if engine.closed or engine.loop is None:
            engine.accepting = False
            return []
        lines: list[DumpLine] = engine.run_on_home(engine.abort())
        engine.release_thread()
        return lines

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.ashutdown()


class _Decorator:
    """What ``queue.task(**options)`` returns: applied to a function, gives a TaskFunction."""

    def __init__(self, queue: Queue | None, options: TaskOptions, name: str | None = None) -> None:
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


_EMPTY: Mapping[str, Any] = {}


def _check_aging(aging: float) -> float:
    """Return a valid ``priority_aging`` (a positive number of seconds)."""
    if isinstance(aging, bool) or not isinstance(aging, int | float) or not aging > 0:
        raise ValueError(f"priority_aging must be a positive number of seconds, not {aging!r}")
    return float(aging)


def _local_chain_log(task: Task[Any]) -> ChainLog | None:
    error = task._error
    while error is not None:
        if isinstance(error, ChainFailed):
            return error.log
        error = error.__cause__ if isinstance(error, MaxRetriesExceeded) else None
    return None


def _noop() -> None:
    return None


def _make(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Task[Any]:
    if isinstance(fn, TaskFunction):
        return fn.task(*args, **kwargs)
    if not callable(fn):
        raise TypeError(f"submit() needs a callable, not {fn!r}")
    return Task._fast(fn, args, kwargs or _EMPTY, is_async_callable(fn))


def _factory(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[], Task[Any]]:
    if not callable(fn):
        raise TypeError(f"a schedule needs a callable, not {fn!r}")
    return lambda: _make(fn, args, kwargs)


def _check_limit(max_attempts: int | None) -> int | None:
    if max_attempts is not None:
        _check_int(max_attempts, "max_attempts", 1)
    return max_attempts


def _check_int(value: object, what: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")


def join(*queues: Queue, timeout: float | None = None) -> bool:
    """Shut several queues down in parallel; return True if all drained within ``timeout``."""
    results: list[bool] = [False] * len(queues)
    errors: list[BaseException] = []

    def one(i: int, queue: Queue) -> None:
        try:
            results[i] = queue.shutdown(timeout)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=one, args=(i, q), name=f"dowork-join-{q.name}")
        for i, q in enumerate(queues)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return all(results)


async def ajoin(*queues: Queue, timeout: float | None = None) -> bool:
    """``join`` for async code."""
    results = await asyncio.gather(*(q.ashutdown(timeout) for q in queues))
    return all(results)
