"""The state of a durable task source, and the encodings its parts share."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ..backends._protocol import (
    Outcome,
    Record,
    Settlement,
)
from ..backends.extras import StoreExtras
from ..backends.store import Backend, Burials, ClaimRequest
from ..clock import TimerHandle
from ..codec import Codec
from ..engine import Engine
from ..errors import (
    MaxRetriesExceeded,
    NotRegistered,
    OutcomeUnknown,
    StoreLost,
)
from ..registry import Registry
from ..task import Progress, Task, TaskStatus

if TYPE_CHECKING:
    pass


from collections.abc import Callable

from .pace import Pace
from .settings import DurableSettings

log = logging.getLogger("dowork")
T = TypeVar("T")

_OUTCOME = {
    TaskStatus.SUCCEEDED: Outcome.SUCCEEDED,
    TaskStatus.FAILED: Outcome.FAILED,
    TaskStatus.CANCELLED: Outcome.CANCELLED,
    TaskStatus.DEAD: Outcome.DEAD,
}
#: Record statuses of a finished task.
_FINISHED = ("succeeded", "failed", "cancelled", "dead")
#: Seconds a started attempt waits before its ``STARTED`` mark is written (up to twice that:
#: marks are written in rounds, see ``Starts._write_marks``): an attempt that ends sooner never
#: writes one (its outcome counts the start), so short tasks cost nothing.
_MARK_DELAY = 0.02
#: ``Options.from_stored`` of a record that stores none.
_NO_OPTIONS: tuple[None, None, None] = (None, None, None)
_TRACE_LIMIT = 8000  #: characters of a traceback kept in a record's history

#: Seconds (at most ``maintenance``) a worker holding tasks for a slot waits for one to free
#: before it gives back those beyond what its hold allows now (``_hand_back_waiting``): its
#: rate, and so its hold, falls within some 0.2 s of tasks no longer leaving it.
_STUCK = 0.25

_ABORT_WRITES = 5.0  #: seconds a forced stop waits for each of its writes to the store
#: Seconds a worker waits at most before asking a store that failed it again.
_LAST_PAUSE = 5.0


def store_pause(failures: int, *, jitter: bool = True) -> float:
    """Seconds to wait after ``failures`` failed calls to the store in a row.

    0.05 s doubling to ``_LAST_PAUSE``; with ``jitter``, less up to a half at random, so that
    workers cut off together do not come back together. The cap is short: a worker waits this
    long to claim or write again once its store is back, and a call that fails costs little.
    """
    pause = min(_LAST_PAUSE, 0.05 * 2.0 ** min(failures, 10))
    return pause * random.uniform(0.5, 1.0) if jitter else pause


def _with_options(options: str | None, **extra: Any) -> str:
    """A record's options JSON with ``extra`` keys added."""
    stored = json.loads(options) if options else {}
    stored.update(extra)
    return json.dumps(stored)


def _less_urgent(task: Task[Any]) -> float:
    """Sort key of held tasks: the backend's claim order (a stable sort keeps ties in line)."""
    return task._rank


def _payload_of(task: Task[Any]) -> dict[str, Any]:
    """What a durable record stores of a call: arguments, and headers when there are any."""
    payload: dict[str, Any] = {"a": list(task.args), "k": dict(task.kwargs)}
    if task._headers:
        payload["h"] = task._headers
    return payload


def encode_progress(progress: Progress) -> str:
    """A progress report as the JSON text backends store."""
    return json.dumps([progress.value, progress.message, progress.at.timestamp()])


def decode_progress(text: str) -> Progress | None:
    """Read back ``encode_progress``; None for anything malformed."""
    try:
        value, message, at = json.loads(text)
        return Progress(float(value), message, datetime.fromtimestamp(float(at), UTC))
    except (TypeError, ValueError, OverflowError):
        return None


def _chain_log_of(error: BaseException | None) -> dict[str, Any] | None:
    """Return the chain log carried by a (possibly wrapped) ChainFailed, as plain data."""
    while error is not None:
        log_ = getattr(error, "log", None)
        if log_ is not None and hasattr(log_, "to_dict"):
            data: dict[str, Any] = log_.to_dict()
            return data
        error = error.__cause__ if isinstance(error, MaxRetriesExceeded) else None
    return None


def _describe(error: BaseException) -> str:
    if isinstance(error, MaxRetriesExceeded):
        return (
            f"MaxRetriesExceeded after {error.attempts} attempt(s): {_describe(error.last_error)}"
        )
    return f"{type(error).__qualname__}: {error}"


def _placeholder(name: str) -> Any:
    """A stand-in function for a task whose function is not registered in this process."""

    def unknown(*args: Any, **kwargs: Any) -> None:
        raise NotRegistered(f"{name} is not registered in this process")

    unknown.__qualname__ = str(name)
    return unknown


def _unknown(error: OutcomeUnknown, tasks: list[Task[Any]]) -> None:
    """Hand a push's tasks to its ``OutcomeUnknown``, free to be enqueued again (same ids)."""
    error.tasks = tuple(tasks)
    for task in tasks:
        task._engine = None


class DurableState:
    """The state of one durable source, shared by its parts.

    The methods one part calls on another are declared here.
    """

    _admit: Callable[[list[Record]], Coroutine[Any, Any, None]]
    _admit_one: Callable[..., Coroutine[Any, Any, None]]
    _failed_line: Callable[[int, Outcome, float, float, BaseException], str]
    _before_first_claim: Callable[[float], Coroutine[Any, Any, None]]
    _claim_request: Callable[[float, int], ClaimRequest]
    _bury: Callable[[Record, str, str], None]
    _buried: Callable[[str, str], None]
    _dead: Callable[[Record, str, str], None]
    _end_refiring: Callable[[], None]
    _end_watches: Callable[[], None]
    _flush: Callable[[], Coroutine[Any, Any, None]]
    _flush_now: Callable[[], None]
    _freed: Callable[[], None]
    _give_up_unwritten: Callable[[], None]
    _hand_back_held: Callable[[], None]
    _held_leases: Callable[[], list[tuple[str, int]]]
    _lease_now: Callable[[], float]
    _leave: Callable[[], Coroutine[Any, Any, None]]
    _maintain: Callable[[float], Coroutine[Any, Any, None]]
    _open_group: Callable[[Record], Coroutine[Any, Any, None]]
    _push_batch: Callable[..., Coroutine[Any, Any, None]]
    _push_record: Callable[..., Coroutine[Any, Any, None]]
    _renewed: Callable[[list[str], list[str], float], None]
    _settle_out: Callable[[Settlement], None]
    _start: Callable[[Record, list[Any] | None, bool, bool], Task[Any] | None]
    _start_held: Callable[[str], None]
    _hand_back_waiting: Callable[[float], None]
    _prefetch: Callable[[], int]
    _start_watcher: Callable[[], None]
    _take: Callable[..., Task[Any] | None]
    _tell_buried: Callable[[], None]
    _unreadable: Callable[[Record, BaseException], None]
    _written: Callable[[list[Settlement], list[str]], None]
    finish: Callable[[Task[Any], TaskStatus, Any, BaseException | None], None]
    prepare: Callable[..., Record]
    settle: Callable[[Task[Any], Any, BaseException | None, float], None]
    shutdown: Callable[[float | None], Coroutine[Any, Any, bool]]

    _due_at = 0.0

    #: While the fetcher waits for ``_slot_free`` (a slot freed): how few tasks held (claimed)
    #: let it claim again; 0 while it does not wait (a set before its wait begins would be
    #: cleared unseen). A finished task sets the slot once fewer are held.
    _slot_waiting = 0

    #: Whether the last write of outcomes failed (the store out of reach) and some wait to be
    #: written: the fetcher claims nothing meanwhile, so that a late outcome of this worker's
    #: reaches the store before this worker could claim the same task again and run it twice.
    #: Not for a full store, which the claims drain.
    _unsettled = False

    #: The warm shutdown in progress (``shutdown()``'s asyncio task), which ``abort()`` ends.
    _stopping: asyncio.Task[Any] | None = None

    #: Set by ``abort()``: the warm shutdown it interrupts returns False instead of raising.
    _aborting = False

    #: Done when ``abort()`` has finished: the warm shutdown it ended returns only then, so
    #: that its caller does not stop the loop under it.
    _aborted: asyncio.Future[None] | None = None

    def __init__(
        self,
        engine: Engine,
        *,
        backend: Backend,
        codec: Codec,
        registry: Registry,
        settings: DurableSettings,
        owns_backend: bool = False,
    ) -> None:
        self.engine = engine
        self.name = engine.name
        self.clock = engine.clock
        self.backend = backend
        #: What the store offers beyond ``Store`` (``wake``, ``wait_claim``, ...), found once.
        self.extras = StoreExtras.of(backend)
        self.codec = codec
        self._binds = bool(getattr(codec, "binds_task", False))  # (see decode_for)
        self.registry = registry
        self.settings = settings
        self.owns_backend = owns_backend  # built from a URL: closed at shutdown
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._init_leases()
        self._init_outbox()
        self._init_tasks()

    def _init_leases(self) -> None:
        """What this worker holds: leases, start marks, suspects."""
        self._claimed: dict[str, int] = {}  # id -> lease token
        self._lease_until: dict[str, float] = {}  # id -> when its lease lapses (store clock)
        self._begun: set[str] = set()  # claimed ids whose function started here
        self._marks: dict[str, int] = {}  # started ids whose STARTED mark is not written yet
        self._marking: asyncio.TimerHandle | None = None
        self._aged: list[str] = []  # those of them that started before the last round (marks)
        #: Claimed ids that lost a lease before (``lost`` or ``crashes``): their start is written
        #: before their function runs, so a task that kills its worker at once is charged.
        self._store_first: set[str] = set()
        self._dropped: set[str] = set()  # claimed ids given up before they started
        #: Suspects (``_store_first``) launched, in line for their mark to be written: those
        #: that can start now are marked together (see ``_mark_first``).
        self._first_line: collections.deque[Task[Any]] = collections.deque()
        self._first_marking: asyncio.Task[None] | None = None  # the batch being written
        #: Claimed tasks on their last crash (``crash_budget - 1`` crashes): the backend hands
        #: them out alone and nothing more is claimed while one is held, so a poison task
        #: cannot use up the crash budget of healthy tasks held next to it.
        self._suspects: set[str] = set()
        self._alone_from = max(1, self.settings.crash_budget - 1)
        settings = self.settings
        #: How many claimed tasks to hold beyond the slots (``_prefetch``).
        self._pace = Pace(settings.prefetch, settings.prefetch_window, time.monotonic())

    def _init_outbox(self) -> None:
        """Outcomes on their way to the store, and the handles that wait for them."""
        self._outbox: list[Settlement] = []
        #: Final outcomes on their way to the store, by ``id()`` of their ``Settlement`` (it
        #: stays in the outbox or in a batch until written): the task whose handle reports the
        #: outcome only once the write returned (see ``_written``).
        self._holding: dict[int, Task[Any]] = {}
        #: Held tasks whose hooks and after-callback are over: woken once the store has them.
        self._unwoken: set[Task[Any]] = set()
        #: Handles whose outcome the store refused or could not take (another run of the task
        #: settles it): they wait for the store's outcome, as a handle of another process does.
        self._overtaken: set[Task[Any]] = set()
        #: Ids a stop at once handed back unfinished: no outcome of theirs is written here.
        self._handed_back: set[str] = set()
        #: Records the store dead-lettered unread in the calls of this source (claims,
        #: settlements, the reaper), for ``_tell_buried`` to tell the hooks once.
        self._burials: Burials = []

    def _init_tasks(self) -> None:
        """The background tasks, watched handles, held duplicates, clocks and counters."""
        self._flushing: asyncio.Task[None] | None = None
        #: The wait before the next write of outcomes, and the loop's time the last ended
        #: (``Flushing._flush_soon``).
        self._gathering: asyncio.TimerHandle | None = None
        self._written_at = 0.0
        self._fetcher: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._watched: dict[str, Task[Any]] = {}
        #: Ids whose push from the loop is under way: not stored yet, but not gone either.
        self._pushing: set[str] = set()
        #: Schedule firings due together, waiting for their push (``Firings._push_line``).
        self._firing_line: list[Any] = []
        #: Claimed records whose id already runs (or waits) here: held, their lease renewed,
        #: until that one settles, so that one process never runs an id twice at once.
        self._held: dict[str, list[Record]] = {}
        #: When retries this worker settled fall due: it wakes an idle worker then (see _due).
        self._due_times: list[float] = []
        self._due_timer: TimerHandle | None = None
        self._watch_pause = 0.002
        self._slot_free: asyncio.Event | None = None
        self._next_purge = 0.0
        self._attempt: dict[str, tuple[float, BaseException | None]] = {}  # id -> (took, error)
        self._finished_counts: dict[int, dict[str, int]] = {}  # minute -> outcome -> n
        self._serving_since = 0.0
        #: Settlements refused because the lease had been lost (counted, never hidden).
        self.refused = 0
        #: Set when the store was found deleted or replaced: the worker stopped for good.
        self.lost: StoreLost | None = None
        self._losing: asyncio.Task[bool] | None = None
        self._progress_out: dict[str, tuple[int, str]] = {}  # id -> (lease token, JSON)
        self._group_of: dict[str, str] = {}  # claimed group member id -> its callback's id
        self._offset = 0.0  # the store's clock minus ours (see _sync_clock)
        self._next_clock_sync = 0.0
        self._progressing: asyncio.Task[None] | None = None
        self.engine._limited = False  # the backend enforces rate limits, at claim
        self._rates_for = -1  # the registry size _rate_cache was computed for
        self._rate_cache: dict[str, tuple[int, float]] | None = None
