"""Hooks: the one extension point for watching tasks (logging, metrics, tracing, auditing).

Subclass ``Hooks``, override the methods you need and pass instances to ``Queue(hooks=[...])``.
Every method but ``before_enqueue`` runs on the queue's event loop, so it must be quick and
must not block. An exception raised by a hook is logged with the hook's name and never changes
a task's outcome. Only overridden methods are called, so an unused event costs nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from .task import Progress, Task

__all__ = ["Hooks", "LoggingHooks"]


class Hooks:
    """Base class with a no-op method per event; override the ones you need."""

    def before_enqueue(self, task: Task[Any]) -> None:
        """A task is about to be stored; runs in the submitting thread, before encoding.

        The one hook that runs off the queue's loop: it may add ``task.headers`` (which
        travel with the task to the process that runs it), e.g. a trace context.
        """

    def on_enqueue(self, task: Task[Any]) -> None:
        """A task was accepted by the queue."""

    def before_attempt(self, task: Task[Any]) -> None:
        """An attempt starts (``task.attempts`` already counts it, ``task.status`` is running).

        A plain function that waited for a free thread (``reserved``) starts when a thread
        takes it; this hook then runs on the loop a moment after the function began.
        """

    def after_attempt(self, task: Task[Any], error: BaseException | None, duration: float) -> None:
        """An attempt ended after ``duration`` seconds, with ``error`` or None on success."""

    def on_retry(self, task: Task[Any], error: BaseException, delay: float) -> None:
        """An attempt failed and the task will run again in ``delay`` seconds."""

    def on_progress(self, task: Task[Any], progress: Progress) -> None:
        """The running task reported ``progress`` (``task.progress`` may be newer by now)."""

    def on_success(self, task: Task[Any]) -> None:
        """The task finished successfully."""

    def on_failure(self, task: Task[Any], error: BaseException) -> None:
        """The task finished unsuccessfully (failed or cancelled) with ``error``."""

    def on_buried(self, queue: str, task_id: str, reason: str) -> None:
        """A durable queue's record was dead-lettered unrun: it could not be read.

        Once per record, in one worker: the one that claimed it and could not decode it
        (``reason`` ``malformed``, ``undecodable`` or ``bad_signature``; ``on_failure`` sees
        those too, through a stand-in task), or the one whose call to the store found a record
        the store could not read (written by another program or changed by hand: a claim, a
        settlement or the reaper dead-letters it ``malformed``; only this hook sees those).
        """


HOOK_EVENTS = (
    "before_enqueue",
    "on_enqueue",
    "before_attempt",
    "after_attempt",
    "on_retry",
    "on_progress",
    "on_success",
    "on_failure",
    "on_buried",
)


class LoggingHooks(Hooks):
    """dowork's own logging, built on hooks.

    Retries at INFO, final failures at WARNING, every attempt's outcome and duration at DEBUG.
    Records carry ``task_id``, ``task_name``, ``queue``, ``attempt`` and, where they apply,
    ``delay``, ``duration`` and ``outcome`` as extra fields for structured log handlers.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("dowork")

    def _extra(self, task: Task[Any]) -> dict[str, Any]:
        return {
            "task_id": task.id,
            "task_name": task.name,
            "queue": task.queue_name,
            "attempt": task.attempts,
        }

    def after_attempt(self, task: Task[Any], error: BaseException | None, duration: float) -> None:
        """Log each attempt's outcome and duration at DEBUG."""
        logger = self.logger
        if logger.isEnabledFor(logging.DEBUG):
            outcome = "ok" if error is None else type(error).__name__
            extra = self._extra(task) | {"duration": round(duration, 6), "outcome": outcome}
            logger.debug(
                "%s [%s]: attempt %d %s in %.3fs",
                task.name,
                task.queue_name,
                task.attempts,
                outcome,
                duration,
                extra=extra,
            )

    def on_retry(self, task: Task[Any], error: BaseException, delay: float) -> None:
        """Log the seed's "Attempt i/max failed (err), retrying in d" line."""
        logger = self.logger
        if logger.isEnabledFor(logging.INFO):
            retries = task.policy.retries
            budget = "inf" if retries == -1 else str(retries + 1)
            extra = self._extra(task) | {"delay": delay}
            logger.info(
                "%s [%s]: attempt %d/%s failed (%r), retrying in %.3gs",
                task.name,
                task.queue_name,
                task.attempts,
                budget,
                error,
                delay,
                extra=extra,
            )

    def on_failure(self, task: Task[Any], error: BaseException) -> None:
        """Log a task that ended without success."""
        logger = self.logger
        if logger.isEnabledFor(logging.WARNING):
            logger.warning(
                "%s [%s]: %s after %d attempt(s): %r",
                task.name,
                task.queue_name,
                task.status.value,
                task.attempts,
                error,
                extra=self._extra(task),
            )
