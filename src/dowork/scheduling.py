"""Recurring schedules: a handle per ``every()``/``cron()`` call, enqueuing a task per firing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .schedule import Trigger
from .task import Task, TaskHost

if TYPE_CHECKING:
    from ._capacity import Capacity

T = TypeVar("T")


class ScheduleHost(TaskHost, Protocol):
    """What a schedule asks of the engine of its queue (``dowork.engine.Engine`` is one).

    A protocol, so that schedules sit below the engine and never import it.
    """

    capacity: Capacity | None

    def add_schedule(self, schedule: Schedule, first: float) -> None:
        """Start the schedule, first firing at ``first`` (on the loop)."""

    def reschedule(self, schedule: Schedule, when: float) -> None:
        """Put the schedule back for its next firing (on the loop)."""

    def drop_schedule(self, schedule: Schedule) -> None:
        """Forget a cancelled schedule."""

    def fire_schedule(self, schedule: Schedule, planned: float) -> None:
        """Enqueue one firing's task (on the loop), as the queue's task source does it."""

    def accept(self, task: Task[Any]) -> None:
        """Take a task on the loop, as enqueued from there."""

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the loop from any thread and return its result."""

    async def acall(self, fn: Callable[..., T], *args: Any) -> T:
        """``call`` from any event loop."""


__all__ = ["Schedule"]


class Schedule:
    """A recurring schedule on a queue: at each firing it enqueues a fresh task.

    A firing is skipped (and counted in ``skipped``) while the previous run is still unfinished,
    so a slow job never piles up copies of itself; it is also skipped when a bounded queue is
    full. Shutting the queue down stops every schedule.
    """

    def __init__(
        self,
        engine: ScheduleHost,
        trigger: Trigger,
        factory: Callable[[], Task[Any]],
        name: str,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.name = name
        self.trigger = trigger
        self._engine = engine
        self._factory = factory
        self.active = True
        self.runs = 0
        self.skipped = 0
        #: Durable queues: firings another worker process enqueued first.
        self.fired_elsewhere = 0
        self.last_task: Task[Any] | None = None
        self._next: float | None = None

    @property
    def next_run(self) -> datetime | None:
        """When the schedule fires next, or None once cancelled."""
        if not self.active or self._next is None:
            return None
        return datetime.fromtimestamp(self._next, UTC)

    def _start(self, now: float) -> None:
        self._next = self.trigger.next_after(now)
        self._engine.add_schedule(self, self._next)

    def _fire(self, now: float) -> None:
        """Enqueue this firing's task and plan the next firing (on the queue's loop)."""
        if not self.active:
            return
        engine = self._engine
        planned = self._next if self._next is not None else now
        engine.fire_schedule(self, planned)
        following = self.trigger.next_after(max(now, planned))
        self._next = following
        engine.reschedule(self, following)

    def fire_here(self) -> None:
        """Put this firing's task on the in-memory queue, unless the last one is unfinished.

        A bounded queue that is full skips the firing too (counted in ``skipped``).
        """
        engine = self._engine
        last = self.last_task
        if (last is not None and not last.done) or (
            engine.capacity is not None and not engine.capacity.try_acquire()
        ):
            self.skipped += 1
            return
        task = self._factory()
        task._frozen = True
        task._engine = engine
        engine.accept(task)
        self.runs += 1
        self.last_task = task

    def cancel(self) -> bool:
        """Stop the schedule; the task of a run already started is not affected."""
        if not self.active:
            return False
        self._engine.call(self._deactivate)
        return True

    async def acancel(self) -> bool:
        """``cancel`` for async code: never blocks the caller's event loop."""
        if not self.active:
            return False
        await self._engine.acall(self._deactivate)
        return True

    def _deactivate(self) -> None:
        self.active = False
        self._engine.drop_schedule(self)

    def __repr__(self) -> str:
        state = f"next={self.next_run.isoformat()}" if self.next_run else "cancelled"
        return f"<Schedule {self.name} {self.trigger!r} {state} runs={self.runs}>"
