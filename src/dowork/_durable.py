"""The durable task source: the engine, with tasks kept in a backend instead of in memory.

Producers encode a task (registered name + codec bytes) and push it; the call returns once
the backend confirmed the write. Workers claim due records in batches under a lease, run them
on the same lanes as in-memory tasks, and settle each attempt with one ``Settlement`` written
in batches. A maintenance step renews leases (the heartbeat), requeues the leases of workers
that died (the reaper) and purges finished records past their retention. Delivery is
at-least-once: a task whose worker dies runs again after its lease expires. The handle of a
task that ran here reports its outcome only once the store has it (see ``_written``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import heapq
import json
import logging
import os
import random
import socket
import time
import traceback
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from .backends._protocol import (
    STATS_MINUTES,
    WAITING,
    WHILE_UNFINISHED,
    Outcome,
    Record,
    Settlement,
    WorkerBeat,
    minute_of,
    rank,
)
from .backends.store import Backend, ClaimRequest, Upkeep, Upkept
from .clock import SystemClock, TimerHandle
from .codec import Codec, check_depth, decode_for, encode_for
from .engine import Engine
from .engine.state import _CANCEL
from .errors import (
    BackendError,
    BackendFull,
    DecodeError,
    DuplicateTask,
    MaxRetriesExceeded,
    NotRegistered,
    NotSerializable,
    OutcomeNotWritten,
    OutcomeUnknown,
    PayloadTooLarge,
    QueueShuttingDown,
    ResultTooLarge,
    StoreLost,
    TaskFailed,
    TaskGone,
    TooDeeplyNested,
)
from .group import group_error
from .options import EMPTY, Options
from .registry import Registry
from .task import Progress, Task, TaskStatus, _deciding

if TYPE_CHECKING:
    from .scheduling import Schedule

__all__ = ["DurableSettings", "DurableSource"]

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
#: Seconds a started attempt waits before its ``STARTED`` mark is written: an attempt that
#: ends sooner never writes one (its outcome counts the start), so short tasks cost nothing.
_MARK_DELAY = 0.02
#: ``Options.from_stored`` of a record that stores none.
_NO_OPTIONS: tuple[None, None, None] = (None, None, None)


@dataclass(frozen=True, slots=True)
class DurableSettings:
    """Lease and maintenance timing of a durable queue (seconds of the queue's clock).

    Attributes:
        lease: how long a claimed task belongs to its worker without a renewal; a task whose
            worker died runs again between ``lease`` and ``lease + maintenance`` later.
        maintenance: how often leases are renewed and expired ones requeued.
        crash_budget: crashes (leases that lapsed while the task's function ran) after which
            a task is dead-lettered (``crashed_worker``) instead of being run again; on its
            last one the task is claimed alone, so a poison task cannot use up the budget of
            the tasks claimed with it. A lease that lapsed before the function started is
            counted as lost (``Record.lost``), never as a crash.
        batch: most records claimed at once.
        prefetch: claimed tasks a worker may hold beyond ``concurrency``, waiting to start
            (leased, so no other worker takes them); more means fewer round trips per task.
        keep_result: seconds a finished record stays readable (``None``: the backend's
            default, ``0``: not stored at all).
        purge_every: how often finished records past their retention are deleted.
        max_running: most tasks of the queue running at once across *all* worker processes
            (gotasks' ``WithMaxLimit``), enforced by the backend at claim time.
        max_payload: most bytes of encoded arguments per task; a bigger call raises
            ``PayloadTooLarge`` before anything is written.
        max_result: most bytes of a task's encoded result; a bigger result fails the task
            with ``ResultTooLarge`` (saying the size and the limit) and nothing of it is
            stored.
        idempotency_window: seconds an enqueue's ``idempotency_key`` stays taken: another
            enqueue with the same key on the same queue within it returns the first task.
        key_concurrency: most tasks of one ``concurrency_key`` running at once across *all*
            worker processes (``None``: no cap; keys still take turns at claim).
    """

    lease: float = 30.0
    maintenance: float = 5.0
    crash_budget: int = 3
    batch: int = 64
    prefetch: int = 32
    keep_result: float | None = None
    purge_every: float = 60.0
    max_running: int | None = None
    max_payload: int = 512 * 1024
    idempotency_window: float = 24 * 3600.0
    key_concurrency: int | None = None
    max_result: int = 512 * 1024

    def __post_init__(self) -> None:
        if self.lease <= 0 or self.maintenance <= 0:
            raise ValueError("lease and maintenance must be positive")
        if self.maintenance * 2 > self.lease:
            raise ValueError("maintenance must be at most half the lease, or leases lapse")
        if self.crash_budget < 1 or self.batch < 1:
            raise ValueError("crash_budget and batch must be at least 1")
        if self.prefetch < 0:
            raise ValueError("prefetch must not be negative")
        if self.max_running is not None and self.max_running < 1:
            raise ValueError("max_running must be at least 1")
        if self.key_concurrency is not None and self.key_concurrency < 1:
            raise ValueError("key_concurrency must be at least 1")
        if self.max_payload < 1 or self.idempotency_window <= 0:
            raise ValueError("max_payload and idempotency_window must be positive")
        if self.max_result < 1:
            raise ValueError("max_result must be positive")


class DurableSource:
    """The task source of an ``Engine`` whose tasks live in a ``Backend`` (see the module doc).

    The engine runs the attempts; this source feeds it claimed tasks and writes their outcomes.
    """

    durable = True

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
        self.codec = codec
        self.registry = registry
        self.settings = settings
        self.owns_backend = owns_backend  # built from a URL: closed at shutdown
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._claimed: dict[str, int] = {}  # id -> lease token
        self._lease_until: dict[str, float] = {}  # id -> when its lease lapses (store clock)
        self._begun: set[str] = set()  # claimed ids whose function started here
        self._marks: dict[str, int] = {}  # started ids whose STARTED mark is not written yet
        self._marking: asyncio.TimerHandle | None = None
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
        self._alone_from = max(1, settings.crash_budget - 1)
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
        self._flushing: asyncio.Task[None] | None = None
        self._fetcher: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._watched: dict[str, Task[Any]] = {}
        #: Ids whose push from the loop is under way: not stored yet, but not gone either.
        self._pushing: set[str] = set()
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

    # -- producing -------------------------------------------------------------------------

    def prepare(self, task: Task[Any], now: float | None = None) -> Record:
        """Check and encode a task for the backend, in the caller's thread.

        ``now`` (default: the clock) is the creation time; a batch shares one, so that the
        backend can store its records as one run.

        Raises:
            NotRegistered: the function is not a task registered with this queue.
            NotSerializable: the arguments or options cannot be stored.
            PayloadTooLarge: the encoded arguments exceed ``settings.max_payload``.
        """
        fn = task.fn
        name = self.registry.name_of(fn)
        if name is None:
            raise NotRegistered(
                f"{task.name} is not a registered task of durable queue {self.name!r}; "
                "declare it with @queue.task at module level and submit that"
            )
        entry = self.registry.get(name)
        assert entry is not None
        template = entry._template
        if task._after is not None and task._after is not template._after:
            raise NotSerializable(
                "a durable task's after-callback cannot be stored; declare it on the task "
                "function (@queue.task(after=...)) so every worker has it"
            )
        if task._rate_limit is not template._rate_limit:
            raise ValueError(
                "a rate limit holds for every call of a task: declare it on the task function "
                "(@queue.task(rate_limit=...)), not on one call"
            )
        if self.engine._h_submit:
            self.engine._call_hooks(self.engine._h_submit, task)
        options = None
        overrides = task._overrides
        if now is None:
            now = self.clock.now()
        expires_at = None if overrides is None else overrides.expiry(now)
        if overrides is not None and overrides is not template._overrides:
            options = overrides.to_stored(task._within, expires_at)
        elif (task._within is not None and task._within != template._within) or expires_at:
            within = task._within if task._within != template._within else None
            options = EMPTY.to_stored(within, expires_at)
        payload = self._encode_args(task, name)
        run_at = now
        if task._not_before is not None:
            run_at = max(run_at, task._not_before)
        if task._delay is not None:
            run_at = max(run_at, now + task._delay)
        key = task._idempotency_key
        until = None
        if key is not None:
            until = WHILE_UNFINISHED if task._unique else now + self.settings.idempotency_window
        return Record(
            id=task.id,
            queue=self.name,
            name=name,
            payload=payload,
            run_at=run_at,
            created_at=now,
            status="pending" if run_at <= now else "scheduled",
            options=options,
            idempotency_key=key,
            idempotency_until=until,
            priority=task._priority,
            concurrency_key=task._concurrency_key,
        )

    def _encode_args(self, task: Task[Any], name: str) -> bytes:
        """A task's arguments as stored: within the depth and size limits, else refused."""
        check_depth(task.args)
        if task.kwargs:
            check_depth(task.kwargs.values())
        codec = self.codec  # JSON: the plain call, nothing more on the hot path
        payload = (
            encode_for(codec, _payload_of(task), name, task.id)  # signed with name and id
            if getattr(codec, "binds_task", False)
            else codec.encode(_payload_of(task))
        )
        if len(payload) > self.settings.max_payload:
            raise PayloadTooLarge(len(payload), self.settings.max_payload)
        return payload

    def enqueue(self, task: Task[Any]) -> None:
        """Encode, push and wait for the backend's confirmation (any thread but the loop's)."""
        fresh = task._id is None  # its id is drawn now: no need to check it is free
        record = self.prepare(task)
        task._engine = self.engine
        if self.engine.on_loop():  # e.g. a task submitting another: cannot block here
            self._push_soon(task, record, self._push_record(task, record, fresh))
            return
        try:
            if not self._push_here([task], [record], fresh):
                self.engine.run_on_home(self._push_record(task, record, fresh))
        except OutcomeUnknown as exc:
            _unknown(exc, [task])
            raise

    def enqueue_many(self, tasks: list[Task[Any]]) -> None:
        """Encode all, then push them in one atomic batch (one round trip)."""
        now = self.clock.now()
        fresh = all(task._id is None for task in tasks)
        records = [self.prepare(task, now) for task in tasks]
        for task in tasks:
            task._engine = self.engine
        try:
            if not self._push_here(tasks, records, fresh):
                self.engine.run_on_home(self._push_batch(tasks, records))
        except OutcomeUnknown as exc:
            _unknown(exc, tasks)
            raise

    def _push_here(self, tasks: list[Task[Any]], records: list[Record], fresh: bool) -> bool:
        """Push from the calling thread, without a hop to the home loop, if possible.

        Needs a backend with ``push_sync``; returns False (nothing done) without one, or when
        enqueue hooks must run on the loop. ``fresh``: every id was drawn at random just now,
        so the backend need not check that it is free. The handles are registered first, so
        that this process's worker, claiming a task before the call returns, runs the
        caller's handle.
        """
        push_sync = getattr(self.backend, "push_sync", None)
        if push_sync is None or self.engine._h_enqueue:
            return False
        if len(tasks) == 1:  # submit(): the same, without the loops
            task, record = tasks[0], records[0]
            status = task._status
            self._register(task, record)
            try:
                if push_sync(records, fresh=fresh):
                    return True
            except BaseException:
                self._unregister(tasks, records, [status])
                raise
            self._unregister(tasks, records, [status])
            return False
        previous = [task._status for task in tasks]
        for task, record in zip(tasks, records, strict=True):
            self._register(task, record)
        try:
            pushed = bool(push_sync(records, fresh=fresh))
        except BaseException:
            pushed = False
            raise
        finally:
            if not pushed:
                self._unregister(tasks, records, previous)
        return pushed

    def _register(self, task: Task[Any], record: Record) -> None:
        """Make ``task`` the handle of ``record`` here, before its push.

        This process's worker may claim the record before the push returns: it must run the
        caller's handle, not a copy.
        """
        if record.status == "scheduled":
            task._status = TaskStatus.SCHEDULED
            task._next_attempt = record.run_at
        else:
            task._status = TaskStatus.PENDING
        self.engine._by_id[record.id] = task

    def _unregister(
        self, tasks: list[Task[Any]], records: list[Record], previous: list[TaskStatus]
    ) -> None:
        """Undo ``_register`` for a push that stored nothing (or may not have)."""
        for task, record, status in zip(tasks, records, previous, strict=True):
            if self.engine._by_id.get(record.id) is task:
                del self.engine._by_id[record.id]
            task._status = status

    async def aenqueue_many(self, tasks: list[Task[Any]]) -> None:
        """``enqueue_many`` from async code."""
        now = self.clock.now()
        records = [self.prepare(task, now) for task in tasks]
        for task in tasks:
            task._engine = self.engine
        await self.engine.arun_on_home(self._push_batch(tasks, records))

    def enqueue_group(
        self, members: list[Task[Any]], callback: Task[Any], policy: str, check_every: float
    ) -> None:
        """Push a group's members and its held callback in one atomic write."""
        tasks, records = self._group_records(members, callback, policy, check_every)
        self.engine.run_on_home(self._push_batch(tasks, records))

    async def aenqueue_group(
        self, members: list[Task[Any]], callback: Task[Any], policy: str, check_every: float
    ) -> None:
        """``enqueue_group`` from async code."""
        tasks, records = self._group_records(members, callback, policy, check_every)
        await self.engine.arun_on_home(self._push_batch(tasks, records))

    def _group_records(
        self, members: list[Task[Any]], callback: Task[Any], policy: str, check_every: float
    ) -> tuple[list[Task[Any]], list[Record]]:
        """Encode a group: members name their callback, the callback waits with their ids."""
        for task in (*members, callback):
            task._frozen = True
        records = [self.prepare(task) for task in members]
        held = self.prepare(callback)
        for record in records:
            record.options = _with_options(record.options, group=held.id)
        held.options = _with_options(
            held.options,
            group_of=[r.id for r in records],
            group_policy=policy,
            group_check=check_every,
        )
        held.status = "scheduled"
        held.run_at = held.created_at + check_every
        tasks = [*members, callback]
        for task in tasks:
            task._engine = self.engine
        return tasks, [*records, held]

    async def _push_batch(
        self, tasks: list[Task[Any]], records: list[Record], fresh: bool = False
    ) -> None:
        previous = [task._status for task in tasks]
        for task, record in zip(tasks, records, strict=True):
            self._register(task, record)  # (before: this worker may claim it meanwhile)
        try:
            same = await self.backend.push(records, fresh=fresh)
        except OutcomeUnknown as exc:
            self._unregister(tasks, records, previous)
            _unknown(exc, tasks)
            raise
        except BaseException:
            self._unregister(tasks, records, previous)
            raise
        for task, record in zip(tasks, records, strict=True):
            if same and record.id in same:  # its idempotency key is held: a handle on that task
                if self.engine._by_id.get(record.id) is task:
                    del self.engine._by_id[record.id]  # (its own id was never stored)
                task._id = same[record.id]
                task._status = TaskStatus.PENDING  # until the stored record is read
                continue
            if self.engine._h_enqueue:
                self.engine._call_hooks(self.engine._h_enqueue, task)

    async def aenqueue(self, task: Task[Any], timeout: float | None = None) -> None:
        """Encode and push from async code; returns once the backend confirmed.

        ``timeout`` (waiting for room) does not apply: a store has no bound.
        """
        fresh = task._id is None  # its id is drawn now: no need to check it is free
        record = self.prepare(task)
        task._engine = self.engine
        await self.engine.arun_on_home(self._push_record(task, record, fresh))

    async def _push_record(self, task: Task[Any], record: Record, fresh: bool = False) -> None:
        await self._push_batch([task], [record], fresh)

    def fire_schedule(self, schedule: Schedule, planned: float) -> None:
        """Enqueue one firing of a recurring schedule, once across every worker process.

        The task id is derived from the schedule (name, trigger, arguments) and the planned
        time, so when several workers fire the same due time only the first push is stored;
        the others get ``DuplicateTask`` and count it in ``schedule.fired_elsewhere``.
        """
        task = schedule._factory()
        task._not_before = planned
        try:
            record = self.prepare(task)
        except Exception:
            log.exception("queue %s: schedule %s cannot enqueue its task", self.name, schedule.name)
            return
        bound = getattr(self.codec, "binds_task", False)  # signed for the id drawn above
        plain = self.codec.encode(_payload_of(task)) if bound else record.payload
        digest = hashlib.sha1(
            f"{record.name}|{schedule.trigger!r}|".encode() + plain, usedforsecurity=False
        ).hexdigest()[:20]
        record.id = task._id = f"schedule:{digest}:{planned:.3f}"
        if bound:  # the same on every worker: signed for the firing's own id
            record.payload = encode_for(self.codec, _payload_of(task), record.name, record.id)
        record.run_at = planned
        record.status = "pending"
        task._engine = self.engine
        task._frozen = True
        self._push_soon(task, record, self._push_fired(schedule, task, record))

    def _push_soon(self, task: Task[Any], record: Record, push: Coroutine[Any, Any, None]) -> None:
        """Push from the loop in the background; the record counts as on its way meanwhile."""
        task_id = record.id
        self._pushing.add(task_id)
        pushing = asyncio.get_running_loop().create_task(push)
        self.engine._afters.add(pushing)

        def done(finished: asyncio.Task[None]) -> None:
            self.engine._afters.discard(finished)
            self._pushing.discard(task_id)

        pushing.add_done_callback(done)

    async def _push_fired(self, schedule: Schedule, task: Task[Any], record: Record) -> None:
        try:
            await self._push_record(task, record)
        except DuplicateTask:
            schedule.fired_elsewhere += 1
            return
        except BackendError as exc:
            log.warning("queue %s: schedule %s firing lost (%r)", self.name, schedule.name, exc)
            return
        schedule.runs += 1
        schedule.last_task = task

    # -- working ---------------------------------------------------------------------------

    def serve(self) -> None:
        """Start claiming and running tasks (on the loop)."""
        if self.engine.closed:
            raise RuntimeError(f"queue {self.name!r} was shut down and cannot start again")
        if self.engine.serving:
            raise RuntimeError(f"queue {self.name!r} is already running")
        self.engine.serving = self.engine.started = True
        loop = asyncio.get_running_loop()
        self.engine._stopped = loop.create_future()
        self.engine._launch_from = self.engine._ready
        self._serving_since = self.clock.now()
        self._slot_free = asyncio.Event()
        self._fetcher = loop.create_task(self._fetch_loop())
        if self.engine._heap:  # recurring schedules fire from every worker (once per due time)
            self.engine._arm(self.engine._heap[0][0])

    async def _fetch_loop(self) -> None:
        settings = self.settings
        next_maintenance = 0.0
        failures = 0
        while self.engine.serving:
            try:
                now = self._lease_now()
                # A clock stepped back (NTP) must not stop heartbeats and reaping until it
                # catches up with the last due time: run maintenance then too.
                if now >= next_maintenance or now < next_maintenance - settings.maintenance:
                    await self._maintain(now)
                    next_maintenance = now + settings.maintenance
                    now = self._lease_now()  # the shared clock may have been measured just now
                if self._suspects:
                    self._suspects.intersection_update(self._claimed)
                held = len(self._claimed)
                prefetch = self._prefetch()
                room = prefetch + self.engine.concurrency - held
                fits = held < self.engine.concurrency or room * 2 >= prefetch
                if room > 0 and fits and not self._suspects:
                    ask = min(room, settings.batch)
                    claimed = await self.backend.claim(self._claim_request(now, ask))
                    await self._admit(claimed)
                    self.engine._pump()
                    failures = 0
                    if len(claimed) == ask:
                        continue  # there may be more
                    await self._wait_for_work(now)
                else:
                    slot = self._slot_free
                    assert slot is not None
                    slot.clear()
                    try:
                        async with asyncio.timeout(settings.maintenance):
                            await slot.wait()
                    except TimeoutError:
                        pass
            except asyncio.CancelledError:
                raise
            except StoreLost as exc:
                self._lose_store(exc)
                return
            except Exception as exc:
                failures += 1
                delay = min(30.0, 0.05 * 2 ** min(failures, 10)) * random.uniform(0.5, 1.0)
                log.warning(
                    "queue %s: backend error (%r); retrying in %.2fs", self.name, exc, delay
                )
                await asyncio.sleep(delay)

    def _lose_store(self, exc: StoreLost) -> None:
        """Stop this worker for good: its store is gone (see ``StoreLost``).

        Claims nothing more, lets running attempts finish, then shuts down; ``Queue.run()``
        raises the error and ``dowork worker`` exits with status 1, for a supervisor to start
        the worker again on the store now at the path.
        """
        self.lost = exc
        log.critical("queue %s: %s; stopping this worker", self.name, exc)
        # Not among _afters: the shutdown waits for those.
        self._losing = asyncio.get_running_loop().create_task(self._stop_for_good())

    async def _stop_for_good(self) -> bool:
        """Shut down (running attempts finish), then release whoever waits in ``run()``."""
        try:
            return await self.shutdown(None)
        finally:
            stopped = self.engine._stopped
            if stopped is not None and not stopped.done():
                stopped.set_result(None)

    async def _wait_for_work(self, now: float) -> None:
        """Wait for work; with ``wait_claim`` (Redis), claim in the same round trip.

        The claim then runs the moment a push wakes the worker, so the task starts at once.
        """
        pause = await self._idle_for(now)
        wait_claim = getattr(self.backend, "wait_claim", None)
        settings = self.settings
        room = self._prefetch() + self.engine.concurrency - len(self._claimed)
        if wait_claim is None or room <= 0 or self._suspects:
            await self.backend.wait(self.name, pause)
            return
        claimed = await wait_claim(
            self._claim_request(self._lease_now(), min(room, settings.batch)), pause
        )
        await self._admit(claimed)
        self.engine._pump()
        if claimed:
            # Let a worker thread that was just handed a task take the GIL now, rather than
            # after this thread's next round trips (a no-op task then starts ~0.3 ms sooner).
            time.sleep(0)  # noqa: ASYNC251  # releases the GIL for a moment, on purpose

    def _claim_request(self, now: float, limit: int) -> ClaimRequest:
        """A claim of up to ``limit`` records at ``now``, with this queue's flow control."""
        settings = self.settings
        return ClaimRequest(
            self.name, now, limit, settings.lease, self.owner, settings.max_running,
            self._alone_from, aging=self.engine.priority_aging, rates=self._rates(),
            per_key=settings.key_concurrency,
        )  # fmt: skip

    def _prefetch(self) -> int:
        """Tasks to hold beyond ``concurrency``: none under a rate limit.

        A rate limit spaces out claims, so a claimed task must start at once: one held back
        behind busy workers would start late, next to the tasks claimed in the next period.
        """
        return 0 if self._rates() else self.settings.prefetch

    def _rates(self) -> dict[str, tuple[int, float]] | None:
        """The rate limits the backend enforces at claim: the queue's ``""`` and per task."""
        if len(self.registry) != self._rates_for:
            rates: dict[str, tuple[int, float]] = {}
            limit = self.engine.rate_limit
            if limit is not None:
                rates[""] = (limit.n, limit.per)
            for fn in self.registry.task_functions():
                own = fn._template._rate_limit
                if own is not None:
                    rates[fn.name] = (own.n, own.per)
            self._rate_cache = rates or None
            self._rates_for = len(self.registry)
        return self._rate_cache

    async def _idle_for(self, now: float) -> float:
        """How long an idle worker may wait: until the next maintenance or the next due task."""
        pause = self.settings.maintenance
        due = await self.backend.next_due(self.name)
        if due is not None:
            pause = min(pause, max(0.0, due - now))
        return pause

    async def _admit(self, records: list[Record]) -> None:
        """Take a claimed batch; orphans (they crashed a worker) run first, in queue order.

        The less an orphan waits in this process, the less it is exposed to another crash,
        and the sooner the task a dead worker left runs again. A group's callback first
        gathers its members' outcomes.
        """
        for record in reversed(records):
            if record.crashes:
                await self._admit_one(record, first=True)
        for record in records:
            if not record.crashes:
                await self._admit_one(record)
        if (
            any(r.priority for r in records)
            and len(self.engine._ready) > 1
            and not any(r.concurrency_key for r in records)  # keys take turns: keep them so
        ):
            # Tasks held from earlier claims wait behind more urgent ones claimed now.
            ready = sorted(self.engine._ready, key=_less_urgent)
            self.engine._ready.clear()
            self.engine._ready.extend(ready)

    async def _admit_one(self, record: Record, first: bool = False) -> None:
        if record.id in self._claimed:  # the same id is already here: start it after that one
            self._held.setdefault(record.id, []).append(record)
            log.warning(
                "queue %s: task %s claimed again while it runs here; held until that run ends",
                self.name,
                record.id,
            )
            return
        try:
            options = record.options
            if options is not None and '"group_of"' in options:
                await self._open_group(record)
            else:
                self._take(record, first=first)
        except Exception as exc:  # the per-record guard: no record stops the worker
            self._unreadable(record, exc)

    def _unreadable(self, record: Record, exc: BaseException) -> None:
        """Settle a claimed record that could not be started: dead-letter it (``malformed``).

        A store error while a group's callback reads its members hands the record back
        instead. A record already in line to run (or settled) is left alone.
        """
        task = self.engine._by_id.get(record.id)
        if task is not None and task._deliveries == record.attempts and not task._status.final:
            return  # taken by this claim: in line or running, settled as any other
        token = self._claimed.setdefault(record.id, record.attempts)
        if isinstance(exc, BackendError):
            del self._claimed[record.id]
            log.warning("queue %s: task %s handed back (%r)", self.name, record.id, exc)
            now = self.clock.now()
            run_at = now + self.settings.maintenance
            self._settle_out(Settlement(record.id, token, Outcome.RETRY, now, run_at=run_at))
            return
        self._dead(record, "malformed", f"{type(exc).__name__}: {exc}")

    async def _open_group(self, record: Record) -> None:
        """Run a group's callback with its members' results (or wait, or fail it unrun).

        It waits longer if a member has not finished, and fails unrun under
        ``on_failure="fail"`` if one did not succeed.
        """
        try:
            assert record.options is not None
            options = json.loads(record.options)
            members = [str(m) for m in options["group_of"]]
            policy = options.get("group_policy", "fail")
            check = float(options.get("group_check", 60.0))
        except (AssertionError, KeyError, TypeError, ValueError):
            self._take(record)  # dead-letters it as undecodable, or runs it plainly
            return
        states = {r.id: r for r in await self.backend.get(members)}
        now = self.clock.now()
        if any(r.status not in _FINISHED for r in states.values()):
            self._settle_out(
                Settlement(record.id, record.attempts, Outcome.RETRY, now, run_at=now + check)
            )
            return
        results: list[Any] = []
        failures: list[tuple[str, BaseException]] = []
        for member in members:
            state = states.get(member)  # gone: finished and not kept
            if state is not None and state.status != "succeeded":
                error = TaskFailed(state.error or state.status, state.status, state.reason)
                results.append(error)
                failures.append((member, error))
                continue
            try:
                value = (
                    None
                    if state is None or state.result is None
                    else self.codec.decode(state.result)
                )
            except DecodeError as exc:
                results.append(exc)
                failures.append((member, exc))
                continue
            results.append(value)
        if failures and policy == "fail":
            task = self._take(record, queued=False)
            if task is not None:
                self.finish(task, TaskStatus.FAILED, None, group_error(len(members), failures))
            return
        self._take(record, lead=results)

    def _take(
        self,
        record: Record,
        lead: list[Any] | None = None,
        queued: bool = True,
        first: bool = False,
    ) -> Task[Any] | None:
        """Turn a claimed record into a running task, or dead-letter it if it cannot run.

        ``lead`` (a group's results) goes before the stored arguments; ``queued=False`` builds
        the task without putting it in line to run; ``first`` puts it at the head of the line.
        Whatever the record holds, it either starts or is dead-lettered here: a payload or
        option that cannot be read (too big, too deep, wrong types) is ``malformed``.
        """
        self._claimed[record.id] = record.attempts
        if record.lease_until is not None:
            self._lease_until[record.id] = record.lease_until
        self._dropped.discard(record.id)
        if record.lost or record.crashes:
            self._store_first.add(record.id)
        try:
            return self._start(record, lead, queued, first)
        except Exception as exc:  # the per-record guard: no record stops the worker
            if record.id in self._claimed:
                self._dead(record, "malformed", f"{type(exc).__name__}: {exc}")
            return None

    def _start(
        self, record: Record, lead: list[Any] | None, queued: bool, first: bool
    ) -> Task[Any] | None:
        """``_take`` without its guard: check and decode everything, then change state."""
        entry = self.registry.get(record.name)
        if entry is None:
            self._dead(record, "unknown_task", f"no task named {record.name!r} is registered")
            return None
        decoded = self._read(record)
        if decoded is None:
            return None
        args, kwargs, headers, stored = decoded
        options, within, expires_at = Options.from_stored(stored) if stored else _NO_OPTIONS
        if expires_at is not None and self.clock.now() >= expires_at:
            when = datetime.fromtimestamp(expires_at, UTC).isoformat()
            self._dead(record, "expired", f"not started by {when}")
            return None
        if record.crashes >= self._alone_from:
            self._suspects.add(record.id)
        known = options if options is not None else entry._template._overrides
        policy = (
            self.engine.default_policy
            if known is None
            else known.retry_policy(self.engine.default_policy)
        )
        order = rank(record.run_at, record.priority, self.engine.priority_aging)
        task = self.engine._by_id.get(record.id)
        if task is None or task._status.final:
            task = entry.task(*args, **kwargs)
            task._id = record.id
        if lead is not None:
            task.args = (lead, *args)
            task.kwargs = kwargs
        task._frozen = True
        task._engine = self.engine
        if headers:
            task._headers = headers
        task._attempts = record.started - record.crashes
        task._deliveries = record.attempts
        task._status = TaskStatus.RESERVED  # held here, not started
        task._priority = record.priority
        task._concurrency_key = record.concurrency_key
        task._rank = order
        if within is not None:
            task._within = within
        if options is not None:
            task._overrides = options
        task._policy = policy
        self.engine._by_id[record.id] = task
        self.engine._unfinished += 1
        if queued:
            if first:
                self.engine._ready.appendleft(task)
            else:
                self.engine._ready.append(task)
        return task

    def _read(
        self, record: Record
    ) -> tuple[list[Any], dict[str, Any], dict[str, str] | None, dict[str, Any] | None] | None:
        """``_decode``, or None once a record it cannot read is dead-lettered (with why)."""
        try:
            return self._decode(record)
        except DecodeError as exc:
            self._dead(record, exc.reason, f"{type(exc).__name__}: {exc}")
        except (TooDeeplyNested, PayloadTooLarge, RecursionError) as exc:
            self._dead(record, "malformed", f"{type(exc).__name__}: {exc}")
        except (KeyError, TypeError, ValueError) as exc:
            self._dead(record, "undecodable", f"{type(exc).__name__}: {exc}")
        return None

    def _decode(
        self, record: Record
    ) -> tuple[list[Any], dict[str, Any], dict[str, str] | None, dict[str, Any] | None]:
        """A record's arguments, headers and options; group bookkeeping is taken out.

        The decoding limits of ``submit()`` hold here too: a payload over ``max_payload``
        bytes raises ``PayloadTooLarge``, arguments nested over ``MAX_DEPTH`` levels
        ``TooDeeplyNested`` (deeper still, the decoder's ``RecursionError``).
        """
        codec = self.codec
        data = record.payload
        if len(data) > self.settings.max_payload:
            raise PayloadTooLarge(len(data), self.settings.max_payload)
        if getattr(codec, "binds_task", False):
            payload = decode_for(codec, data, record.name, record.id)
        else:
            payload = codec.decode(data)
        args, kwargs, headers = payload["a"], payload["k"], payload.get("h")
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise TypeError("payload must hold a list 'a' and a dict 'k'")
        if headers is not None and not isinstance(headers, dict):
            raise TypeError("payload headers 'h' must be a dict")
        check_depth(args)
        if kwargs:
            check_depth(kwargs.values())
        if headers:
            check_depth(headers.values())
        overrides = json.loads(record.options) if record.options else None
        if overrides is not None and not isinstance(overrides, dict):
            raise TypeError("options must be a JSON object")
        if overrides:
            group = overrides.pop("group", None)
            if group is not None:
                self._group_of[record.id] = str(group)
            for key in ("group_of", "group_policy", "group_check"):
                overrides.pop(key, None)
        return args, kwargs, headers, overrides

    def _dead(self, record: Record, reason: str, error: str) -> None:
        log.error("queue %s: task %s dead-lettered (%s): %s", self.name, record.id, reason, error)
        token = self._claimed.pop(record.id)
        failure_hooks = self.engine._hooks["on_failure"]
        if failure_hooks:  # hooks (metrics) see dead letters too, through a stand-in task
            stand_in = Task._fast(_placeholder(record.name), (), {}, False)
            stand_in._id = record.id
            stand_in._engine = self.engine
            stand_in._status = TaskStatus.DEAD
            stand_in._attempts = record.started - record.crashes
            dead = TaskFailed(error, "dead", reason)
            stand_in._error = dead
            for hook in failure_hooks:
                self.engine._call_hook(hook, stand_in, dead)
        self._settle_out(
            Settlement(record.id, token, Outcome.DEAD, self.clock.now(), error=error, reason=reason)
        )

    def settle(self, task: Task[Any], value: Any, error: BaseException | None, took: float) -> None:
        """Note the attempt's duration and error for the record's history, then settle it."""
        if task.id in self._claimed:
            self._attempt[task.id] = (took, error)
        self.engine.core_settle(task, value, error, took)

    def _attempt_line(self, task_id: str, token: int, outcome: Outcome, now: float) -> str | None:
        """One JSON line for the record's history: when, how long, how it ended and why."""
        took, error = self._attempt.pop(task_id, (None, None))
        if took is None:
            return None
        if error is None:  # the common case, without json.dumps
            return f'{{"n":{token},"start":{now - took!r},"took":{took!r},"outcome":"{outcome}"}}'
        entry: dict[str, Any] = {
            "n": token,
            "start": now - took,
            "took": took,
            "outcome": str(outcome),
            "error": _describe(error),
            "traceback": "".join(traceback.format_exception(error))[-_TRACE_LIMIT:],
        }
        return json.dumps(entry, separators=(",", ":"), default=str)

    def retry_later(self, task: Task[Any], when: float, delay: float, error: BaseException) -> None:
        token = self._claimed.pop(task.id, None)
        self.engine._unfinished -= 1
        if token is not None:
            payload = None
            if getattr(error, "resume", None) is not None:  # store where to resume from
                try:
                    name = self.registry.name_of(task.fn) or task.name
                    check_depth(task.args)
                    check_depth(task.kwargs.values())
                    payload = encode_for(self.codec, _payload_of(task), name, task.id)
                except NotSerializable as exc:
                    log.warning("queue %s: cannot store resume point (%s)", self.name, exc)
                if payload is not None and len(payload) > self.settings.max_payload:
                    log.warning(
                        "queue %s: cannot store resume point (%s)",
                        self.name,
                        PayloadTooLarge(len(payload), self.settings.max_payload),
                    )
                    payload = None
            self._settle_out(
                Settlement(
                    task.id, token, Outcome.RETRY, self.clock.now(), run_at=when,
                    error=_describe(error), payload=payload,
                )
            )  # fmt: skip
        self._freed()
        self._start_held(task.id)

    def finish(
        self,
        task: Task[Any],
        status: TaskStatus,
        value: Any,
        error: BaseException | None,
    ) -> None:
        token = self._claimed.pop(task.id, None)
        if token is not None:
            result = None
            own = task._overrides
            keep = self.settings.keep_result if own is None else own.keep(self.settings.keep_result)
            if status is TaskStatus.SUCCEEDED and keep != 0:
                try:
                    result = self.codec.encode(value)
                except NotSerializable as exc:
                    status, value, error = TaskStatus.FAILED, None, exc
                else:
                    if len(result) > self.settings.max_result:  # fails, nothing of it stored
                        too_big = ResultTooLarge(len(result), self.settings.max_result)
                        status, value, error, result = TaskStatus.FAILED, None, too_big, None
            log_of = _chain_log_of(error)
            if log_of is not None:  # a failed chain keeps its result log in the record
                try:
                    result = self.codec.encode({"chain_log": log_of})
                except NotSerializable:
                    result = None
                if result is not None and len(result) > self.settings.max_result:
                    log.warning(
                        "queue %s: task %s: its chain log (%d bytes) is over max_result; "
                        "not stored",
                        self.name,
                        task.id,
                        len(result),
                    )
                    result = None
            settlement = Settlement(
                task.id,
                token,
                _OUTCOME[status],
                self.clock.now(),
                error=None if error is None else _describe(error),
                result=result,
                keep=keep,
            )
            self._settle_out(settlement)
            self._holding[id(settlement)] = task  # reported once written (see _written)
            self._decide(task, status, value, error)
        elif task.id in self._handed_back:  # cut short by abort(): it runs again elsewhere
            self._holding[id(task)] = task  # never written: see _give_up_unwritten
            self._decide(task, status, value, error)
            if self.engine.closed:
                self._give_up_unwritten()
        else:
            self.engine.core_finish(task, status, value, error)
        self._freed()
        self._start_held(task.id)

    def _decide(
        self, task: Task[Any], status: TaskStatus, value: Any, error: BaseException | None
    ) -> None:
        """Finish a task whose handle waits for the store (see ``_written``).

        Its hooks and after-callback, run now, read the outcome at once; others once written.
        """
        task._unwritten = task._status
        hooks = _deciding.set(task)
        try:
            self.engine.core_finish(task, status, value, error)
        finally:
            _deciding.reset(hooks)

    def done(self, task: Task[Any]) -> None:
        """Wake a finished task's waiters, once the store has its outcome (see ``_written``)."""
        if task._unwritten is not None:
            self._unwoken.add(task)  # woken by _written
        elif task._status.final:  # else its outcome was refused: it waits for the store's
            self.engine.core_done(task)

    def _written(self, settled: list[Settlement], refused: list[str]) -> None:
        """A write of ``settled`` returned: their handles report their outcome from now on.

        One the store refused (another worker took the task over) waits for the outcome the
        store ends with instead, as a handle of another process does.
        """
        holding = self._holding
        if not holding:
            return
        for settlement in settled:
            task = holding.pop(id(settlement), None)
            if task is None:
                continue
            if refused and settlement.id in refused:
                self._overtake(task)
                continue
            task._unwritten = None
            if task in self._unwoken:
                self._unwoken.discard(task)
                self.engine.core_done(task)

    def _overtake(self, task: Task[Any]) -> None:
        """The store did not take this run's outcome: wait for the one it ends with."""
        task._status = task._unwritten or TaskStatus.RUNNING
        task._unwritten = None
        task._value = task._error = None
        self._unwoken.discard(task)
        self._overtaken.add(task)
        self._watched[task.id] = task
        self._start_watcher()

    def _give_up_unwritten(self) -> None:
        """The queue stops before the store had these outcomes: end the waits on them.

        Each handle raises ``OutcomeNotWritten`` (carrying this run's outcome); its status
        stays the store's. The task runs again once its lease expires, unless the write
        went through after all.
        """
        holding, self._holding = self._holding, {}
        for task in holding.values():
            why = (
                f"was handed back to {self.backend!r} when the queue stopped at once; it "
                "runs again on any worker"
                if task.id in self._handed_back
                else f"the queue stopped before {self.backend!r} had that outcome; the task "
                "runs again once its lease expires"
            )
            error = OutcomeNotWritten(
                f"task {task.id} ({task.name}) {task._status.value} here, but {why}",
                task.id,
                task._status.value,
                task._value,
                task._error,
            )
            task._status = task._unwritten or TaskStatus.RUNNING  # then no longer hidden
            task._unwritten = None
            task._value = None
            task._error = error
            self._unwoken.discard(task)
            task._wake_waiters()
        overtaken, self._overtaken = self._overtaken, set()
        for task in overtaken:
            if task._finished:
                continue
            self._watched.pop(task.id, None)
            task._error = OutcomeNotWritten(
                f"task {task.id} ({task.name}): the store refused this run's outcome (another "
                "worker took the task over) and the queue stopped before it had a final one",
                task.id,
            )
            task._wake_waiters()
        for task_id in self._handed_back:  # not started, or still running in a thread
            unfinished = self.engine._by_id.get(task_id)
            if unfinished is None or unfinished._finished or unfinished._status.final:
                continue
            unfinished._error = OutcomeNotWritten(
                f"task {task_id} ({unfinished.name}) was handed back to {self.backend!r} "
                "unfinished when the queue stopped at once; it runs again on any worker",
                task_id,
            )
            unfinished._wake_waiters()

    def _start_held(self, task_id: str) -> None:
        """The run of ``task_id`` here ended: admit the claim of it held meanwhile, if any."""
        held = self._held.get(task_id)
        if not held or task_id in self._claimed:
            return
        record = held.pop(0)
        if not held:
            del self._held[task_id]
        admitting = asyncio.get_running_loop().create_task(self._admit_held(record))
        self.engine._afters.add(admitting)
        admitting.add_done_callback(self.engine._afters.discard)

    async def _admit_held(self, record: Record) -> None:
        await self._admit_one(record)
        self.engine._pump()

    def _held_leases(self) -> list[tuple[str, int]]:
        """The leases of the held claims (see ``_held``)."""
        return [(r.id, r.attempts) for records in self._held.values() for r in records]

    def _hand_back_held(self) -> None:
        """Give the held claims back to the store at once, to run on any worker."""
        now = self.clock.now()
        for task_id, token in self._held_leases():
            self._settle_out(
                Settlement(
                    task_id, token, Outcome.RETRY, now, run_at=now,
                    error="handed back: the worker stopped before it could start it",
                )
            )  # fmt: skip
        self._held.clear()

    # -- starting claimed tasks: the reserved -> running mark ---------------------------------

    def launch(self, task: Task[Any]) -> None:
        """Start a claimed task, unless its lease lapsed; a suspect's start is written first."""
        task_id = task._id
        if task_id is None or task_id not in self._claimed:
            if task_id is not None and task_id in self._dropped:
                self._dropped.discard(task_id)
                return  # given up: its lease lapsed, the store hands it out again
            self.engine.core_launch(task)
            return
        if self._lease_left(task_id) <= 0:
            self._log_lapsed(task_id)
            self._drop(task_id, in_line=False)
            return
        task._start_by = time.monotonic() + self._lease_left(task_id)
        if task_id in self._store_first:
            self._store_first.discard(task_id)
            self.engine._hold(task)
            task._status = TaskStatus.RESERVED
            self._first_line.append(task)
            self._mark_first()
            return
        self.engine.core_launch(task)

    def _mark_first(self) -> None:
        """Write the ``STARTED`` marks of the suspects in ``_first_line``, then start them.

        One write for all of them (the next batch follows the one being written), then they
        start in line order, ahead of the tasks launched after them. A plain function may
        still wait for a thread after its mark: at most the length of an attempt.
        """
        if self._first_marking is not None or not self._first_line:
            return
        batch = list(self._first_line)
        self._first_line.clear()
        loop = asyncio.get_running_loop()
        self._first_marking = loop.create_task(self._launch_marked(batch))

    def _lease_left(self, task_id: str) -> float:
        """Seconds until a claimed task's lease lapses, unless renewed."""
        return self._lease_until.get(task_id, float("inf")) - self._lease_now()

    def lapsed(self, task: Task[Any]) -> None:
        """A staged task's lease lapsed before a thread could start it: give it up."""
        if task._id is not None:
            self._drop(task._id, in_line=False)
        self._log_lapsed(task._id)

    def _log_lapsed(self, task_id: str | None) -> None:
        log.warning(
            "queue %s: task %s not started: its lease lapsed while it waited here",
            self.name, task_id,
        )  # fmt: skip

    async def _launch_marked(self, batch: list[Task[Any]]) -> None:
        """Write suspects' ``STARTED`` marks, then start them (a crash now is charged to them)."""
        now = self.clock.now()
        marks = [
            Settlement(t._id, self._claimed[t._id], Outcome.STARTED, now)
            for t in batch
            if t._id is not None and t._id in self._claimed
        ]
        refused: set[str] = set()
        try:
            refused = set(await self.backend.settle(marks))
        except BackendError as exc:  # start anyway: the lease still protects the tasks
            ids = ", ".join(m.id for m in marks)
            log.warning("queue %s: cannot record the start of %s (%r)", self.name, ids, exc)
        finally:
            self._first_marking = None
        for task in batch:
            task_id = task._id
            assert task_id is not None
            if (
                task._status.final
                or task._runner is _CANCEL
                or task_id in refused
                or (task_id not in self._claimed)
            ):
                self.engine._inflight -= 1
                self.engine._active -= 1
                self.engine._running.discard(task)
                if not task._status.final:
                    if task_id in refused or task_id not in self._claimed:
                        self._drop(task_id)
                    else:
                        self.settle(task, None, None, 0.0)  # cancelled while being marked
                continue
            self._begun.add(task_id)  # its mark is written: _on_start writes none
            self.engine._go(task)
        self._mark_first()
        self.engine._pump()

    def on_start(self, task: Task[Any]) -> None:
        """Record that a claimed attempt started, with the next write (``_MARK_DELAY``)."""
        task_id = task._id
        if task_id is None or task_id not in self._claimed or task_id in self._begun:
            return
        self._begun.add(task_id)
        self._marks[task_id] = self._claimed[task_id]
        if self._marking is None:
            loop = asyncio.get_running_loop()
            self._marking = loop.call_later(_MARK_DELAY, self._write_marks)

    def _write_marks(self) -> None:
        """Queue the ``STARTED`` marks of attempts still running after ``_MARK_DELAY``."""
        self._marking = None
        if not self._marks:
            return
        now = self.clock.now()
        marks, self._marks = self._marks, {}
        self._outbox.extend(Settlement(i, t, Outcome.STARTED, now) for i, t in marks.items())
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    def _drop(self, task_id: str, in_line: bool = True) -> None:
        """Give up a claimed task that did not start (its lease lapsed): never start it here.

        ``in_line``: the task is still in the ready line, to be skipped when it comes up.
        """
        if self._claimed.pop(task_id, None) is None:
            return
        self._lease_until.pop(task_id, None)
        self._store_first.discard(task_id)
        self._suspects.discard(task_id)
        self._group_of.pop(task_id, None)
        if in_line:
            self._dropped.add(task_id)
        self.engine._unfinished -= 1
        task = self.engine._by_id.get(task_id)
        if task is not None and not task._status.final:
            task._status = TaskStatus.PENDING  # back in the store, for any worker
        self._freed()

    def _renewed(self, ids: list[str], lost: list[str], until: float) -> None:
        """After a heartbeat: note the new lease ends; give up lost tasks not started yet."""
        gone = set(lost)
        for task_id in ids:
            if task_id in gone or task_id not in self._claimed:
                continue
            self._lease_until[task_id] = until
            task = self.engine._by_id.get(task_id)
            if task is not None and task._status is TaskStatus.RESERVED:  # (not started here)
                task._start_by = time.monotonic() + self._lease_left(task_id)
        for task_id in lost:
            task = self.engine._by_id.get(task_id)
            if task is not None and task._status is TaskStatus.RESERVED and task._runner:
                task._start_by = 0.0  # waiting for a thread: the thread gives it up (LAPSED)
            elif task_id not in self._begun:
                self._drop(task_id)

    def _freed(self) -> None:
        slot = self._slot_free
        if slot is not None:
            slot.set()

    def progress_changed(self, task: Task[Any]) -> None:
        """Tell the hooks, and store the latest report so other processes can read it."""
        self.engine.core_progress_changed(task)
        progress = task._progress
        if progress is not None:
            self.engine.call_on_loop(self._progress_to_store, task.id, encode_progress(progress))

    def _progress_to_store(self, task_id: str, text: str) -> None:
        token = self._claimed.get(task_id)
        if token is None:  # not running here (any more): nothing to store
            return
        self._progress_out[task_id] = (token, text)  # only the latest report is written
        if self._progressing is None or self._progressing.done():
            self._progressing = asyncio.get_running_loop().create_task(self._flush_progress())

    async def _flush_progress(self) -> None:
        while self._progress_out:
            batch, self._progress_out = self._progress_out, {}
            try:
                await self.backend.progress([(i, t, p) for i, (t, p) in batch.items()])
            except BackendError as exc:  # progress is advisory: log, do not retry forever
                log.warning("queue %s: cannot store progress (%r)", self.name, exc)
                return

    def _settle_out(self, settlement: Settlement) -> None:
        task_id = settlement.id
        self._marks.pop(task_id, None)  # the outcome counts the start
        self._store_first.discard(task_id)
        self._lease_until.pop(task_id, None)
        if task_id in self._begun:
            self._begun.discard(task_id)
        else:
            settlement.ran = False
        settlement.attempt = self._attempt_line(
            settlement.id, settlement.token, settlement.outcome, settlement.now
        )
        minute = minute_of(settlement.now)
        counts = self._finished_counts.get(minute)
        if counts is None:  # a process that never beats (dispatch) keeps the last hour only
            counts = self._finished_counts[minute] = {}
            if len(self._finished_counts) > STATS_MINUTES:
                del self._finished_counts[min(self._finished_counts)]
        outcome = str(settlement.outcome)
        counts[outcome] = counts.get(outcome, 0) + 1
        self._outbox.append(settlement)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            await self._flush_outbox()
        except asyncio.CancelledError:  # the loop closes under it: nothing will write them
            self._give_up_unwritten()
            raise

    async def _flush_outbox(self) -> None:
        failures = 0
        while self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                refused = await self.backend.settle(batch)
            except BackendError as exc:
                self._outbox[:0] = batch  # keep them; the lease protects the tasks meanwhile
                failures += 1
                delay = min(10.0, 0.05 * 2 ** min(failures, 8))
                log.warning(
                    "queue %s: cannot settle (%r); retrying in %.2fs", self.name, exc, delay
                )
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # not the store: an outcome it cannot take
                refused = await self._settle_apart(batch, exc)
            else:
                self._written(batch, refused)
            if refused:
                marks = {s.id for s in batch if s.outcome is Outcome.STARTED}
                refused = [i for i in refused if i not in marks]
            if refused:
                self.refused += len(refused)
                log.warning(
                    "queue %s: %d outcome(s) refused: the lease was lost (another worker "
                    "took the task over)",
                    self.name,
                    len(refused),
                )
            self._due_later(batch, refused)
            if self._group_of:
                await self._release_groups(batch, refused)

    async def _settle_apart(self, batch: list[Settlement], exc: Exception) -> list[str]:
        """Settle a batch one by one after it failed as a whole (not for the store's sake).

        So one bad outcome cannot hold back the rest; one that fails alone is logged and
        dropped (its task runs again when its lease expires).
        """
        log.warning("queue %s: settling %d outcome(s) apart (%r)", self.name, len(batch), exc)
        refused: list[str] = []
        for settlement in batch:
            try:
                refused += await self.backend.settle([settlement])
            except BackendError:
                self._outbox.append(settlement)  # the store: written with the next batch
                continue
            except Exception as alone:
                log.error("queue %s: cannot settle task %s (%r)", self.name, settlement.id, alone)
                self._written([settlement], [settlement.id])  # it runs again: wait for that
                continue
            self._written([settlement], refused)
        return refused

    def _due_later(self, settled: list[Settlement], refused: list[str]) -> None:
        """Arm a timer for the retries just written: an idle worker must start them on time.

        A worker waits for a push or its next maintenance; a retry written after it began to
        wait is not a push, so without this it would start up to ``maintenance`` seconds late.
        """
        if not self.engine.serving or getattr(self.backend, "wake", None) is None:
            return
        for s in settled:
            if s.outcome is Outcome.RETRY and s.run_at is not None and s.id not in refused:
                heapq.heappush(self._due_times, s.run_at)
        if self._due_times:
            first = self._due_times[0]
            if self._due_timer is None or first < self._due_at:
                if self._due_timer is not None:
                    self._due_timer.cancel()
                self._due_at = first
                self._due_timer = self.clock.call_at(first, self._due)

    _due_at = 0.0

    def _due(self) -> None:
        """Retries fell due: wake an idle worker (of any process) to claim them."""
        self._due_timer = None
        now = self.clock.now()
        at = None
        while self._due_times and self._due_times[0] <= now:
            at = heapq.heappop(self._due_times)
        if at is not None and self.engine.serving:
            waking = asyncio.get_running_loop().create_task(self._wake(at))
            self.engine._afters.add(waking)
            waking.add_done_callback(self.engine._afters.discard)
        if self._due_times:
            self._due_at = self._due_times[0]
            self._due_timer = self.clock.call_at(self._due_at, self._due)

    async def _wake(self, at: float) -> None:
        try:
            await self.backend.wake(self.name, at)  # type: ignore[attr-defined]
        except BackendError as exc:  # the worker's own timeout covers it, later
            log.debug("queue %s: cannot wake a worker (%r)", self.name, exc)

    async def _release_groups(self, settled: list[Settlement], refused: list[str]) -> None:
        """Release the callbacks of groups whose last member was just settled here."""
        callbacks = set()
        for s in settled:
            if s.outcome is Outcome.STARTED:
                continue
            callback = self._group_of.pop(s.id, None)
            if callback is not None and s.outcome is not Outcome.RETRY and s.id not in refused:
                callbacks.add(callback)
        if not callbacks:
            return
        try:
            ready = []
            for held in await self.backend.get(sorted(callbacks)):
                if held.status not in WAITING or not held.options:
                    continue
                members = json.loads(held.options).get("group_of") or []
                states = await self.backend.get(members)
                if all(state.status in _FINISHED for state in states):
                    ready.append(held.id)
            if ready:
                await self.backend.release(ready, self.clock.now())
        except (BackendError, ValueError) as exc:  # the callback checks by itself later
            log.warning("queue %s: cannot release group callbacks (%r)", self.name, exc)

    def _lease_now(self) -> float:
        """Now on the store's clock, which every worker's leases share (see ``_sync_clock``)."""
        return self.clock.now() + self._offset

    async def _sync_clock(self) -> None:
        """Measure how far the store's clock (Redis ``TIME``) is from ours, once a minute.

        Leases are granted, renewed and reaped on that shared clock, so a worker whose clock
        is off does not expire its peers' leases early or keep dead ones alive. Offsets under
        50 ms are ignored, and only a real clock is corrected (a fake one is the test's).
        """
        server_time = getattr(self.backend, "server_time", None)
        if server_time is None or not isinstance(self.clock, SystemClock):
            return
        before = self.clock.now()
        server = float(await server_time())
        offset = server - (before + self.clock.now()) / 2  # the round trip halved
        self._offset = offset if abs(offset) >= 0.05 else 0.0

    async def _maintain(self, now: float) -> None:
        settings = self.settings
        check_store = getattr(self.backend, "check_store", None)
        if check_store is not None:  # SQLite: the file at the path is still the one opened
            await check_store()
        if now >= self._next_clock_sync:
            self._next_clock_sync = now + 60.0
            await self._sync_clock()
        leases = list(self._claimed.items())
        if leases:
            renew = self.backend.heartbeat(leases, now, settings.lease)
            lost, cancel = await self._unless_full(renew, ([], []))
            lost = [i for i in lost if i in self._claimed]  # not those settled meanwhile
            self._renewed([i for i, _ in leases], lost, now + settings.lease)
            for task_id in cancel:
                task = self.engine._by_id.get(task_id)
                if task is not None and not task._status.final:
                    self.engine.cancel_task(task)
            if lost:
                log.warning("queue %s: lost the lease of %d task(s)", self.name, len(lost))
        held = self._held_leases()
        if held:  # apart: the id of each is in _claimed too, under another token
            gone, _ = await self.backend.heartbeat(held, now, settings.lease)
            for task_id in gone:  # another worker has it now
                self._held.pop(task_id, None)
        if self.engine.serving:
            await self._unless_full(self._beat(now, settings.lease), None)
        # One step a call: a store full for one step (the beat) must not stop the next.
        reap = self.backend.upkeep(Upkeep(self.name, now, crash_budget=settings.crash_budget))
        reaped = await self._unless_full(reap, Upkept())
        if reaped.requeued or reaped.dead:
            log.warning(
                "queue %s: requeued %d task(s) whose worker stopped; dead-lettered %d",
                self.name,
                reaped.requeued,
                reaped.dead,
            )
        if now >= self._next_purge:
            self._next_purge = now + settings.purge_every
            await self.backend.upkeep(Upkeep(self.name, now, purge=True))

    async def _unless_full(self, step: Coroutine[Any, Any, T], default: T) -> T:
        """Run a maintenance step, or skip it with a warning if the store is full.

        A store refusing writes for lack of room (``BackendFull``) must not stop the other
        steps, nor the claims and settlements that drain it.
        """
        try:
            return await step
        except BackendFull as exc:
            log.warning("queue %s: store full, maintenance step skipped (%s)", self.name, exc)
            return default

    async def _beat(self, now: float, ttl: float) -> None:
        """Tell the store this worker is alive, what it runs, and what it finished."""
        host, pid, _ = self.owner.rsplit(":", 2)
        running = []
        for task_id in self._claimed:
            task = self.engine._by_id.get(task_id)
            if task is not None:
                running.append([task_id, self.registry.name_of(task.fn) or task.name])
            if len(running) == 20:
                break
        schedules = [
            {
                "name": s.name,
                "trigger": repr(s.trigger),
                "next_run": s._next,
                "runs": s.runs,
            }
            for s in self.engine._schedules
            if s.active
        ]
        beat = WorkerBeat(
            id=self.owner,
            queue=self.name,
            host=host,
            pid=int(pid),
            started_at=self._serving_since,
            seen_at=now,
            concurrency=self.engine.concurrency,
            held=len(self._claimed),
            running=running,
            schedules=schedules,
        )
        finished, self._finished_counts = self._finished_counts, {}
        try:
            await self.backend.upkeep(Upkeep(self.name, now, beat=beat, ttl=ttl, finished=finished))
        except BaseException:
            for minute, counts in finished.items():  # keep them for the next beat
                mine = self._finished_counts.setdefault(minute, {})
                for outcome, n in counts.items():
                    mine[outcome] = mine.get(outcome, 0) + n
            raise

    async def _leave(self) -> None:
        """Remove this worker's beat from the store (it stopped), keeping its last counts."""
        if not self._serving_since:
            return
        self._serving_since = 0.0
        with contextlib.suppress(Exception):
            await self._beat(self.clock.now(), 0.0)

    # -- waiting for results from other workers --------------------------------------------

    def watch(self, task: Task[Any]) -> None:
        """Poll the backend for the outcome of ``task`` while someone waits for it.

        Not a task that finished here: its outcome is on its way to the store, and its
        handle is woken once written.
        """
        if task._status.final:
            return
        if self.engine.closed:  # nothing polls the store any more
            self._stopped_watching(task)
            return
        self._watched[task.id] = task
        loop = self.engine.ensure_loop()
        loop.call_soon_threadsafe(self._start_watcher)

    def _end_watches(self) -> None:
        """The queue stops: end the waits on tasks run elsewhere (nothing will poll for them)."""
        for task in list(self._watched.values()):
            if not (task._finished or task._status.final):
                self._stopped_watching(task)
        self._watched.clear()

    def _stopped_watching(self, task: Task[Any]) -> None:
        task._error = QueueShuttingDown(
            f"queue {self.name!r} is shut down: it no longer reads task {task.id}'s outcome "
            "from the store; read it through a running queue (queue.get(id))"
        )
        task._wake_waiters()

    def _start_watcher(self) -> None:
        self._watch_pause = 0.002  # a new waiter: poll fast again
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch_loop())

    async def _watch_loop(self) -> None:
        self._watch_pause = 0.002  # poll fast at first, then back off to the maintenance pace
        while self._watched:
            ids = [i for i, t in self._watched.items() if not (t._finished or t._status.final)]
            try:
                records = await self.backend.get(ids) if ids else []
            except BackendError as exc:
                log.warning("queue %s: cannot poll results (%r)", self.name, exc)
                records = []
            found = {r.id: r for r in records}
            for task_id in list(self._watched):
                task = self._watched[task_id]
                if task._finished or task._status.final or task_id in self._claimed:
                    if task._finished:  # (a final one finished here: woken once written)
                        del self._watched[task_id]
                        self._overtaken.discard(task)
                    continue
                record = found.get(task_id)
                if record is None and task_id in ids and task_id not in self._pushing:
                    self._gone(task)  # its record vanished: nothing will ever finish it
                if record is not None:
                    self._apply(task, record)
                if task._finished:
                    del self._watched[task_id]
                    self._overtaken.discard(task)
                    self._watch_pause = 0.002
            await asyncio.sleep(self._watch_pause)
            self._watch_pause = min(self._watch_pause * 2, 0.05, self.settings.maintenance)

    def _gone(self, task: Task[Any]) -> None:
        """End the wait on a task whose record is not in the store: raise ``TaskGone``."""
        task._error = TaskGone(
            f"task {task.id} has no record in {self.backend!r} any more: it finished and was "
            "not kept (keep_result=0), was purged, or the store was wiped; its outcome is unknown"
        )
        task._wake_waiters()

    def _apply(self, task: Task[Any], record: Record) -> None:
        """Copy a record's state into a local handle; wake waiters if it is final."""
        status = TaskStatus(record.status)
        task._attempts = record.started - record.crashes
        task._deliveries = record.attempts
        if record.progress is not None:
            task._progress = decode_progress(record.progress)
        if not status.final:
            task._status = status
            leased = status in (TaskStatus.RUNNING, TaskStatus.RESERVED)
            task._next_attempt = None if leased else record.run_at
            return
        task._status = status
        if status is TaskStatus.SUCCEEDED:
            try:
                task._value = None if record.result is None else self.codec.decode(record.result)
            except DecodeError as exc:
                task._status = TaskStatus.FAILED
                task._error = exc
        else:
            task._error = TaskFailed(record.error or status.value, record.status, record.reason)
        task._wake_waiters()

    def lookup(self, task_id: str) -> Task[Any] | None:
        """Find a task by id here or in the backend (blocking; not on the loop)."""
        local = self.engine._by_id.get(task_id)
        if local is not None and local.done:
            return local
        return self.engine.run_on_home(self._alookup(task_id))

    async def _alookup(self, task_id: str) -> Task[Any] | None:
        """``lookup`` on the loop, where a task this process runs cannot change under it."""
        local = self.engine._by_id.get(task_id)
        if local is not None and (local._status.final or task_id in self._claimed):
            return local  # finished or running here (its outcome may still be on its way)
        records = await self.backend.get([task_id])
        local = self.engine._by_id.get(task_id)
        if local is not None and (local._status.final or task_id in self._claimed):
            return local  # claimed by this process while we read
        if not records:
            return local
        record = records[0]
        task = local
        if task is None:
            entry = self.registry.get(record.name)
            fn: Any = entry.fn if entry is not None else _placeholder(record.name)
            task = Task._fast(fn, (), {}, False)
            task._id = record.id
            task._engine = self.engine
            task._frozen = True
        self._apply(task, record)
        return task

    def chain_log(self, task_id: str) -> Any:
        """Read a chained job's result log from its stored record (blocking)."""
        from .chain import ChainLog

        records = self.engine.run_on_home(self.backend.get([task_id]))
        if not records or records[0].result is None:
            return None
        try:
            data = self.codec.decode(records[0].result)
        except DecodeError:
            return None
        if isinstance(data, dict) and isinstance(data.get("chain_log"), dict):
            return ChainLog.from_dict(data["chain_log"])
        return None

    # -- cancel ------------------------------------------------------------------------------

    def cancel_handle(self, task: Task[Any]) -> bool:
        """Cancel by id in the backend (any process's task); True unless it had finished."""
        return self.engine.run_on_home(self._acancel(task))

    async def acancel_handle(self, task: Task[Any]) -> bool:
        """``cancel_handle`` from any event loop."""
        return await self.engine.arun_on_home(self._acancel(task))

    async def _acancel(self, task: Task[Any]) -> bool:
        if task._status.final:  # finished here, its outcome maybe still on its way to the store
            return False
        if task.id in self._claimed:
            return self.engine.cancel_task(task)
        answer = await self.backend.cancel(task.id, self.clock.now())
        if answer == "cancelled":
            task._status = TaskStatus.CANCELLED
            task._error = TaskFailed("cancelled", "cancelled")
            task._wake_waiters()
        return answer in ("cancelled", "requested")

    # -- driving by hand and stopping ------------------------------------------------------

    async def dispatch(self) -> bool:
        """Claim every due task once, run them, write the outcomes; say if work remains."""
        if self.engine.serving:
            raise RuntimeError("dispatch() drives a queue by hand; this queue is running")
        now = self.clock.now()
        await self._maintain(now)
        claimed = await self.backend.claim(self._claim_request(now, 10_000))
        await self._admit(claimed)
        batch = list(self.engine._ready)
        self.engine._ready.clear()
        await self.engine._run_batch(batch)
        await self._drain_outbox()
        counts = await self.backend.counts(self.name)
        return any(counts.get(s, 0) for s in ("pending", "scheduled", "retrying", "running"))

    async def next_due(self) -> tuple[float, bool] | None:
        """When the store's next waiting task is due (``dispatch()`` fires no schedules)."""
        due = await self.backend.next_due(self.name)
        return None if due is None else (due, True)

    async def wait_stopped(self) -> None:
        """Wait until stopped and the running attempts ended, then write their outcomes."""
        await self.engine.core_wait_stopped()
        if self._fetcher is not None and not self._fetcher.done():
            self._fetcher.cancel()
            await asyncio.gather(self._fetcher, return_exceptions=True)
        await self._drain_outbox()

    async def _drain_outbox(self) -> None:
        progressing = self._progressing
        if progressing is not None and not progressing.done():
            await asyncio.shield(progressing)  # the last progress reports, then the outcomes
        while self._outbox or (self._flushing is not None and not self._flushing.done()):
            if self._flushing is None or self._flushing.done():
                self._flushing = asyncio.get_running_loop().create_task(self._flush())
            await asyncio.shield(self._flushing)

    def has_work(self) -> bool:
        """Whether this process holds claimed tasks."""
        return bool(self._claimed)

    #: The warm shutdown in progress (``shutdown()``'s asyncio task), which ``abort()`` ends.
    _stopping: asyncio.Task[Any] | None = None
    #: Set by ``abort()``: the warm shutdown it interrupts returns False instead of raising.
    _aborting = False
    #: Done when ``abort()`` has finished: the warm shutdown it ended returns only then, so
    #: that its caller does not stop the loop under it.
    _aborted: asyncio.Future[None] | None = None

    async def shutdown(self, timeout: float | None) -> bool:
        """Stop claiming, let running attempts finish, write their outcomes, then stop.

        Tasks still waiting in the backend stay there for other (or later) workers. An
        ``abort()`` meanwhile (a second signal) ends it: it then returns False, and ``abort``
        writes what is left.
        """
        self.engine.accepting = False
        if self.engine.closed:
            return True
        self._stopping = asyncio.current_task()
        try:
            return await self._shut_down(timeout)
        except asyncio.CancelledError:
            if not self._aborting:
                raise
            self._stopping = None
            if self._aborted is not None:  # abort() took over: it records outcomes, hands back
                await asyncio.shield(self._aborted)
            return False
        finally:
            self._stopping = None

    async def _shut_down(self, timeout: float | None) -> bool:
        clean = True
        if self.engine.serving:
            self.engine.serving = False
            self._freed()
            if self._due_timer is not None:
                self._due_timer.cancel()
            if self._fetcher is not None:
                self._fetcher.cancel()
                await asyncio.gather(self._fetcher, return_exceptions=True)
            try:
                async with asyncio.timeout(timeout):
                    while self.engine._active or self.engine._afters:
                        await self._quiet_or_after()
            except TimeoutError:
                clean = False
                for task in list(self.engine._running):
                    self.engine.cancel_task(task)
        if self._held:
            self._hand_back_held()
        await self._drain_outbox()
        await self._leave()
        if self._watcher is not None:
            self._watcher.cancel()
        self.engine.halt()
        self.engine._close()
        self._give_up_unwritten()  # none once the outbox drained, but for handles overtaken
        self._end_watches()  # (after: a handle given up above says why, more precisely)
        if self.owns_backend:
            with contextlib.suppress(BackendError):
                await self.backend.close()
        return clean

    async def abort(self) -> list[Any]:
        """Stop at once (a second signal): nothing to dump, the store keeps every task.

        Attempts whose function already returned are settled with their real outcome; every
        other claimed task (running, or waiting to start) is handed back to the store at once,
        to run again on any worker without waiting for its lease. No new attempt starts once
        this begins, and a warm shutdown in progress is ended (it returns False). Writes to an
        unreachable store are given up after ``_ABORT_WRITES`` seconds: those tasks run again
        when their lease expires.
        """
        self._aborting = True
        self.engine.accepting = False
        self.engine.serving = False
        # Launch nothing more, not even prefetched tasks.
        self.engine._launch_from = collections.deque()
        aborted = self._aborted = asyncio.get_running_loop().create_future()
        try:
            await self._abort()
        finally:
            aborted.set_result(None)
        return []

    async def _abort(self) -> None:
        stopping = self._stopping
        if stopping is not None and stopping is not asyncio.current_task():
            stopping.cancel("dowork: stopped at once")  # it waits for us, then returns False
        if self.engine.closed:  # the warm shutdown had finished everything
            return
        if self._fetcher is not None:
            self._fetcher.cancel()
            await asyncio.gather(self._fetcher, return_exceptions=True)
        lane = self.engine._threads
        if lane is not None:
            lane._drain()  # functions that returned but whose outcome was not taken in yet
        now = self.clock.now()
        handed = list(self._claimed.items()) + self._held_leases()
        self._handed_back.update(task_id for task_id, _ in handed)
        self._claimed.clear()
        self._held.clear()
        for task_id, token in handed:
            self._settle_out(
                Settlement(
                    task_id, token, Outcome.RETRY, now, run_at=now,
                    error="handed back: the worker was stopped at once",
                )
            )  # fmt: skip
        for task in list(self.engine._running):
            self.engine.cancel_task(task)
        written = await self._bounded(self._drain_outbox(), "write outcomes and hand-backs")
        if handed:
            log.warning(
                "queue %s: stopped at once: %s %d unfinished task(s) back to %r; they run "
                "again on any worker%s",
                self.name,
                "handed" if written else "could not hand",
                len(handed),
                self.backend,
                "" if written else " once their lease expires",
            )
        await self._bounded(self._leave(), "remove this worker's heartbeat")
        if self._watcher is not None:
            self._watcher.cancel()
        self.engine.halt()
        self.engine._close()
        self._give_up_unwritten()  # the outcomes it could not write in time
        self._end_watches()  # (after: a handle given up above says why, more precisely)
        if self.owns_backend:
            await self._bounded(self.backend.close(), "close the store")

    async def _bounded(self, step: Coroutine[Any, Any, None], what: str) -> bool:
        """Run one step of ``abort()`` for at most ``_ABORT_WRITES`` seconds; say if it ended."""
        try:
            async with asyncio.timeout(_ABORT_WRITES):
                await step
        except TimeoutError:
            log.warning(
                "queue %s: stopping at once: could not %s within %gs (is %r reachable?)",
                self.name,
                what,
                _ABORT_WRITES,
                self.backend,
            )
            return False
        except Exception as exc:
            log.warning("queue %s: stopping at once: could not %s (%r)", self.name, what, exc)
            return False
        return True

    async def _quiet_or_after(self) -> None:
        if self.engine._active:
            quiet = asyncio.get_running_loop().create_future()
            self.engine._quiet.append(quiet)
            await quiet
        elif self.engine._afters:
            await asyncio.gather(*self.engine._afters, return_exceptions=True)


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


_TRACE_LIMIT = 8000  #: characters of a traceback kept in a record's history
_ABORT_WRITES = 5.0  #: seconds a forced stop waits for each of its writes to the store


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
