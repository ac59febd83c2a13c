"""What a task's state is made of: its status, its progress, and its engine as the task sees it.

The values here know nothing of ``Task``, so every module of the package may use them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from ..clock import Clock


class TaskStatus(StrEnum):
    """Where a task is in its life; the last three are final."""

    PENDING = "pending"  #: enqueued and due, waiting for a free worker
    SCHEDULED = "scheduled"  #: enqueued, waiting for its not-before time
    #: held by a worker (a thread of the lane, a claimed durable lease) but not started yet
    RESERVED = "reserved"
    RUNNING = "running"  #: an attempt is in progress
    RETRYING = "retrying"  #: an attempt failed; waiting out the backoff before the next one
    SUCCEEDED = "succeeded"  #: an attempt returned; the result is available
    FAILED = "failed"  #: the last attempt failed and no further attempt will be made
    CANCELLED = "cancelled"  #: cancelled before it could finish
    DEAD = "dead"  #: dead-lettered: could not run (unknown name, bad payload, crashed workers)

    @property
    def final(self) -> bool:
        """Whether the task has finished (succeeded, failed or cancelled)."""
        return self in _FINAL


_FINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.DEAD})

#: The statuses of a task that has not finished (every status but the final ones): waiting
#: (pending, scheduled, retrying) or held by a worker (reserved, running). A store's record
#: statuses are the same strings (``WAITING + LEASED`` in ``backends._protocol``).
UNFINISHED: tuple[TaskStatus, ...] = tuple(status for status in TaskStatus if not status.final)


class Progress(NamedTuple):
    """How far a running task says it got: a number, an optional message, and when."""

    value: float
    message: str | None
    at: datetime


class HostView(Protocol):
    """The engine holding a task, as ``TaskSpec`` and ``TaskHandle`` use it.

    The part of ``TaskHost`` (``dowork.task.core``) they call, with the task left untyped:
    ``TaskHost`` names ``Task``, which is built on them, so they cannot name it.
    """

    name: str
    clock: Clock

    def register(self, task: Any) -> None:
        """Remember the task by its id (called when its id is first read)."""

    def on_loop(self) -> bool:
        """Whether the caller runs on the engine's event loop thread."""

    @property
    def progress_changed(self) -> Callable[[Any], None]:
        """Tell the hooks (and a store) about the task's progress (any thread)."""

    @property
    def watch(self) -> Callable[[Any], None]:
        """Someone waits for the task's outcome."""

    @property
    def cancel_handle(self) -> Callable[[Any], bool]:
        """Cancel the task from any thread."""

    @property
    def acancel_handle(self) -> Callable[[Any], Coroutine[Any, Any, bool]]:
        """Cancel the task from any event loop."""
