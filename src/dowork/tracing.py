"""OpenTelemetry tracing built on hooks: enqueue, each attempt and the outcome in one trace.

Install the extra (``pip install 'dowork[otel]'``), configure OpenTelemetry as usual, and pass
``TracingHooks()`` to every queue, in the producer and in the workers::

    queue = dowork.Queue("jobs", backend="sqlite:///jobs.db", hooks=[TracingHooks()])

Enqueueing opens a producer span (a child of whatever span is current, such as the web request
that submitted the task) and writes its context into ``task.headers`` (W3C ``traceparent``),
which a durable queue stores with the task. The worker that runs it opens one consumer span per
attempt under that context, so the request, the enqueue and every attempt on every machine
form one trace. An attempt span records the exception of a failed attempt and ends with the
decision taken after it: ``dowork.outcome`` is ``retry``, ``succeeded``, ``failed``,
``cancelled`` or ``dead``.
"""

from __future__ import annotations

import weakref
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from .hooks import Hooks
from .task import Task

__all__ = ["TracingHooks"]

_SYSTEM = "dowork"


class TracingHooks(Hooks):
    """Hooks that emit OpenTelemetry spans; see the module docstring.

    Args:
        tracer_provider: where spans go; the global provider when None.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        from . import __version__

        self._tracer = trace.get_tracer("dowork", __version__, tracer_provider=tracer_provider)
        # The open span of each task's running attempt; weak so abandoned tasks free it.
        self._attempts: weakref.WeakKeyDictionary[Task[Any], Span] = weakref.WeakKeyDictionary()

    @staticmethod
    def _attributes(task: Task[Any]) -> dict[str, str | int]:
        attributes: dict[str, str | int] = {
            "messaging.system": _SYSTEM,
            "messaging.destination.name": task.queue_name or "",
            "dowork.task.name": task.name,
        }
        if task._id is not None:
            attributes["messaging.message.id"] = task._id
        return attributes

    def before_enqueue(self, task: Task[Any]) -> None:
        """Open and close the producer span, and put its context into the task's headers."""
        with self._tracer.start_as_current_span(
            f"enqueue {task.name}", kind=SpanKind.PRODUCER, attributes=self._attributes(task)
        ):
            propagate.inject(task.headers)

    def before_attempt(self, task: Task[Any]) -> None:
        """Open a consumer span for the attempt, under the context the task carries."""
        parent = propagate.extract(task._headers) if task._headers else None
        attributes = self._attributes(task)
        attributes["dowork.attempt"] = task.attempts
        self._attempts[task] = self._tracer.start_span(
            f"run {task.name}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )

    def after_attempt(self, task: Task[Any], error: BaseException | None, duration: float) -> None:
        """Record a failed attempt's exception; the span stays open for the decision."""
        span = self._attempts.get(task)
        if span is not None and error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))

    def on_retry(self, task: Task[Any], error: BaseException, delay: float) -> None:
        """End the attempt's span: the task will run again after ``delay``."""
        self._end(task, "retry", {"dowork.retry.delay": delay})

    def on_success(self, task: Task[Any]) -> None:
        """End the last attempt's span with the success."""
        self._end(task, "succeeded", {})

    def on_failure(self, task: Task[Any], error: BaseException) -> None:
        """End the last attempt's span (or record a task that never ran) with the failure."""
        span = self._attempts.get(task)
        if span is None:  # cancelled before running, or dead-lettered: one span says so
            parent = propagate.extract(task._headers) if task._headers else None
            span = self._tracer.start_span(
                f"{task.status.value} {task.name}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=self._attributes(task),
            )
            span.record_exception(error)
            self._attempts[task] = span
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        self._end(task, task.status.value, {})

    def _end(self, task: Task[Any], outcome: str, extra: dict[str, float]) -> None:
        span = self._attempts.pop(task, None)
        if span is None:
            return
        span.set_attribute("dowork.outcome", outcome)
        for key, value in extra.items():
            span.set_attribute(key, value)
        span.end()
