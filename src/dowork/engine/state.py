"""The state of an engine and the statuses its parts test."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from .._capacity import Capacity
from .._line import Line
from .._loop_thread import LoopThread
from .._threads import Result, ThreadLane
from ..backends._protocol import PRIORITY_AGING
from ..clock import Clock, TimerHandle
from ..hooks import HOOK_EVENTS, Hooks
from ..ratelimit import RateLimit
from ..retry import RetryPolicy
from ..task import Task, TaskStatus

if TYPE_CHECKING:
    from ..scheduling import Schedule

if TYPE_CHECKING:
    from .source import TaskSource


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


class EngineState:
    """The state of one engine, shared by its parts.

    The parts (``HomeLoop``, then ``Intake``, ``Launch``, ``Outcome`` and ``Drive``) each hold
    one concern's methods; the methods one part calls on another are declared here.
    """

    _accept_inbox: Callable[[], None]
    _arm: Callable[[float], None]
    _call_hooks: Callable[..., None]
    _check_drained: Callable[[], None]
    _drain_inbox: Callable[[], None]
    group_complete: Callable[[Task[Any], list[Any], list[tuple[str, BaseException]], str], None]
    _pump: Callable[[], None]
    register: Callable[[Task[Any]], None]
    _push: Callable[[float, Task[Any] | Schedule], None]
    _release_due: Callable[[float, Line], None]
    _remember_finished: Callable[[str], None]
    _sync_done: Callable[[Result], None]
    _sync_drained: Callable[[], None]
    _thread_started: Callable[[Task[Any]], None]
    _use_priorities: Callable[[], None]
    cancel_task: Callable[[Task[Any]], bool]
    halt: Callable[[], None]

    def __init__(
        self,
        name: str,
        *,
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
        self._h_success = self._hooks["on_success"]
        self._policy_cache: dict[int, tuple[object, RetryPolicy]] = {}

        self._init_loop_state()

    def _init_loop_state(self) -> None:
        """The home loop binding, the inbox, the lines, the lanes and the ids (none yet)."""
        # Home loop binding.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread_id: int | None = None
        self._own_thread: LoopThread | None = None
        self._bind_lock = threading.Lock()

        # Cross-thread inbox (append from any thread, drained on the loop).
        self._inbox: deque[Task[Any]] = deque()
        self._inbox_wake = False

        self._init_lines()

    def _init_lines(self) -> None:
        """The loop-side lines, timers and counters."""
        # Loop-side state.
        self._ready: Line = deque()  # a PriorityLine once a task with a priority arrived
        self._prioritized = False
        self._batch: deque[Task[Any]] = deque()
        # Where launches come from: ready (serving) or batch (dispatch).
        self._launch_from: Line = self._batch
        #: Whether starts are rate limited here (the in-process queue; a backend limits its own).
        self._limited = self.rate_limit is not None
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
        self._stage_limit = self.concurrency * 4
        #: The time the outcomes of one drain of the thread lane share (``_sync_done`` reads
        #: the clock once for them all), or of the async attempts ending in one turn of the
        #: loop; None between them.
        self.stamp: float | None = None
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

    def _use_source(self, src: TaskSource) -> None:
        """Bind the source's hooks once, so that a call costs what a method call costs."""
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
