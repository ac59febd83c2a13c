"""A queue's construction, settings and properties, shared by its parts."""

from __future__ import annotations

import contextlib
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from ..backends import Backend, open_backend
from ..backends._protocol import PRIORITY_AGING
from ..chain import ArgsMap
from ..clock import Clock, SystemClock
from ..codec import Codec, JSONCodec
from ..durable import DurableSettings, DurableSource
from ..engine import Engine, LocalSource
from ..errors import NotRegistered
from ..function import TaskFunction
from ..hooks import Hooks, LoggingHooks
from ..ratelimit import RateLimit
from ..registry import Registry
from ..retry import DEFAULT_POLICY, RetryPolicy
from ..task import Task, is_async_callable

P = ParamSpec("P")
R = TypeVar("R")

_NAME = re.compile(r"[A-Za-z0-9:_]+")


def default_concurrency() -> int:
    """The default number of concurrent attempts: ``min(32, cpu_count + 4)``, as stdlib pools."""
    return min(32, (os.cpu_count() or 1) + 4)


class QueueBase:
    """A queue's construction and settings, shared by its parts (``Queue`` documents them)."""

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
            return Engine(name, source=LocalSource, **options)
        if maxsize:
            raise ValueError("maxsize= applies to in-memory queues; a backend holds the tasks")
        return self._durable_engine(name, backend, codec, durable, options)

    def _durable_engine(
        self,
        name: str,
        backend: Backend | str,
        codec: Codec | None,
        durable: DurableSettings | None,
        options: dict[str, Any],
    ) -> Engine:
        """An engine whose task source is a store (``backend``: an object or a URL)."""
        for task_function in self._registry.task_functions():
            if not task_function.explicit_name:
                self._registry.add(task_function, False)  # lambdas cannot go durable
        store = open_backend(backend) if isinstance(backend, str) else backend
        encoding = codec if codec is not None else JSONCodec()
        settings = durable if durable is not None else DurableSettings()
        owns = isinstance(backend, str)  # built from a URL: closed at shutdown

        def durable_source(engine: Engine) -> DurableSource:
            return DurableSource(
                engine,
                backend=store,
                codec=encoding,
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


def _check_aging(aging: float) -> float:
    """Return a valid ``priority_aging`` (a positive number of seconds)."""
    if isinstance(aging, bool) or not isinstance(aging, int | float) or not aging > 0:
        raise ValueError(f"priority_aging must be a positive number of seconds, not {aging!r}")
    return float(aging)


def _check_int(value: object, what: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")


_EMPTY: Mapping[str, Any] = {}


def _make(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Task[Any]:
    if isinstance(fn, TaskFunction):
        return fn.task(*args, **kwargs)
    if not callable(fn):
        raise TypeError(f"submit() needs a callable, not {fn!r}")
    return Task._fast(fn, args, kwargs or _EMPTY, is_async_callable(fn))
