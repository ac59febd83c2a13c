"""``Queue``, the class users hold: its submitting methods are here, the rest in its parts.

The parts: ``base`` (construction and settings), ``declare`` (schedules, task functions,
chained jobs) and ``drive`` (lookups, dispatch, run, shutdown).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime, timedelta
from inspect import CO_COROUTINE
from types import FunctionType
from typing import Any, ParamSpec, TypeVar, overload

from ..group import POLICIES, Group, GroupPolicy
from ..task import Task
from .base import _EMPTY, _make
from .declare import Declaring
from .drive import Driving

P = ParamSpec("P")
R = TypeVar("R")


class Queue(Declaring, Driving):
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
        engine = self._engine
        if (
            type(fn) is FunctionType
            and engine.capacity is None
            and engine.accepting
            and not engine.durable
        ):  # submit()'s hot path: nothing to wait for
            task: Task[Any] = Task._fast(
                fn, args, kwargs or _EMPTY, bool(fn.__code__.co_flags & CO_COROUTINE)
            )
            task._frozen = True
            engine.enqueue(task)
            return task
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
