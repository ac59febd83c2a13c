"""Accepting tasks: checks, the cross-thread inbox, ids, cancellation and schedules."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import TYPE_CHECKING, Any

from ..backends.flow import rank
from ..errors import (
    AlreadyComplete,
    QueueFull,
    QueueShuttingDown,
    TaskCancelled,
)
from ..task import Task, TaskStatus

if TYPE_CHECKING:
    from ..scheduling import Schedule

from .home import HomeLoop
from .state import (
    _CANCEL,
    _CANCELLED,
    _PENDING,
    _RESERVED,
    _SCHEDULED,
    _WAITING,
)


class Intake(HomeLoop):
    """Accepting tasks: checks, the cross-thread inbox, ids, cancellation and schedules."""

    def put(
        self,
        task: Task[Any],
        block: bool,
        timeout: float | None,
        reserved: bool = False,
        checked: bool = False,
    ) -> None:
        """Check, freeze and enqueue a task, reserving room in a bounded queue first.

        ``checked``: the caller ran ``check_new`` on the task already (``Queue.aenqueue``,
        ``enqueue_many``, ``group``), so only a shutdown begun since is looked for again.

        Raises:
            QueueFull: no room (``block`` False, on the loop, or ``timeout`` passed).
        """
        if not checked:
            self.check_new(task)
        elif not self.accepting:
            raise _shutting_down(self.name)
        task._frozen = True
        cap = self.capacity
        if (
            cap is not None
            and not reserved
            and not cap.try_acquire()
            and (not block or self.on_loop() or not cap.acquire(timeout))
        ):
            raise QueueFull(f"queue {self.name!r} is full ({cap.maxsize} unfinished tasks)")
        try:
            self.enqueue(task)
        except BaseException:
            if cap is not None:
                cap.release()
            raise

    def check_new(self, task: Task[Any]) -> None:
        """Refuse a task that is finished, already enqueued, or arrives after shutdown."""
        if not self.accepting:
            raise _shutting_down(self.name)
        if task._engine is not None:
            if task._status.final:
                raise AlreadyComplete(f"{task!r} already finished; tasks run to completion once")
            raise ValueError(f"{task!r} is already enqueued")
        if task._idempotency_key is not None and not self.durable:
            what = "unique_key" if task._unique else "idempotency_key"
            raise ValueError(
                f"{what} needs a durable queue (backend=...): an in-memory queue "
                "keeps no record of past enqueues"
            )
        if task._concurrency_key is not None and not self.durable:
            raise ValueError(
                "concurrency_key needs a queue with a backend (backend='memory://' keeps it "
                "in this process): the plain in-process queue does not take turns by key"
            )

    def core_enqueue(self, task: Task[Any]) -> None:
        """Hand a frozen task to the queue from any thread (capacity already reserved)."""
        if self._h_submit:
            self._call_hooks(self._h_submit, task)
        if task._overrides is not None:
            self._stamp_expiry(task)  # counted from now, not from when the loop accepts it
        if task._delay is not None or task._not_before is not None:
            self._stamp_due(task)  # the delay too: from the call, not from the next dispatch
        if task._priority or self._prioritized:  # aging counts from now, too
            task._rank = rank(self.clock.now(), task._priority, self.priority_aging)
        task._engine = self
        if threading.get_ident() == self.loop_thread_id:
            self._accept(task)
            self._pump()
            return
        self._inbox.append(task)
        if not self._inbox_wake:
            loop = self.loop
            if loop is not None:
                self._inbox_wake = True
                try:
                    loop.call_soon_threadsafe(self._drain_inbox)
                except RuntimeError:  # the home loop is gone: the queue was shut down
                    self._inbox_wake = False
                    raise QueueShuttingDown(f"queue {self.name!r} is shut down") from None

    def _stamp_expiry(self, task: Task[Any]) -> None:
        """Fix a task's ``expires`` option to an absolute time, once, when it is enqueued."""
        options = task._overrides
        if task._expires_at is None and options is not None:
            task._expires_at = options.expiry(self.clock.now())

    def _stamp_due(self, task: Task[Any]) -> None:
        """Fix when a delayed task is due, at the call: it reads ``scheduled`` from now on."""
        now = self.clock.now()
        when = task._not_before
        if task._delay is not None:
            when = max(when or now, now + task._delay)
        if when is not None and when > now:
            task._status = _SCHEDULED
            task._next_attempt = when

    def _accept_inbox(self) -> None:
        """Accept every task other threads handed over (on the loop)."""
        self._inbox_wake = False
        inbox = self._inbox
        while inbox:
            self._accept(inbox.popleft())

    def _drain_inbox(self) -> None:
        self._accept_inbox()
        self._pump()

    def _accept(self, task: Task[Any]) -> None:
        task._seq = next(self._seq)
        if task._priority and not self._prioritized:
            self._use_priorities()
        if task._rate_limit is not None:
            self._limited = True
        overrides = task._overrides
        if overrides is None:
            task._policy = self.default_policy
        else:
            cached = self._policy_cache.get(id(overrides))
            if cached is not None and cached[0] is overrides:
                task._policy = cached[1]
            else:
                task._policy = overrides.retry_policy(self.default_policy)
                self._policy_cache[id(overrides)] = (overrides, task._policy)
            self._stamp_expiry(task)  # tasks a schedule fires come here without enqueue()
        self._unfinished += 1
        if task._id is not None:
            self._by_id[task._id] = task
        if self._h_enqueue:
            self._call_hooks(self._h_enqueue, task)
        group = task._group
        if group is not None and group.callback is task:
            task._status = TaskStatus.SCHEDULED  # held until the group's members finished
            return
        when = task._not_before
        if when is None and task._delay is None:
            self._ready.append(task)
            return
        now = self.clock.now()
        if task._status is _SCHEDULED and task._next_attempt is not None:
            when = task._next_attempt  # stamped by enqueue(), at the call
        elif task._delay is not None:
            when = max(when or now, now + task._delay)
        if when is None or when <= now:
            task._status = _PENDING
            task._next_attempt = None
            self._ready.append(task)
        else:
            task._status = _SCHEDULED
            task._next_attempt = when
            task._rank = math.nan  # it ages from when it is due
            self._push(when, task)

    def accept(self, task: Task[Any]) -> None:
        """Take a task on the loop (a schedule's firing): as enqueued, without the inbox."""
        self._accept(task)

    def fire_schedule(self, schedule: Schedule, planned: float) -> None:
        """A schedule is due (on the loop): its firing goes through the task source."""
        self.source.fire_schedule(schedule, planned)

    def register(self, task: Task[Any]) -> None:
        """Remember a task by id (called when its id is first read)."""
        assert task._id is not None
        self._by_id[task._id] = task
        if task._finished and task._status.final:
            self._remember_finished(task._id)

    def get(self, task_id: str) -> Task[Any] | None:
        """Return the task with this id, if known."""
        return self._by_id.get(task_id)

    def core_watch(self, task: Task[Any]) -> None:
        """Someone waits for ``task``; a durable engine polls for outcomes from other workers."""

    def core_cancel_handle(self, task: Task[Any]) -> bool:
        """Cancel from any thread (``Task.cancel``)."""
        return self.call(self.cancel_task, task)

    async def core_acancel_handle(self, task: Task[Any]) -> bool:
        """Cancel from any event loop (``Task.acancel``)."""
        return await self.acall(self.cancel_task, task)

    def cancel_task(self, task: Task[Any]) -> bool:
        """Cancel ``task`` (on the loop); see ``Task.cancel``."""
        if self._inbox:
            self._accept_inbox()
            if self.loop is not None:
                self._pump()
        status = task._status
        if status.final or task._engine is not self:
            return False
        task._cancel_requested = True
        if status in _WAITING or (status is _RESERVED and task._runner is None):
            task._runner = _CANCEL
            self._finish(task, _CANCELLED, None, TaskCancelled(f"{task.name} was cancelled"))
            if task._group is not None and self.serving:
                self._pump()  # the last member of a group: its callback may start now
            return True
        runner = task._runner
        task._runner = _CANCEL
        if isinstance(runner, asyncio.Task):
            runner.cancel(f"dowork: {task.name} cancelled")
        return True

    def add_schedule(self, schedule: Schedule, first: float) -> None:
        """Start a recurring schedule whose first run is at ``first`` (on the loop)."""
        if not self.accepting:
            raise QueueShuttingDown(f"queue {self.name!r} is shutting down")
        self._schedules.add(schedule)
        self._push(first, schedule)

    def reschedule(self, schedule: Schedule, when: float) -> None:
        """Put a schedule back in the heap for its next run (on the loop)."""
        if schedule.active and self.accepting:
            self._push(when, schedule)

    def drop_schedule(self, schedule: Schedule) -> None:
        """Forget a cancelled schedule (its heap entry is skipped when it comes up)."""
        self._schedules.discard(schedule)


def _shutting_down(name: str) -> QueueShuttingDown:
    return QueueShuttingDown(f"queue {name!r} is shutting down; new tasks are not accepted")
