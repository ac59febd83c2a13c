"""``LocalSource``: the in-memory task source, the engine's own behaviour."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import (
    QueueFull,
    StoreLost,
)
from ..group import LocalGroup
from ..task import Task

if TYPE_CHECKING:
    from ..backends.store import Backend
    from ..scheduling import Schedule

if TYPE_CHECKING:
    from .core import Engine


class LocalSource:
    """The in-memory task source: tasks live in this process, as the engine keeps them."""

    durable = False
    backend: Backend | None = None
    lost: StoreLost | None = None  # (memory is never deleted under it)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The engine's own behaviour, bound directly: no extra call on the hot path.
        self.enqueue = engine.core_enqueue
        self.serve = engine.core_serve
        self.launch = engine.core_launch
        self.on_start = engine.core_on_start
        self.lapsed = engine.core_lapsed
        self.settle = engine.core_settle
        self.retry_later = engine.core_retry_later
        self.finish = engine.core_finish
        self.done = engine.core_done
        self.progress_changed = engine.core_progress_changed
        self.watch = engine.core_watch
        self.cancel_handle = engine.core_cancel_handle
        self.acancel_handle = engine.core_acancel_handle
        self.dispatch = engine.core_dispatch
        self.next_due = engine.core_next_due
        self.wait_stopped = engine.core_wait_stopped
        self.has_work = engine.core_has_work
        self.shutdown = engine.core_shutdown
        self.abort = engine.core_abort

    def enqueue_many(self, tasks: list[Task[Any]]) -> None:
        """Enqueue each (waiting for room in a bounded queue); ``Queue`` checked them."""
        put = self.engine.put
        for task in tasks:
            put(task, True, None, checked=True)

    async def aenqueue(self, task: Task[Any], timeout: float | None) -> None:
        """Enqueue, waiting for room in a bounded queue without blocking the event loop.

        ``Queue.aenqueue`` checked the task (``put`` looks again for a shutdown only).
        """
        engine = self.engine
        cap = engine.capacity
        if cap is None or cap.try_acquire():
            engine.put(task, False, None, reserved=cap is not None, checked=True)
            return
        if not await cap.aacquire(timeout):
            raise QueueFull(f"queue {engine.name!r} is full ({cap.maxsize} unfinished tasks)")
        engine.put(task, False, None, reserved=True, checked=True)

    async def aenqueue_many(self, tasks: list[Task[Any]]) -> None:
        """``aenqueue`` each, in order."""
        for task in tasks:
            await self.aenqueue(task, None)

    def enqueue_group(
        self, members: list[Task[Any]], callback: Task[Any], policy: str, check_every: float
    ) -> None:
        """Hold ``callback`` in memory until every member finished (``check_every`` unused)."""
        state = LocalGroup(members, callback, policy)
        callback._group = state
        for member in members:
            member._group = state
        put = self.engine.put  # (``Queue.group`` checked every task)
        put(callback, True, None, checked=True)  # accepted, and held until the members finish
        try:
            for member in members:
                put(member, True, None, checked=True)
        except BaseException:
            callback.cancel()
            raise

    async def aenqueue_group(
        self, members: list[Task[Any]], callback: Task[Any], policy: str, check_every: float
    ) -> None:
        """``enqueue_group``: nothing to wait for in memory but room."""
        self.enqueue_group(members, callback, policy, check_every)

    def fire_schedule(self, schedule: Schedule, planned: float) -> None:
        """Enqueue the schedule's task now, unless its last run is unfinished."""
        schedule.fire_here()

    def lookup(self, task_id: str) -> Task[Any] | None:
        """The task by id, if this process still knows it."""
        return self.engine.get(task_id)

    def chain_log(self, task_id: str) -> Any:
        """Nothing: an in-memory task's chain log is on its handle."""
        return None
