"""Chained jobs (gotasks): a named job is a list of handlers that pass an args dict along.

Each handler receives the args dict and returns the dict for the next one. A failing handler
stops the chain; the job's ``ChainLog`` records which handler it reached, the args at that
point, the error and the timestamps. A handler wrapped with ``reentrant()`` is tried up to
``max_times`` with a pause between tries before the chain fails. When the job itself is
retried (``retries=``), the next attempt resumes at the failed handler with the args it had.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import DoNotRetry, DoWorkError
from .task import _current, is_async_callable

__all__ = ["ArgsMap", "ChainFailed", "ChainLog", "ChainRunner", "Reentrant", "StepLog", "reentrant"]

#: The dict a chain's handlers pass along (gotasks' ArgsMap).
ArgsMap = dict[str, Any]
Handler = Callable[[ArgsMap], ArgsMap] | Callable[[ArgsMap], Awaitable[ArgsMap]]


@dataclass(frozen=True, slots=True)
class Reentrant:
    """A handler that may be called again when it fails (gotasks' ``Reentrant``)."""

    handler: Handler
    max_times: int = 3
    sleep: float = 0.1

    def __post_init__(self) -> None:
        if not callable(self.handler):
            raise TypeError(f"a chain handler must be callable, not {self.handler!r}")
        if isinstance(self.max_times, bool) or not isinstance(self.max_times, int):
            raise TypeError("max_times must be an int")
        if self.max_times < 1:
            raise ValueError("max_times must be at least 1 (the number of calls in total)")
        if self.sleep < 0:
            raise ValueError("sleep must not be negative")


def reentrant(handler: Handler, *, max_times: int = 3, sleep: float = 0.1) -> Reentrant:
    """Wrap a handler so that a failure is tried again before the chain fails.

    At most ``max_times`` calls in total, ``sleep`` seconds between them (not after the last);
    each try gets the step's input. gotasks' ``WithMaxTimes`` and ``WithSleepyMS``, with the
    sleep in real seconds.
    """
    return Reentrant(handler, max_times, sleep)


@dataclass(slots=True)
class StepLog:
    """What happened at one handler of a chain."""

    index: int
    handler: str
    started_at: float
    finished_at: float | None = None
    tries: int = 0
    error: str | None = None


@dataclass(slots=True)
class ChainLog:
    """Where a chain got to: the handler reached, the args there, the error and timestamps."""

    job: str
    reached: int
    handler: str
    args: ArgsMap
    error: str | None
    started_at: float
    finished_at: float | None
    steps: list[StepLog] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the log as plain data (JSON-ready when the args are)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChainLog:
        """Rebuild a log from ``to_dict()`` data."""
        steps = [StepLog(**step) for step in data.get("steps", [])]
        fields = {k: v for k, v in data.items() if k != "steps"}
        return cls(**fields, steps=steps)


class ChainFailed(DoWorkError):
    """A chain stopped at a failing handler; ``log`` says where and with which args.

    ``resume`` holds the arguments a retry of the job starts from: the failed handler's index
    and its input. The step's own exception is the ``__cause__``: retries are decided on it
    (a ``DoNotRetry`` ends the job, ``should_retry`` is called with it).
    """

    def __init__(self, log: ChainLog, cause: BaseException) -> None:
        super().__init__(
            f"job {log.job!r} failed at handler {log.reached} ({log.handler}): {log.error}"
        )
        self.log = log
        self.__cause__ = cause
        self.resume: tuple[tuple[Any, ...], dict[str, Any]] = (
            (log.args,),
            {"_dowork_start": log.reached},
        )


def _handler_name(handler: Any) -> str:
    return getattr(handler, "__qualname__", None) or type(handler).__qualname__


def _now() -> float:
    task = _current.get()
    engine = task._engine if task is not None else None
    return engine.clock.now() if engine is not None else time.time()


def _checked(value: object, name: str) -> ArgsMap:
    if not isinstance(value, dict):
        raise TypeError(f"chain handler {name} must return a dict, not {type(value).__name__}")
    return value


class ChainRunner:
    """The function behind a chained job: runs the handlers in order (sync or async)."""

    def __init__(self, job: str, handlers: tuple[Handler | Reentrant, ...]) -> None:
        if not handlers:
            raise ValueError(f"job {job!r} needs at least one handler")
        self.job = job
        self.steps: list[Reentrant] = []
        for handler in handlers:
            step = handler if isinstance(handler, Reentrant) else Reentrant(handler, 1, 0.0)
            self.steps.append(step)
        self.is_async = any(is_async_callable(s.handler) for s in self.steps)
        self.__qualname__ = self.__name__ = f"job:{job}"
        self.__module__ = "dowork.chain"

    def _log(self, args: ArgsMap, start: int) -> ChainLog:
        step = self.steps[start]
        return ChainLog(self.job, start, _handler_name(step.handler), args, None, _now(), None)

    def run_sync(self, args: ArgsMap, start: int = 0) -> ArgsMap:
        """Run the chain in this thread (all handlers are plain functions)."""
        log = self._log(dict(args), start)
        current = dict(args)
        for index in range(start, len(self.steps)):
            step = self.steps[index]
            entry = self._enter(log, index, current)
            for attempt in range(1, step.max_times + 1):
                entry.tries = attempt
                try:
                    current = _checked(step.handler(dict(log.args)), entry.handler)
                    break
                except Exception as exc:
                    if attempt == step.max_times or isinstance(exc, DoNotRetry):
                        raise self._failed(log, entry, exc) from exc
                    time.sleep(step.sleep)
            entry.finished_at = _now()
        log.finished_at = _now()
        return current

    async def run_async(self, args: ArgsMap, start: int = 0) -> ArgsMap:
        """Run the chain on the event loop (plain handlers go to a thread)."""
        log = self._log(dict(args), start)
        current = dict(args)
        for index in range(start, len(self.steps)):
            step = self.steps[index]
            entry = self._enter(log, index, current)
            for attempt in range(1, step.max_times + 1):
                entry.tries = attempt
                try:
                    if is_async_callable(step.handler):
                        out = await step.handler(dict(log.args))  # type: ignore[misc]
                    else:
                        out = await asyncio.to_thread(step.handler, dict(log.args))
                        if inspect.isawaitable(out):
                            out = await out
                    current = _checked(out, entry.handler)
                    break
                except Exception as exc:
                    if attempt == step.max_times or isinstance(exc, DoNotRetry):
                        raise self._failed(log, entry, exc) from exc
                    await asyncio.sleep(step.sleep)
            entry.finished_at = _now()
        log.finished_at = _now()
        return current

    def _enter(self, log: ChainLog, index: int, current: ArgsMap) -> StepLog:
        step = self.steps[index]
        log.reached = index
        log.handler = _handler_name(step.handler)
        log.args = dict(current)
        entry = StepLog(index, log.handler, _now())
        log.steps.append(entry)
        return entry

    def _failed(self, log: ChainLog, entry: StepLog, exc: Exception) -> ChainFailed:
        entry.finished_at = log.finished_at = _now()
        entry.error = log.error = f"{type(exc).__qualname__}: {exc}"
        return ChainFailed(log, exc)


def make_job_function(job: str, handlers: tuple[Handler | Reentrant, ...]) -> Callable[..., Any]:
    """Return a plain or async function ``(args) -> dict`` running the chain.

    A retry passes ``_dowork_start`` (the failed handler's index) to resume there.
    """
    runner = ChainRunner(job, handlers)
    if runner.is_async:

        async def run_async(args: ArgsMap, _dowork_start: int = 0) -> ArgsMap:
            return await runner.run_async(args, _dowork_start)

        fn: Callable[..., Any] = run_async
    else:

        def run_sync(args: ArgsMap, _dowork_start: int = 0) -> ArgsMap:
            return runner.run_sync(args, _dowork_start)

        fn = run_sync
    fn.__qualname__ = fn.__name__ = f"job:{job}"
    fn.__module__ = "dowork.chain"
    fn.chain = runner  # type: ignore[attr-defined]
    return fn
