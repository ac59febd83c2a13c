"""Starting attempts: timers, the pump, rate limits, lanes, deadlines, the async workers."""

from __future__ import annotations

import asyncio
import heapq
import time
from typing import TYPE_CHECKING, Any

from .._line import Line, PriorityLine
from .._threads import LAPSED, Result
from ..backends.flow import take_slot
from ..clock import TimerHandle
from ..errors import (
    TaskExpired,
    TaskTimeout,
)
from ..task import Task, TaskStatus, _current

if TYPE_CHECKING:
    from ..scheduling import Schedule

from .home import HomeLoop
from .state import (
    _CANCEL,
    _LAUNCHED,
    _PENDING,
    _RESERVED,
    _RUNNING,
    _SCHEDULED,
    _STARTABLE,
    _WAITING,
)


class Launch(HomeLoop):
    """Starting attempts: timers, the pump, rate limits, lanes, deadlines and the async workers."""

    def _push(self, when: float, item: Task[Any] | Schedule) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), item))
        if self.serving and (self._timer is None or when < self._timer_when):
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = self.clock.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self.serving:
            return
        # What the timer was armed for is due, even if the wall clock was stepped back since.
        self._release_due(max(self.clock.now(), self._timer_when), self._ready)
        self._pump()
        if self._heap and self._timer is None:
            self._arm(self._heap[0][0])

    def _use_priorities(self) -> None:
        """Order ready tasks by priority from now on (plain FIFO until the first one came)."""
        line = PriorityLine(self.clock, self.priority_aging, self._ready)
        if self._launch_from is self._ready:
            self._launch_from = line
        self._ready = line
        self._prioritized = True

    def _throttled(self, task: Task[Any]) -> bool:
        """Whether a rate limit puts off this start; if so the task waits for its slot.

        The slot is reserved, so a task that waited for one starts then without asking again,
        and tasks over the limit start in the order they reached it.
        """
        if task._slot is not None:
            task._slot = None
            return False
        limit = task._rate_limit
        key: object = task.fn
        if limit is None:
            limit, key = self.rate_limit, None
            if limit is None:
                return False
        starts = self._starts.setdefault(key, [])
        now = self.clock.now()
        start = take_slot(starts, limit.n, limit.per, now)
        if start <= now:
            return False
        task._slot = start
        task._status = _SCHEDULED
        task._next_attempt = start
        self._push(start, task)
        return True

    def _release_due(self, now: float, into: Line) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            item = heapq.heappop(heap)[2]
            if isinstance(item, Task):
                if item._status in _WAITING:
                    into.append(item)
            else:
                item._fire(now)

    def _pump(self) -> None:
        source = self._launch_from
        concurrency = self.concurrency
        while source:
            head = source[0]
            if head._status not in _STARTABLE:
                source.popleft()
                continue
            inflight = self._inflight
            if inflight >= concurrency and (
                head.is_async
                or head._within is not None
                or self._async_running
                or inflight >= self._stage_limit
            ):
                break
            source.popleft()
            if head._expires_at is not None and self.clock.now() >= head._expires_at:
                self._expire(head)
                continue
            if self._limited and self._throttled(head):
                continue
            self._launch(head)
        done = self._dispatch_done
        if done is not None and not source and not self._active and not done.done():
            done.set_result(None)
        if not self.accepting and self._drained is not None and not self._unfinished:
            self._check_drained()
        if self._quiet and not self._active:
            for future in self._quiet:
                if not future.done():
                    future.set_result(None)
            self._quiet.clear()

    def _expire(self, task: Task[Any]) -> None:
        """Drop a task whose ``expires`` time passed before an attempt could start."""
        at = task.expires_at
        self._finish(task, TaskStatus.DEAD, None, TaskExpired(f"{task.name}: not started by {at}"))

    def core_launch(self, task: Task[Any]) -> None:
        """Hand a due task to its lane; it is ``running`` only once its function starts."""
        self._hold(task)
        self._go(task)

    def _hold(self, task: Task[Any]) -> None:
        """Count a launched task against concurrency, before its lane takes it."""
        self._inflight += 1
        self._active += 1
        self._running.add(task)
        task._next_attempt = None
        task._deadline_at = None
        task._timed_out = False
        if task._cancel_requested and task._runner is not _CANCEL:
            task._cancel_requested = False  # a timed-out attempt's flag does not carry over

    def _take_back(self, task: Task[Any], token: object) -> bool:
        """Undo the launch of a sync attempt staged for a thread, if no thread started it.

        Whether it was taken back: a thread that took it first runs it, as launched.
        """
        lane = self._threads
        if lane is None or not lane.take_back(token):
            return False
        self._inflight -= 1  # (what _hold counted)
        self._active -= 1
        self._running.discard(task)
        task._runner = None
        return True

    def _go(self, task: Task[Any]) -> None:
        """Start a launched task now, or stage it for a thread (``reserved`` until one is free)."""
        if task.is_async:
            task._status = _RUNNING  # it starts now: one more attempt (its deadline is
            task._attempts += 1  # armed by _attempt_async), the before-hooks, the start mark
            if self._h_before:
                self._call_hooks(self._h_before, task)
            self._on_start(task)
            self._async_running += 1
            self._async_ready.append(task)
            if self._idle:
                self._idle.pop().set_result(None)
            elif len(self._workers) < self.concurrency:
                worker = asyncio.get_running_loop().create_task(self._async_worker())
                self._workers.add(worker)
            return
        token = object()
        task._runner = token
        lane = self._threads
        assert lane is not None
        if lane.saturated:
            task._status = _RESERVED  # the thread that takes it calls _thread_started
        else:  # it starts now: one more attempt, its deadline, the before-hooks, the mark
            task._status = _RUNNING
            task._attempts += 1
            if task._within is None and not self._h_before:  # (self._began(task), inline)
                self._on_start(task)
            else:
                self._began(task)
        lane.submit(task, token)

    def _thread_started(self, task: Task[Any]) -> None:
        """A thread started a task that waited for it (the thread set running and attempts)."""
        if not task._status.final:
            self._began(task)

    def _began(self, task: Task[Any]) -> None:
        runner = task._runner
        if task._within is not None and not task.is_async and runner not in (None, _CANCEL):
            self._arm_deadline(task, runner)
        if self._h_before:
            self._call_hooks(self._h_before, task)
        self._on_start(task)

    def core_on_start(self, task: Task[Any]) -> None:
        """An attempt started (the durable engine records it in the store)."""

    def core_lapsed(self, task: Task[Any]) -> None:
        """A staged attempt was not started: its ``_start_by`` passed (durable leases)."""

    def _arm_deadline(self, task: Task[Any], token: object) -> TimerHandle:
        assert task._within is not None
        deadline = task._deadline_at = self.clock.now() + task._within
        return self.clock.call_at(deadline, lambda: self._deadline(task, token))

    def _deadline(self, task: Task[Any], token: object) -> None:
        if task._runner is not token or task._status is not _RUNNING:
            return
        task._cancel_requested = True
        if isinstance(token, asyncio.Task):
            task._timed_out = True
            token.cancel()
        else:  # a sync attempt cannot be interrupted: abandon it, its thread runs on
            task._runner = None
            error = TaskTimeout(f"{task.name}: attempt exceeded within={task._within}s")
            self._settle(task, None, error, float(task._within or 0.0))

    async def _async_worker(self) -> None:
        ready = self._async_ready
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        try:
            while True:
                if not ready:
                    if self.closed:
                        return
                    idle: asyncio.Future[None] = loop.create_future()
                    self._idle.append(idle)
                    await idle
                    continue
                await self._attempt_async(ready.popleft(), me)
        finally:
            self._workers.discard(me)

    async def _attempt_async(self, task: Task[Any], me: asyncio.Task[None]) -> None:
        task._runner = me
        timer = self._arm_deadline(task, me) if task._within is not None else None
        reset = _current.set(task)
        start = time.perf_counter_ns()
        error: BaseException | None = None
        value: Any = None
        try:
            value = await task.fn(*task.args, **task.kwargs)
        except asyncio.CancelledError as exc:
            if not task._cancel_requested:  # not ours: the loop is going away; put it back
                self._interrupted(task)
                raise
            me.uncancel()
            error = exc
        except BaseException as exc:
            error = exc
        finally:
            _current.reset(reset)
            if timer is not None:
                timer.cancel()
        if task._cancel_requested:
            if me.cancelling():
                me.uncancel()  # the function swallowed our cancellation
            if task._runner is not _CANCEL and task._timed_out:
                error = TaskTimeout(f"{task.name}: attempt exceeded within={task._within}s")
                value = None
        if task._runner is me:
            task._runner = None
        self._inflight -= 1
        self._async_running -= 1
        if self.stamp is None:  # the outcomes of this turn of the loop share one time
            self.stamp = self.clock.now()
            asyncio.get_running_loop().call_soon(self._forget_stamp)
        self._settle(task, value, error, (time.perf_counter_ns() - start) / 1e9)
        self._pump()

    def _forget_stamp(self) -> None:
        self.stamp = None

    def _interrupted(self, task: Task[Any]) -> None:
        """Put back an attempt cut short by the loop closing; it does not count."""
        self._inflight -= 1
        self._async_running -= 1
        self._active -= 1
        self._running.discard(task)
        task._runner = None
        task._attempts -= 1
        task._status = _PENDING
        self._ready.appendleft(task)

    def _sync_done(self, item: Result) -> None:
        """A thread returned an attempt (the lane's drain; ``_sync_drained`` ends the batch)."""
        task, token, value, error, duration = item
        self._inflight -= 1
        if self.stamp is None:  # the batch's outcomes share one reading of the clock
            self.stamp = self.clock.now()
        if error is LAPSED:  # not started: given back (the durable engine's leases)
            self._active -= 1
            self._running.discard(task)
            task._runner = None
            self._lapsed(task)
        elif task._runner is token:
            task._runner = None
            self._settle(task, value, error, duration)
        elif task._runner is _CANCEL and task._status in _LAUNCHED:
            self._settle(task, value, error, duration)

    def _sync_drained(self) -> None:
        """The lane's batch of returned attempts is settled: forget the time they shared.

        Then launch what their slots let start, once for the batch rather than once a task.
        """
        self.stamp = None
        self._pump()
