"""The durable engine: the same engine, with tasks kept in a backend instead of in memory.

Producers encode a task (registered name + codec bytes) and push it; the call returns once
the backend confirmed the write. Workers claim due records in batches under a lease, run them
on the same lanes as in-memory tasks, and settle each attempt with one ``Settlement`` written
in batches. A maintenance step renews leases (the heartbeat), requeues the leases of workers
that died (the reaper) and purges finished records past their retention. Delivery is
at-least-once: a task whose worker dies runs again after its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._engine import Engine
from .backends._protocol import Backend, Outcome, Record, Settlement
from .codec import Codec
from .errors import (
    BackendError,
    DecodeError,
    DuplicateTask,
    MaxRetriesExceeded,
    NotRegistered,
    NotSerializable,
    TaskFailed,
)
from .registry import Registry
from .task import Task, TaskStatus, build_policy

if TYPE_CHECKING:
    from .function import TaskFunction
    from .scheduling import Schedule

__all__ = ["BackendEngine", "DurableSettings"]

log = logging.getLogger("dowork")

_OUTCOME = {
    TaskStatus.SUCCEEDED: Outcome.SUCCEEDED,
    TaskStatus.FAILED: Outcome.FAILED,
    TaskStatus.CANCELLED: Outcome.CANCELLED,
    TaskStatus.DEAD: Outcome.DEAD,
}
#: Per-enqueue options a durable record can carry (callables cannot be stored).
_STORABLE = ("retries", "backoff", "base_delay", "max_delay", "jitter", "keep_result")


@dataclass(frozen=True, slots=True)
class DurableSettings:
    """Lease and maintenance timing of a durable queue (seconds of the queue's clock).

    Attributes:
        lease: how long a claimed task belongs to its worker without a renewal; a task whose
            worker died runs again between ``lease`` and ``lease + maintenance`` later.
        maintenance: how often leases are renewed and expired ones requeued.
        crash_budget: lease expiries after which a task is dead-lettered (``crashed_worker``)
            instead of being run again.
        batch: most records claimed at once.
        prefetch: claimed tasks a worker may hold beyond ``concurrency``, waiting to start
            (leased, so no other worker takes them); more means fewer round trips per task.
        keep_result: seconds a finished record stays readable (``None``: the backend's
            default, ``0``: not stored at all).
        purge_every: how often finished records past their retention are deleted.
        max_running: most tasks of the queue running at once across *all* worker processes
            (gotasks' ``WithMaxLimit``), enforced by the backend at claim time.
    """

    lease: float = 30.0
    maintenance: float = 5.0
    crash_budget: int = 3
    batch: int = 64
    prefetch: int = 32
    keep_result: float | None = None
    purge_every: float = 60.0
    max_running: int | None = None

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


class BackendEngine(Engine):
    """An ``Engine`` whose tasks live in a ``Backend``; see the module docstring."""

    durable = True

    def __init__(
        self,
        name: str,
        *,
        backend: Backend,
        codec: Codec,
        registry: Registry,
        settings: DurableSettings,
        owns_backend: bool = False,
        **engine_options: Any,
    ) -> None:
        super().__init__(name, **engine_options)
        self.backend = backend
        self.codec = codec
        self.registry = registry
        self.settings = settings
        self.owns_backend = owns_backend  # built from a URL: closed at shutdown
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._claimed: dict[str, int] = {}  # id -> lease token
        self._outbox: list[Settlement] = []
        self._flushing: asyncio.Task[None] | None = None
        self._fetcher: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._watched: dict[str, Task[Any]] = {}
        self._watch_pause = 0.002
        self._slot_free: asyncio.Event | None = None
        self._next_purge = 0.0
        #: Settlements refused because the lease had been lost (counted, never hidden).
        self.refused = 0

    # -- producing -------------------------------------------------------------------------

    def prepare(self, task: Task[Any], now: float | None = None) -> Record:
        """Check and encode a task for the backend, in the caller's thread.

        ``now`` (default: the clock) is the creation time; a batch shares one, so that the
        backend can store its records as one run.

        Raises:
            NotRegistered: the function is not a task registered with this queue.
            NotSerializable: the arguments or options cannot be stored.
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
        options = None
        overrides = task._overrides
        if overrides is not None and overrides is not template._overrides:
            options = self._encode_options(overrides, task._within)
        elif task._within is not None and task._within != template._within:
            options = self._encode_options({}, task._within)
        payload = self.codec.encode({"a": list(task.args), "k": dict(task.kwargs)})
        if now is None:
            now = self.clock.now()
        run_at = now
        if task._not_before is not None:
            run_at = max(run_at, task._not_before)
        if task._delay is not None:
            run_at = max(run_at, now + task._delay)
        return Record(
            id=task.id,
            queue=self.name,
            name=name,
            payload=payload,
            run_at=run_at,
            created_at=now,
            status="pending" if run_at <= now else "scheduled",
            options=options,
        )

    def _encode_options(self, overrides: Mapping[str, Any], within: float | None) -> str:
        stored: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in _STORABLE:
                raise NotSerializable(
                    f"option {key!r} cannot be stored with a durable task; set it on the task "
                    "function (@queue.task(...)) instead"
                )
            stored[key] = str(value) if key == "backoff" else value
        if within is not None:
            stored["within"] = within
        try:
            return json.dumps(stored, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise NotSerializable(f"task options cannot be stored: {exc}") from exc

    def enqueue(self, task: Task[Any]) -> None:
        """Encode, push and wait for the backend's confirmation (any thread but the loop's)."""
        fresh = task._id is None  # its id is drawn now: no need to check it is free
        record = self.prepare(task)
        task._engine = self
        if self.on_loop():  # e.g. a task submitting another: cannot block here
            loop = asyncio.get_running_loop()
            pushing = loop.create_task(self._push_record(task, record))
            self._afters.add(pushing)
            pushing.add_done_callback(self._afters.discard)
            return
        if not self._push_here([task], [record], fresh):
            self.run_on_home(self._push_record(task, record))

    def enqueue_many(self, tasks: list[Task[Any]]) -> None:
        """Encode all, then push them in one atomic batch (one round trip)."""
        now = self.clock.now()
        fresh = all(task._id is None for task in tasks)
        records = [self.prepare(task, now) for task in tasks]
        for task in tasks:
            task._engine = self
        if not self._push_here(tasks, records, fresh):
            self.run_on_home(self._push_batch(tasks, records))

    def _push_here(self, tasks: list[Task[Any]], records: list[Record], fresh: bool) -> bool:
        """Push from the calling thread, without a hop to the home loop, if possible.

        Needs a backend with ``push_sync``; returns False (nothing done) without one, or when
        enqueue hooks must run on the loop. ``fresh``: every id was drawn at random just now,
        so the backend need not check that it is free. The handles are registered first, so
        that this process's worker, claiming a task before the call returns, runs the
        caller's handle.
        """
        push_sync = getattr(self.backend, "push_sync", None)
        if push_sync is None or self._h_enqueue:
            return False
        if len(tasks) == 1:  # submit(): the same, without the loops
            task, record = tasks[0], records[0]
            status = task._status
            if record.status == "scheduled":
                task._status = TaskStatus.SCHEDULED
                task._next_attempt = record.run_at
            else:
                task._status = TaskStatus.PENDING
            self._by_id[record.id] = task
            try:
                if push_sync(records, fresh=fresh):
                    return True
            except BaseException:
                self._by_id.pop(record.id, None)
                task._status = status
                raise
            self._by_id.pop(record.id, None)
            task._status = status
            return False
        previous = [task._status for task in tasks]
        for task, record in zip(tasks, records, strict=True):
            if record.status == "scheduled":
                task._status = TaskStatus.SCHEDULED
                task._next_attempt = record.run_at
            else:
                task._status = TaskStatus.PENDING
            self._by_id[record.id] = task
        try:
            pushed = bool(push_sync(records, fresh=fresh))
        except BaseException:
            pushed = False
            raise
        finally:
            if not pushed:
                for task, record, status in zip(tasks, records, previous, strict=True):
                    self._by_id.pop(record.id, None)
                    task._status = status
        return pushed

    async def aenqueue_many(self, tasks: list[Task[Any]]) -> None:
        """``enqueue_many`` from async code."""
        now = self.clock.now()
        records = [self.prepare(task, now) for task in tasks]
        for task in tasks:
            task._engine = self
        await self.arun_on_home(self._push_batch(tasks, records))

    async def _push_batch(self, tasks: list[Task[Any]], records: list[Record]) -> None:
        await self.backend.push(records)
        for task, record in zip(tasks, records, strict=True):
            if record.status == "scheduled":
                task._status = TaskStatus.SCHEDULED
                task._next_attempt = record.run_at
            else:
                task._status = TaskStatus.PENDING
            self._by_id[record.id] = task
            if self._h_enqueue:
                self._call_hooks(self._h_enqueue, task)

    async def aenqueue(self, task: Task[Any]) -> None:
        """Encode and push from async code; returns once the backend confirmed."""
        record = self.prepare(task)
        task._engine = self
        await self.arun_on_home(self._push_record(task, record))

    async def _push_record(self, task: Task[Any], record: Record) -> None:
        await self._push_batch([task], [record])

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
        digest = hashlib.sha1(
            f"{record.name}|{schedule.trigger!r}|".encode() + record.payload, usedforsecurity=False
        ).hexdigest()[:20]
        record.id = task._id = f"schedule:{digest}:{planned:.3f}"
        record.run_at = planned
        record.status = "pending"
        task._engine = self
        task._frozen = True
        pushing = asyncio.get_running_loop().create_task(self._push_fired(schedule, task, record))
        self._afters.add(pushing)
        pushing.add_done_callback(self._afters.discard)

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
        if self.closed:
            raise RuntimeError(f"queue {self.name!r} was shut down and cannot start again")
        if self.serving:
            raise RuntimeError(f"queue {self.name!r} is already running")
        self.serving = self.started = True
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        self._source = self._ready
        self._slot_free = asyncio.Event()
        self._fetcher = loop.create_task(self._fetch_loop())
        if self._heap:  # recurring schedules fire from every worker (once per due time)
            self._arm(self._heap[0][0])

    async def _fetch_loop(self) -> None:
        settings = self.settings
        next_maintenance = 0.0
        failures = 0
        while self.serving:
            try:
                now = self.clock.now()
                if now >= next_maintenance:
                    await self._maintain(now)
                    next_maintenance = now + settings.maintenance
                held = len(self._claimed)
                room = settings.prefetch + self.concurrency - held
                if room > 0 and (held < self.concurrency or room * 2 >= settings.prefetch):
                    ask = min(room, settings.batch)
                    claimed = await self.backend.claim(
                        self.name, now, ask, settings.lease, self.owner, settings.max_running
                    )
                    for record in claimed:
                        self._take(record)
                    self._pump()
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
            except Exception as exc:
                failures += 1
                delay = min(30.0, 0.05 * 2 ** min(failures, 10))
                log.warning(
                    "queue %s: backend error (%r); retrying in %.2fs", self.name, exc, delay
                )
                await asyncio.sleep(delay)

    async def _wait_for_work(self, now: float) -> None:
        """Wait for work; with ``wait_claim`` (Redis), claim in the same round trip.

        The claim then runs the moment a push wakes the worker, so the task starts at once.
        """
        pause = await self._idle_for(now)
        wait_claim = getattr(self.backend, "wait_claim", None)
        settings = self.settings
        room = settings.prefetch + self.concurrency - len(self._claimed)
        if wait_claim is None or room <= 0:
            await self.backend.wait(self.name, pause)
            return
        claimed = await wait_claim(
            self.name,
            pause,
            self.clock.now(),
            min(room, settings.batch),
            settings.lease,
            self.owner,
            settings.max_running,
        )
        for record in claimed:
            self._take(record)
        self._pump()
        if claimed:
            # Let a worker thread that was just handed a task take the GIL now, rather than
            # after this thread's next round trips (a no-op task then starts ~0.3 ms sooner).
            time.sleep(0)  # noqa: ASYNC251  # releases the GIL for a moment, on purpose

    async def _idle_for(self, now: float) -> float:
        """How long an idle worker may wait: until the next maintenance or the next due task."""
        pause = self.settings.maintenance
        due = await self.backend.next_due(self.name)
        if due is not None:
            pause = min(pause, max(0.0, due - now))
        return pause

    def _take(self, record: Record) -> None:
        """Turn a claimed record into a running task, or dead-letter it if it cannot run."""
        self._claimed[record.id] = record.attempts
        entry = self.registry.get(record.name)
        if entry is None:
            self._dead(record, "unknown_task", f"no task named {record.name!r} is registered")
            return
        try:
            payload = self.codec.decode(record.payload)
            args, kwargs = payload["a"], payload["k"]
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise TypeError("payload must hold a list 'a' and a dict 'k'")
            overrides = json.loads(record.options) if record.options else None
        except (DecodeError, KeyError, TypeError, ValueError) as exc:
            self._dead(record, "undecodable", f"{type(exc).__name__}: {exc}")
            return
        task = self._by_id.get(record.id)
        if task is None or task.done:
            task = entry.task(*args, **kwargs)
            task._id = record.id
        task._frozen = True
        task._engine = self
        task._attempts = record.attempts - 1 - record.crashes
        task._status = TaskStatus.PENDING
        template = entry._template
        if overrides:
            within = overrides.pop("within", None)
            if within is not None:
                task._within = float(within)
            task._overrides = overrides
            task._policy = build_policy(self.default_policy, overrides)
        else:
            task._policy = build_policy(self.default_policy, template._overrides)
        self._by_id[record.id] = task
        self._unfinished += 1
        self._ready.append(task)

    def _dead(self, record: Record, reason: str, error: str) -> None:
        log.error("queue %s: task %s dead-lettered (%s): %s", self.name, record.id, reason, error)
        token = self._claimed.pop(record.id)
        failure_hooks = self._hooks["on_failure"]
        if failure_hooks:  # hooks (metrics) see dead letters too, through a stand-in task
            stand_in = Task._fast(_placeholder(record.name), (), {}, False)
            stand_in._id = record.id
            stand_in._engine = self
            stand_in._status = TaskStatus.DEAD
            stand_in._attempts = record.attempts - record.crashes
            dead = TaskFailed(error, "dead", reason)
            stand_in._error = dead
            for hook in failure_hooks:
                self._call_hook(hook, stand_in, dead)
        self._settle_out(
            Settlement(record.id, token, Outcome.DEAD, self.clock.now(), error=error, reason=reason)
        )

    def _retry_later(
        self, task: Task[Any], when: float, delay: float, error: BaseException
    ) -> None:
        token = self._claimed.pop(task.id, None)
        self._unfinished -= 1
        if token is not None:
            payload = None
            if getattr(error, "resume", None) is not None:  # store where to resume from
                try:
                    payload = self.codec.encode({"a": list(task.args), "k": dict(task.kwargs)})
                except NotSerializable as exc:
                    log.warning("queue %s: cannot store resume point (%s)", self.name, exc)
            self._settle_out(
                Settlement(
                    task.id, token, Outcome.RETRY, self.clock.now(), run_at=when,
                    error=_describe(error), payload=payload,
                )
            )  # fmt: skip
        self._freed()

    def _finish(
        self,
        task: Task[Any],
        status: TaskStatus,
        value: Any,
        error: BaseException | None,
    ) -> None:
        token = self._claimed.pop(task.id, None)
        if token is not None:
            result = None
            keep = (task._overrides or {}).get("keep_result", self.settings.keep_result)
            if status is TaskStatus.SUCCEEDED and keep != 0:
                try:
                    result = self.codec.encode(value)
                except NotSerializable as exc:
                    status, value, error = TaskStatus.FAILED, None, exc
            log_of = _chain_log_of(error)
            if log_of is not None:  # a failed chain keeps its result log in the record
                try:
                    result = self.codec.encode({"chain_log": log_of})
                except NotSerializable:
                    result = None
            self._settle_out(
                Settlement(
                    task.id,
                    token,
                    _OUTCOME[status],
                    self.clock.now(),
                    error=None if error is None else _describe(error),
                    result=result,
                    keep=keep,
                )
            )
        super()._finish(task, status, value, error)
        self._freed()

    def _freed(self) -> None:
        slot = self._slot_free
        if slot is not None:
            slot.set()

    def _settle_out(self, settlement: Settlement) -> None:
        self._outbox.append(settlement)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
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
            if refused:
                self.refused += len(refused)
                log.warning(
                    "queue %s: %d outcome(s) refused: the lease was lost (another worker "
                    "took the task over)",
                    self.name,
                    len(refused),
                )

    async def _maintain(self, now: float) -> None:
        settings = self.settings
        leases = list(self._claimed.items())
        if leases:
            lost, cancel = await self.backend.heartbeat(leases, now, settings.lease)
            lost = [i for i in lost if i in self._claimed]  # not those settled meanwhile
            for task_id in cancel:
                task = self._by_id.get(task_id)
                if task is not None and not task.done:
                    self.cancel_task(task)
            if lost:
                log.warning("queue %s: lost the lease of %d task(s)", self.name, len(lost))
        requeued, dead = await self.backend.reap(self.name, now, settings.crash_budget)
        if requeued or dead:
            log.warning(
                "queue %s: requeued %d task(s) whose worker stopped; dead-lettered %d",
                self.name,
                requeued,
                dead,
            )
        if now >= self._next_purge:
            self._next_purge = now + settings.purge_every
            await self.backend.purge_finished(now)

    # -- waiting for results from other workers --------------------------------------------

    def watch(self, task: Task[Any]) -> None:
        """Poll the backend for the outcome of ``task`` while someone waits for it."""
        if task.done:
            return
        self._watched[task.id] = task
        loop = self.ensure_loop()
        loop.call_soon_threadsafe(self._start_watcher)

    def _start_watcher(self) -> None:
        self._watch_pause = 0.002  # a new waiter: poll fast again
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch_loop())

    async def _watch_loop(self) -> None:
        self._watch_pause = 0.002  # poll fast at first, then back off to the maintenance pace
        while self._watched:
            ids = [i for i, t in self._watched.items() if not t._finished]
            try:
                records = await self.backend.get(ids) if ids else []
            except BackendError as exc:
                log.warning("queue %s: cannot poll results (%r)", self.name, exc)
                records = []
            found = {r.id: r for r in records}
            for task_id in list(self._watched):
                task = self._watched[task_id]
                if task._finished or task_id in self._claimed:
                    if task._finished:
                        del self._watched[task_id]
                    continue
                record = found.get(task_id)
                if record is not None:
                    self._apply(task, record)
                    if task._finished:
                        del self._watched[task_id]
                        self._watch_pause = 0.002
            await asyncio.sleep(self._watch_pause)
            self._watch_pause = min(self._watch_pause * 2, 0.05, self.settings.maintenance)

    def _apply(self, task: Task[Any], record: Record) -> None:
        """Copy a record's state into a local handle; wake waiters if it is final."""
        status = TaskStatus(record.status)
        task._attempts = record.attempts - record.crashes
        if not status.final:
            task._status = status
            task._next_attempt = record.run_at if status is not TaskStatus.RUNNING else None
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
        local = self._by_id.get(task_id)
        if local is not None and local.done:
            return local
        return self.run_on_home(self._alookup(task_id))

    async def _alookup(self, task_id: str) -> Task[Any] | None:
        """``lookup`` on the loop, where a task this process runs cannot change under it."""
        local = self._by_id.get(task_id)
        if local is not None and (local.done or task_id in self._claimed):
            return local
        records = await self.backend.get([task_id])
        local = self._by_id.get(task_id)
        if local is not None and (local.done or task_id in self._claimed):
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
            task._engine = self
            task._frozen = True
        self._apply(task, record)
        return task

    def chain_log(self, task_id: str) -> Any:
        """Read a chained job's result log from its stored record (blocking)."""
        from .chain import ChainLog

        records = self.run_on_home(self.backend.get([task_id]))
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
        return self.run_on_home(self._acancel(task))

    async def acancel_handle(self, task: Task[Any]) -> bool:
        """``cancel_handle`` from any event loop."""
        return await self.arun_on_home(self._acancel(task))

    async def _acancel(self, task: Task[Any]) -> bool:
        if task.id in self._claimed:
            return self.cancel_task(task)
        answer = await self.backend.cancel(task.id, self.clock.now())
        if answer == "cancelled":
            task._status = TaskStatus.CANCELLED
            task._error = TaskFailed("cancelled", "cancelled")
            task._wake_waiters()
        return answer in ("cancelled", "requested")

    # -- driving by hand and stopping ------------------------------------------------------

    async def dispatch(self) -> bool:
        """Claim every due task once, run them, write the outcomes; say if work remains."""
        if self.serving:
            raise RuntimeError("dispatch() drives a queue by hand; this queue is running")
        now = self.clock.now()
        await self._maintain(now)
        claimed = await self.backend.claim(
            self.name, now, 10_000, self.settings.lease, self.owner, self.settings.max_running
        )
        for record in claimed:
            self._take(record)
        batch = list(self._ready)
        self._ready.clear()
        await self._run_batch(batch)
        await self._drain_outbox()
        counts = await self.backend.counts(self.name)
        return any(counts.get(s, 0) for s in ("pending", "scheduled", "retrying", "running"))

    async def wait_stopped(self) -> None:
        """Wait until stopped and the running attempts ended, then write their outcomes."""
        await super().wait_stopped()
        if self._fetcher is not None and not self._fetcher.done():
            self._fetcher.cancel()
            await asyncio.gather(self._fetcher, return_exceptions=True)
        await self._drain_outbox()

    async def _drain_outbox(self) -> None:
        while self._outbox or (self._flushing is not None and not self._flushing.done()):
            if self._flushing is None or self._flushing.done():
                self._flushing = asyncio.get_running_loop().create_task(self._flush())
            await asyncio.shield(self._flushing)

    def has_work(self) -> bool:
        """Whether this process holds claimed tasks."""
        return bool(self._claimed)

    async def shutdown(self, timeout: float | None) -> bool:
        """Stop claiming, let running attempts finish, write their outcomes, then stop.

        Tasks still waiting in the backend stay there for other (or later) workers.
        """
        self.accepting = False
        if self.closed:
            return True
        clean = True
        if self.serving:
            self.serving = False
            self._freed()
            if self._fetcher is not None:
                self._fetcher.cancel()
                await asyncio.gather(self._fetcher, return_exceptions=True)
            try:
                async with asyncio.timeout(timeout):
                    while self._active or self._afters:
                        await self._quiet_or_after()
            except TimeoutError:
                clean = False
                for task in list(self._running):
                    self.cancel_task(task)
        await self._drain_outbox()
        if self._watcher is not None:
            self._watcher.cancel()
        self.halt()
        self._close()
        if self.owns_backend:
            with contextlib.suppress(BackendError):
                await self.backend.close()
        return clean

    async def abort(self) -> list[Any]:
        """Stop at once: hand every claimed task back to the store (nothing to dump)."""
        self.accepting = False
        self.serving = False
        if self._fetcher is not None:
            self._fetcher.cancel()
            await asyncio.gather(self._fetcher, return_exceptions=True)
        now = self.clock.now()
        for task_id, token in list(self._claimed.items()):
            self._settle_out(
                Settlement(
                    task_id, token, Outcome.RETRY, now, run_at=now,
                    error="released: the worker was stopped at once",
                )
            )  # fmt: skip
        self._claimed.clear()
        for task in list(self._running):
            self.cancel_task(task)
        await self._drain_outbox()
        self.halt()
        self._close()
        if self.owns_backend:
            with contextlib.suppress(BackendError):
                await self.backend.close()
        return []

    async def _quiet_or_after(self) -> None:
        if self._active:
            quiet = asyncio.get_running_loop().create_future()
            self._quiet.append(quiet)
            await quiet
        elif self._afters:
            await asyncio.gather(*self._afters, return_exceptions=True)


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

    unknown.__qualname__ = name
    return unknown


def task_function_of(task: Task[Any]) -> TaskFunction[..., Any] | None:
    """Return the task function a durable task was made from, if registered."""
    engine = task._engine
    if isinstance(engine, BackendEngine):
        name = engine.registry.name_of(task.fn)
        return engine.registry.get(name) if name else None
    return None
