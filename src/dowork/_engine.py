"""The engine: the loop-side state machine of one queue, shared by sync and async callers.

Everything that changes a queue's state runs on the queue's one event loop (its "home"): a
private daemon thread for sync users, or the caller's loop for ``await queue.astart()``. Other
threads hand tasks over through a lock-free inbox and wake the loop once per batch. Due tasks
wait in a FIFO, future ones in a heap keyed by time with one clock timer armed for the
earliest. Async attempts run in long-lived worker coroutines, sync attempts in ``ThreadLane``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import itertools
import logging
import math
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ._capacity import Capacity
from ._line import Line, PriorityLine
from ._loop_thread import LoopThread
from ._threads import LAPSED, Result, ThreadLane
from .backends._protocol import PRIORITY_AGING, rank, take_slot
from .chain import ChainFailed
from .clock import Clock, FakeClock, TimerHandle
from .errors import (
    AlreadyComplete,
    DoNotRetry,
    MaxRetriesExceeded,
    QueueFull,
    QueueShuttingDown,
    TaskCancelled,
    TaskExpired,
    TaskTimeout,
)
from .group import LocalGroup, group_error
from .hooks import HOOK_EVENTS, Hooks
from .ratelimit import RateLimit
from .retry import RetryPolicy
from .task import Task, TaskStatus, _current

if TYPE_CHECKING:
    from .backends.store import Backend
    from .scheduling import Schedule

__all__ = ["Engine"]

T = TypeVar("T")
log = logging.getLogger("dowork")

_PENDING = TaskStatus.PENDING
_SCHEDULED = TaskStatus.SCHEDULED
_RESERVED = TaskStatus.RESERVED
_RUNNING = TaskStatus.RUNNING
_RETRYING = TaskStatus.RETRYING
_SUCCEEDED = TaskStatus.SUCCEEDED
_FAILED = TaskStatus.FAILED
_CANCELLED = TaskStatus.CANCELLED
_WAITING = frozenset({_PENDING, _SCHEDULED, _RETRYING})
_LAUNCHED = frozenset({_RESERVED, _RUNNING})  # handed to a lane, started or not
#: Statuses of a task in line to launch: waiting, or held by a durable worker (reserved).
_STARTABLE = _WAITING | {_RESERVED}
_CANCEL: Any = object()  # the runner mark of a task cancelled while running


class Engine:
    """Loop-side core of a ``Queue``; see the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        source: Callable[[Engine], TaskSource] | None = None,
        concurrency: int,
        maxsize: int,
        clock: Clock,
        retry: RetryPolicy,
        rng: random.Random,
        hooks: Iterable[Hooks],
        keep_finished: int,
        priority_aging: float = PRIORITY_AGING,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.name = name
        #: Seconds of waiting one priority level is worth (see ``Task.configure``).
        self.priority_aging = priority_aging
        #: The queue's limit on task starts, shared by tasks without their own.
        self.rate_limit = rate_limit
        self.clock = clock
        self.concurrency = concurrency
        self.default_policy = retry
        self.rng = rng
        self.keep_finished = keep_finished
        self.capacity = Capacity(maxsize) if maxsize else None
        hooks = list(hooks)
        self._hooks: dict[str, list[Callable[..., None]]] = {
            event: [
                getattr(h, event)
                for h in hooks
                if getattr(type(h), event, None) is not getattr(Hooks, event)
            ]
            for event in HOOK_EVENTS
        }
        self._h_submit = self._hooks["before_enqueue"]
        self._h_enqueue = self._hooks["on_enqueue"]
        self._h_before = self._hooks["before_attempt"]
        self._h_after = self._hooks["after_attempt"]
        self._policy_cache: dict[int, tuple[object, RetryPolicy]] = {}

        # Home loop binding.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread_id: int | None = None
        self._own_thread: LoopThread | None = None
        self._bind_lock = threading.Lock()

        # Cross-thread inbox (append from any thread, drained on the loop).
        self._inbox: deque[Task[Any]] = deque()
        self._inbox_wake = False

        # Loop-side state.
        self._ready: Line = deque()  # a PriorityLine once a task with a priority arrived
        self._prioritized = False
        self._batch: deque[Task[Any]] = deque()
        # Where launches come from: ready (serving) or batch (dispatch).
        self._launch_from: Line = self._batch
        #: Whether starts are rate limited here (the in-process queue; a backend limits its own).
        self._limited = rate_limit is not None
        self._starts: dict[object, list[float]] = {}  # rate limit key -> last start times
        self._heap: list[tuple[float, int, Task[Any] | Schedule]] = []
        self._seq = itertools.count(1)
        self._timer: TimerHandle | None = None
        self._timer_when = 0.0
        self._inflight = 0  # attempts holding a concurrency slot (abandoned threads included)
        self._async_running = 0  # async attempts in progress
        # Sync attempts may be staged for the threads beyond ``concurrency`` (threads stay
        # capped at ``concurrency``), so a finishing thread takes the next task at once
        # instead of waiting for a round trip through the loop.
        self._stage_limit = concurrency * 4
        self._active = 0  # attempts launched and not yet settled
        self._running: set[Task[Any]] = set()
        self._unfinished = 0
        self._afters: set[asyncio.Task[None]] = set()
        self._schedules: set[Schedule] = set()
        self.accepting = True
        self.serving = False
        self.started = False
        self.closed = False
        self._dispatch_done: asyncio.Future[None] | None = None
        self._quiet: list[asyncio.Future[None]] = []  # waiting for no attempt in progress
        self._drained: asyncio.Event | None = None
        self._stopped: asyncio.Future[None] | None = None

        # Lanes.
        self._async_ready: deque[Task[Any]] = deque()
        self._idle: list[asyncio.Future[None]] = []
        self._workers: set[asyncio.Task[None]] = set()
        self._threads: ThreadLane | None = None

        # Ids.
        self._by_id: dict[str, Task[Any]] = {}
        self._finished_ids: OrderedDict[str, None] = OrderedDict()

        # The source: where tasks come from and where outcomes go (see ``TaskSource``). Its
        # hooks are bound once here, so that a call costs what a method call costs.
        src: TaskSource = LocalSource(self) if source is None else source(self)
        self.source = src
        #: Whether tasks go through a durable backend (a ``DurableSource``).
        self.durable = src.durable
        self.enqueue: Callable[[Task[Any]], None] = src.enqueue
        self.serve: Callable[[], None] = src.serve
        self.watch: Callable[[Task[Any]], None] = src.watch
        self.cancel_handle: Callable[[Task[Any]], bool] = src.cancel_handle
        self.acancel_handle: Callable[[Task[Any]], Coroutine[Any, Any, bool]] = src.acancel_handle
        self.progress_changed: Callable[[Task[Any]], None] = src.progress_changed
        self.dispatch: Callable[[], Coroutine[Any, Any, bool]] = src.dispatch
        self.next_due: Callable[[], Coroutine[Any, Any, tuple[float, bool] | None]] = src.next_due
        self.wait_stopped: Callable[[], Coroutine[Any, Any, None]] = src.wait_stopped
        self.has_work: Callable[[], bool] = src.has_work
        self.shutdown: Callable[[float | None], Coroutine[Any, Any, bool]] = src.shutdown
        self.abort: Callable[[], Coroutine[Any, Any, list[Any]]] = src.abort
        self._launch: Callable[[Task[Any]], None] = src.launch
        self._on_start: Callable[[Task[Any]], None] = src.on_start
        self._lapsed: Callable[[Task[Any]], None] = src.lapsed
        self._settle: Callable[[Task[Any], Any, BaseException | None, float], None] = src.settle
        self._retry_later: Callable[[Task[Any], float, float, BaseException], None] = (
            src.retry_later
        )
        self._finish: Callable[[Task[Any], TaskStatus, Any, BaseException | None], None] = (
            src.finish
        )
        self._done: Callable[[Task[Any]], None] = src.done

    # -- home loop -------------------------------------------------------------------------

    def on_loop(self) -> bool:
        """Whether the caller runs on this queue's event loop thread."""
        return threading.get_ident() == self.loop_thread_id

    def ensure_loop(self) -> asyncio.AbstractEventLoop:
        """Return the home loop, starting a private loop thread if the queue has none yet."""
        loop = self.loop
        if loop is None:
            with self._bind_lock:
                if self.loop is None:
                    thread = LoopThread(f"dowork-{self.name}-loop")
                    self._own_thread = thread
                    self._bind(thread.loop, thread.ident)
                loop = self.loop
        assert loop is not None
        return loop

    def bind_running(self) -> asyncio.AbstractEventLoop:
        """Make the running loop the home loop if the queue has none yet; return the home."""
        if self.loop is None:
            with self._bind_lock:
                if self.loop is None:
                    self._bind(asyncio.get_running_loop(), threading.get_ident())
        assert self.loop is not None
        return self.loop

    def _bind(self, loop: asyncio.AbstractEventLoop, thread_id: int) -> None:
        self.loop = loop
        self.loop_thread_id = thread_id
        self._threads = ThreadLane(
            self.name, self.concurrency, loop, self._sync_done, self._thread_started
        )
        if self._inbox:
            self._inbox_wake = True
            loop.call_soon_threadsafe(self._drain_inbox)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a loop-side function from any thread and return its result."""
        loop = self.loop
        if loop is None or self.on_loop() or self.closed:
            return fn(*args)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result()

    async def acall(self, fn: Callable[..., T], *args: Any) -> T:
        """``call()`` for coroutines running on any loop."""
        if self.loop is None or self.on_loop() or self.closed:
            return fn(*args)
        return await self.arun_on_home(_as_coro(fn, *args))

    def run_on_home(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the home loop and block the calling thread for its result."""
        loop = self.ensure_loop()
        if self.on_loop():
            coro.close()
            raise RuntimeError(
                "this blocking call would deadlock on the queue's own event loop; "
                "use its 'a'-prefixed coroutine twin there"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    async def arun_on_home(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine on the home loop from any loop (binding the running one if none)."""
        loop = self.bind_running()
        if self.on_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    # -- accepting -------------------------------------------------------------------------

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

    def put(
        self, task: Task[Any], block: bool, timeout: float | None, reserved: bool = False
    ) -> None:
        """Check, freeze and enqueue a task, reserving room in a bounded queue first.

        Raises:
            QueueFull: no room (``block`` False, on the loop, or ``timeout`` passed).
        """
        self.check_new(task)
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
            raise QueueShuttingDown(
                f"queue {self.name!r} is shutting down; new tasks are not accepted"
            )
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

    # -- timers and the pump ---------------------------------------------------------------

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

    def group_complete(
        self,
        callback: Task[Any],
        results: list[Any],
        failures: list[tuple[str, BaseException]],
        policy: str,
    ) -> None:
        """Every member of ``callback``'s group finished (on the loop): run or fail it."""
        if callback.done:  # cancelled while it waited
            return
        if failures and policy == "fail":
            self._finish(callback, TaskStatus.FAILED, None, group_error(len(results), failures))
            return
        callback.args = (results, *callback.args)
        callback._status = TaskStatus.PENDING
        self._ready.append(callback)

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

    def _go(self, task: Task[Any]) -> None:
        """Start a launched task now, or stage it for a thread (``reserved`` until one is free)."""
        if task.is_async:
            self._started(task)
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
        else:
            self._started(task)
        lane.submit(task, token)

    def _started(self, task: Task[Any]) -> None:
        """The attempt starts now: ``running``, one more attempt, deadline and before-hooks."""
        task._status = _RUNNING
        task._attempts += 1
        self._began(task)

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

    # -- running attempts ------------------------------------------------------------------

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
        start = time.perf_counter()
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
        self._settle(task, value, error, time.perf_counter() - start)
        self._pump()

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
        task, token, value, error, duration = item
        self._inflight -= 1
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
        self._pump()

    # -- settling --------------------------------------------------------------------------

    def core_settle(
        self, task: Task[Any], value: Any, error: BaseException | None, took: float
    ) -> None:
        self._active -= 1
        self._running.discard(task)
        if self._h_after and task._status is _RUNNING:  # a reserved one never started
            self._call_hooks(self._h_after, task, error, took)
        if task._runner is _CANCEL:
            self._finish(task, _CANCELLED, None, TaskCancelled(f"{task.name} was cancelled"))
            return
        if error is None:
            self._finish(task, _SUCCEEDED, value, None)
            return
        task._last_error = error
        cause = _step_error(error)  # a chain's failure: its step's own exception decides
        if isinstance(cause, DoNotRetry):
            self._finish(task, _FAILED, None, error)
            return
        policy = task._policy or self.default_policy
        attempts = task._attempts
        if policy.retries != -1 and attempts > policy.retries:
            self._finish(task, _FAILED, None, MaxRetriesExceeded(attempts, error))
            return
        if policy.should_retry is not None and not self._should_retry(policy, cause):
            self._finish(task, _FAILED, None, error)
            return
        delay = policy.delay(attempts, task._prev_delay, self.rng)
        task._prev_delay = delay
        when = self.clock.now() + delay
        task._next_attempt = when
        task._status = _RETRYING
        for hook in self._hooks["on_retry"]:
            self._call_hook(hook, task, error, delay)
        resume = getattr(error, "resume", None)  # e.g. a chain resumes at its failed step
        if isinstance(resume, tuple) and len(resume) == 2:
            task.args, task.kwargs = tuple(resume[0]), dict(resume[1])
        self._retry_later(task, when, delay, error)

    def core_retry_later(
        self, task: Task[Any], when: float, delay: float, error: BaseException
    ) -> None:
        """Queue a failed task's next attempt for ``when`` (the durable engine overrides)."""
        if delay <= 0 and self.serving:
            self._ready.append(task)
        else:
            self._push(when, task)

    def _should_retry(self, policy: RetryPolicy, error: BaseException) -> bool:
        assert policy.should_retry is not None
        try:
            return bool(policy.should_retry(error))
        except Exception:
            log.exception("should_retry raised; the task will not be retried")
            return False

    def core_finish(
        self,
        task: Task[Any],
        status: TaskStatus,
        value: Any,
        error: BaseException | None,
    ) -> None:
        task._status = status
        task._value = value
        task._error = error
        task._next_attempt = None
        self._unfinished -= 1
        if self.capacity is not None:
            self.capacity.release()
        if error is None:
            for hook in self._hooks["on_success"]:
                self._call_hook(hook, task)
        else:
            for hook in self._hooks["on_failure"]:
                self._call_hook(hook, task, error)
        group = task._group
        if group is not None and group.callback is not task:
            group.member_done(self)
        after = task._after
        if after is not None:
            task._after = None
            try:
                pending = after(task)
            except Exception:
                log.exception("after-callback of %s raised; the task's outcome stands", task.name)
                pending = None
            if pending is not None and isinstance(pending, Awaitable):
                aft = asyncio.get_running_loop().create_task(self._await_after(task, pending))
                self._afters.add(aft)
                aft.add_done_callback(self._afters.discard)
                return
        self._done(task)

    async def _await_after(self, task: Task[Any], pending: Awaitable[object]) -> None:
        try:
            await pending
        except Exception:
            log.exception("after-callback of %s raised; the task's outcome stands", task.name)
        finally:
            self._done(task)
            if not self.accepting:
                self._check_drained()

    def core_done(self, task: Task[Any]) -> None:
        task._wake_waiters()
        if task._id is not None:
            self._remember_finished(task._id)

    def _remember_finished(self, task_id: str) -> None:
        finished = self._finished_ids
        finished[task_id] = None
        while len(finished) > self.keep_finished:
            old, _ = finished.popitem(last=False)
            self._by_id.pop(old, None)

    def core_progress_changed(self, task: Task[Any]) -> None:
        """A running task reported progress (any thread): tell the ``on_progress`` hooks."""
        hooks = self._hooks["on_progress"]
        if hooks:
            self.call_on_loop(self._call_hooks, hooks, task, task._progress)

    def call_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the home loop: now if called there, else soon (thread-safe)."""
        if threading.get_ident() == self.loop_thread_id:
            fn(*args)
            return
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                loop.call_soon_threadsafe(fn, *args)

    def _call_hooks(self, hooks: list[Callable[..., None]], *args: Any) -> None:
        for hook in hooks:
            self._call_hook(hook, *args)

    @staticmethod
    def _call_hook(hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("hook %r raised; ignored", hook)

    # -- cancel ----------------------------------------------------------------------------

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

    # -- schedules -------------------------------------------------------------------------

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

    # -- driving: dispatch, serve, stop, shutdown -----------------------------------------

    async def core_dispatch(self) -> bool:
        """Attempt every due task once, wait for those attempts, report if work remains."""
        if self.serving:
            raise RuntimeError("dispatch() drives a queue by hand; this queue is running")
        if self.closed:
            raise RuntimeError(f"queue {self.name!r} is shut down")
        self._accept_inbox()
        self._release_due(self.clock.now(), self._ready)
        batch = [t for t in self._ready if t._status in _WAITING]
        self._ready.clear()
        if not self._prioritized:  # a priority line lists its tasks in order already
            batch.sort(key=_by_seq)
        await self._run_batch(batch)
        return self.has_work()

    async def _run_batch(self, batch: list[Task[Any]]) -> None:
        """Attempt each task of ``batch`` once, ``concurrency`` at a time, and wait for them.

        The after-callbacks are waited for too. Every ``dispatch`` (in memory or durable) ends here.
        """
        if batch:
            self._batch.extend(batch)
            self._launch_from = self._batch
            done = self._dispatch_done = asyncio.get_running_loop().create_future()
            try:
                self._pump()
                await done
            finally:
                self._dispatch_done = None
        while self._afters:
            await asyncio.gather(*self._afters, return_exceptions=True)

    def core_has_work(self) -> bool:
        """Whether unfinished tasks remain (due or not)."""
        return self._unfinished > 0 or bool(self._inbox)

    # -- running until idle ------------------------------------------------------------------

    async def run_until_idle(self, advance: float | None, limit: int | None) -> int:
        """Run until nothing runs or is due; with ``advance``, step a ``FakeClock`` meanwhile.

        ``advance`` is how far the clock may go, in seconds (``inf``: until no task waits for
        a time; None: it stays). Returns the attempts that ended; see ``Queue.run_until_idle``.
        """
        if self.closed:
            raise RuntimeError(f"queue {self.name!r} is shut down")
        if self.serving and self.durable:
            raise RuntimeError(
                f"queue {self.name!r} is running with a backend, which other workers may share; "
                "run_until_idle() drives a stopped one (or an in-memory queue)"
            )
        clock = self.clock
        horizon = None if advance is None else clock.now() + advance
        ran = _Attempts(self.name, limit)
        self._h_after.append(ran)  # counts as an after-attempt hook: nothing to pay otherwise
        try:
            while True:
                if self.serving:
                    await self._until_quiet(ran)
                else:
                    await self._dispatch_until_idle(ran)
                if horizon is None:
                    break
                due = await self.next_due()
                if due is None or (horizon == math.inf and not due[1]):
                    break
                when = due[0]
                if when > horizon or when <= clock.now():
                    break
                assert isinstance(clock, FakeClock)
                clock.set(when)
        finally:
            self._h_after.remove(ran)
        if horizon is not None and horizon != math.inf and clock.now() < horizon:
            assert isinstance(clock, FakeClock)
            clock.set(horizon)
        return ran.count

    async def _dispatch_until_idle(self, ran: _Attempts) -> None:
        """Dispatch again and again (a queue driven by hand) until a pass runs nothing."""
        while True:
            before = ran.count
            await self.dispatch()
            if ran.count == before:
                return
            ran.check()

    async def _until_quiet(self, ran: _Attempts) -> None:
        """Wait until a serving queue runs nothing and has nothing due (on its clock)."""
        quiet: asyncio.Future[None] | None = None
        while True:
            self._accept_inbox()
            now = self.clock.now()
            if self._heap and self._heap[0][0] <= now:  # its timer may not have fired yet
                self._release_due(now, self._ready)
            self._pump()
            if self._afters:
                await asyncio.gather(*self._afters, return_exceptions=True)
                continue
            if not self._active and not self._inbox:
                return
            ran.check()
            if quiet is None or quiet.done():
                quiet = asyncio.get_running_loop().create_future()
                self._quiet.append(quiet)
            # Woken when the last attempt ends; a look now and then bounds endless retries.
            await asyncio.wait((quiet,), timeout=0.05)

    async def core_next_due(self) -> tuple[float, bool] | None:
        """When the next waiting task or schedule firing is due, and whether a task waits.

        None if nothing waits for a time. The durable engine asks its store instead.
        """
        heap = self._heap
        while heap:
            item = heap[0][2]
            if isinstance(item, Task) and item._status not in _WAITING:
                heapq.heappop(heap)  # cancelled meanwhile: it would be skipped when due
            elif not isinstance(item, Task) and not item.active:
                heapq.heappop(heap)
            else:
                break
        if not heap:
            return None
        when, _, item = heap[0]
        if isinstance(item, Task):
            return when, True
        waits = any(isinstance(t, Task) and t._status in _WAITING for _, _, t in heap)
        return when, waits

    def core_serve(self) -> None:
        """Start processing continuously on the home loop (call on the loop)."""
        if self.closed:
            raise RuntimeError(f"queue {self.name!r} was shut down and cannot start again")
        if self.serving:
            raise RuntimeError(f"queue {self.name!r} is already running")
        self.serving = self.started = True
        self._stopped = asyncio.get_running_loop().create_future()
        self._ready.extend(self._batch)
        self._batch.clear()
        self._launch_from = self._ready
        self._accept_inbox()
        self._release_due(self.clock.now(), self._ready)
        if self._heap:
            self._arm(self._heap[0][0])
        self._pump()

    def halt(self) -> None:
        """Stop launching attempts (on the loop); waiting tasks stay queued for a restart."""
        if not self.serving:
            return
        self.serving = False
        self._launch_from = self._batch
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        stopped = self._stopped
        if stopped is not None and not stopped.done():
            stopped.set_result(None)

    async def core_wait_stopped(self) -> None:
        """Wait until ``halt()`` or shutdown ends serving, then for running attempts to end."""
        if self._stopped is not None:
            await asyncio.shield(self._stopped)
        if self._active:
            quiet = asyncio.get_running_loop().create_future()
            self._quiet.append(quiet)
            await quiet

    async def core_shutdown(self, timeout: float | None) -> bool:
        """Refuse new tasks, let the queued ones finish, then stop; see ``Queue.shutdown``."""
        self.accepting = False
        if self.closed:
            return True
        for schedule in list(self._schedules):
            schedule._deactivate()
        self._schedules.clear()
        self._accept_inbox()
        if not self.serving and self.has_work():
            self.serve()
        drained = self._drained = asyncio.Event()
        self._check_drained()
        clean = True
        try:
            async with asyncio.timeout(timeout):
                await drained.wait()
        except TimeoutError:
            clean = False
            await self._cancel_everything()
        self.halt()
        self._close()
        return clean

    async def core_abort(self) -> list[Any]:
        """Stop at once (the second signal): describe every unfinished task for a dump file.

        Running async attempts are cancelled; every unfinished task ends as cancelled (its
        after-callback runs once) and is returned as a ``DumpLine`` so it can be re-queued.
        """
        from .dump import line_of

        self.accepting = False
        self._accept_inbox()
        seen: dict[int, Task[Any]] = {}
        heap_tasks = [t for _, _, t in self._heap if isinstance(t, Task)]
        for task in [*self._running, *self._ready, *self._batch, *heap_tasks]:
            if not task.done:
                seen[id(task)] = task
        lines = [line_of(task, self.name) for task in seen.values()]
        for schedule in list(self._schedules):
            schedule._deactivate()
        for task in seen.values():
            self.cancel_task(task)
            if task._status in _LAUNCHED and not task.is_async:
                self._settle(task, None, None, 0.0)
        self.halt()
        self._close()
        if self._drained is not None:
            self._drained.set()
        return lines

    def _check_drained(self) -> None:
        if self._drained is None or self._inbox or self._afters:
            return
        if self._unfinished == 0 and not self._active:
            self._drained.set()

    async def _cancel_everything(self) -> None:
        for _, _, item in self._heap:
            if isinstance(item, Task):
                self.cancel_task(item)
        for task in [*self._ready, *self._batch]:
            self.cancel_task(task)
        for task in list(self._running):
            self.cancel_task(task)
            if not task.is_async and task._status in _LAUNCHED:  # its thread may never return
                self._settle(task, None, None, 0.0)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 1.0
        while (self._running or self._afters) and loop.time() < give_up:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # bounded: a task may swallow its cancellation

    def _close(self) -> None:
        self.closed = True
        for idle in self._idle:
            if not idle.done():
                idle.set_result(None)
        self._idle.clear()
        if self._threads is not None:
            self._threads.stop()
        while self._inbox:  # a submit that raced with shutdown: it will never run
            task = self._inbox.popleft()
            task._status = _CANCELLED
            task._error = TaskCancelled(f"{task.name}: queue {self.name!r} shut down")
            self._done(task)

    def release_thread(self) -> None:
        """Stop the private loop thread, if the queue has one (after shutdown, off the loop)."""
        thread = self._own_thread
        if thread is not None and not self.on_loop():
            thread.stop_soon()
            thread.join(5.0)

    def unbind(self) -> None:
        """Forget a home loop that is closing (after ``run()``), keeping the queued tasks."""
        self.halt()
        for worker in self._workers:
            worker.cancel()
        self._workers.clear()
        self._idle.clear()
        self._async_ready.clear()
        if self._threads is not None:
            self._threads.stop()
            self._threads = None
        self.loop = None
        self.loop_thread_id = None

    def abandon(self) -> list[Task[Any]]:
        """Return the tasks that never finished (for a caller that stops without draining)."""
        waiting = [t for _, _, t in self._heap if isinstance(t, Task) and not t.done]
        return waiting + [t for t in self._ready if not t.done] + list(self._inbox)


class TaskSource(Protocol):
    """Where an engine's tasks come from and where their outcomes go.

    The engine runs attempts (pump, lanes, deadlines, the retry decision, hooks); a source
    feeds it and records what happened. ``LocalSource`` keeps tasks in this process's memory;
    ``DurableSource`` (``dowork._durable``) claims them from a store and writes outcomes back.
    The engine binds these methods once (see ``Engine.__init__``): the ``core_*`` methods of
    the engine are the in-memory behaviour, which a source may wrap.
    """

    @property
    def durable(self) -> bool:
        """Whether tasks are kept in a store (named tasks only)."""

    @property
    def backend(self) -> Backend | None:
        """The store holding the tasks, if any."""

    def enqueue(self, task: Task[Any]) -> None:
        """Take a checked, frozen task from any thread (capacity already reserved)."""

    def enqueue_many(self, tasks: list[Task[Any]]) -> None:
        """Take several checked, frozen tasks (a store writes them at once)."""

    async def aenqueue(self, task: Task[Any], timeout: float | None) -> None:
        """Take a checked, frozen task from any event loop, waiting for room if bounded."""

    async def aenqueue_many(self, tasks: list[Task[Any]]) -> None:
        """``enqueue_many`` from any event loop."""

    def enqueue_group(
        self, members: list[Task[Any]], callback: Task[Any], policy: str, check_every: float
    ) -> None:
        """Take a group's checked members and the callback held until they finish."""

    async def aenqueue_group(
        self, members: list[Task[Any]], callback: Task[Any], policy: str, check_every: float
    ) -> None:
        """``enqueue_group`` from any event loop."""

    def fire_schedule(self, schedule: Schedule, planned: float) -> None:
        """A recurring schedule is due (on the loop): enqueue its task for ``planned``."""

    def lookup(self, task_id: str) -> Task[Any] | None:
        """The task with this id, wherever it runs (None if unknown)."""

    def chain_log(self, task_id: str) -> Any:
        """The chain log of a task that finished elsewhere (None if none)."""

    def serve(self) -> None:
        """Start processing continuously (on the loop)."""

    def launch(self, task: Task[Any]) -> None:
        """A due task may start: hand it to its lane."""

    def on_start(self, task: Task[Any]) -> None:
        """An attempt started."""

    def lapsed(self, task: Task[Any]) -> None:
        """A staged attempt was given back unstarted (its lease lapsed)."""

    def settle(self, task: Task[Any], value: Any, error: BaseException | None, took: float) -> None:
        """An attempt ended: decide retry or finish."""

    def retry_later(self, task: Task[Any], when: float, delay: float, error: BaseException) -> None:
        """A failed attempt runs again at ``when``."""

    def finish(
        self, task: Task[Any], status: TaskStatus, value: Any, error: BaseException | None
    ) -> None:
        """The task ended for good with ``status``."""

    def done(self, task: Task[Any]) -> None:
        """A finished task's after-callback is over: wake its waiters."""

    def progress_changed(self, task: Task[Any]) -> None:
        """A running task reported progress (any thread)."""

    def watch(self, task: Task[Any]) -> None:
        """Someone waits for ``task``'s outcome."""

    def cancel_handle(self, task: Task[Any]) -> bool:
        """Cancel from any thread."""

    async def acancel_handle(self, task: Task[Any]) -> bool:
        """Cancel from any event loop."""

    async def dispatch(self) -> bool:
        """Run what is due once (a queue driven by hand); say whether work remains."""

    async def next_due(self) -> tuple[float, bool] | None:
        """When the next waiting task or firing is due, and whether a task waits."""

    async def wait_stopped(self) -> None:
        """Wait until serving stopped and running attempts ended."""

    def has_work(self) -> bool:
        """Whether unfinished tasks remain here."""

    async def shutdown(self, timeout: float | None) -> bool:
        """Refuse new tasks, finish the rest, stop; False if ``timeout`` cut it short."""

    async def abort(self) -> list[Any]:
        """Stop at once; return what could not finish (dump lines), if anything."""


class LocalSource:
    """The in-memory task source: tasks live in this process, as the engine keeps them."""

    durable = False
    backend: Backend | None = None

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
        """Enqueue each (waiting for room in a bounded queue)."""
        put = self.engine.put
        for task in tasks:
            put(task, True, None)

    async def aenqueue(self, task: Task[Any], timeout: float | None) -> None:
        """Enqueue, waiting for room in a bounded queue without blocking the event loop."""
        engine = self.engine
        cap = engine.capacity
        if cap is None or cap.try_acquire():
            engine.put(task, False, None, reserved=cap is not None)
            return
        if not await cap.aacquire(timeout):
            raise QueueFull(f"queue {engine.name!r} is full ({cap.maxsize} unfinished tasks)")
        engine.put(task, False, None, reserved=True)

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
        put = self.engine.put
        put(callback, True, None)  # accepted, and held until the members finish
        try:
            for member in members:
                put(member, True, None)
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


class _Attempts:
    """An after-attempt hook counting the attempts that end, for ``run_until_idle``."""

    __slots__ = ("count", "limit", "queue")

    def __init__(self, queue: str, limit: int | None) -> None:
        self.queue = queue
        self.limit = limit
        self.count = 0

    def __call__(self, task: Task[Any], error: BaseException | None, took: float) -> None:
        self.count += 1

    def check(self) -> None:
        """Raise once more attempts than the limit ran (endless retries, say)."""
        if self.limit is not None and self.count > self.limit:
            raise RuntimeError(
                f"queue {self.queue!r} is not idle after {self.count} attempts "
                f"(max_attempts={self.limit}): a task that retries or enqueues itself for ever?"
            )


def _step_error(error: BaseException) -> BaseException:
    """The exception that decides a retry: a chained job's failing step's own, else ``error``."""
    if isinstance(error, ChainFailed) and error.__cause__ is not None:
        return error.__cause__
    return error


def _by_seq(task: Task[Any]) -> int:
    return task._seq


async def _as_coro(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)
