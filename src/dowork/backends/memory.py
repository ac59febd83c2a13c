"""The in-process reference implementation of ``Store`` and ``StoreAdmin``.

Records in dicts behind one lock, for any thread or event loop of the process; nothing
survives it. The contract is checked on it without a server, and code written for a durable
queue runs on it in a test with no file (``Queue()`` itself keeps live tasks, not records).
``MemoryBackend`` holds the records and the worker's side (``Store``); the operators' side
(``StoreAdmin``) is ``MemoryAdmin``, in ``memory_admin``; a claim's flow control is
``flow``'s, as in the other stores.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from operator import attrgetter

from ..errors import DuplicateTask
from ._protocol import (
    LEASED,
    STATS_MINUTES,
    WAITING,
    WHILE_UNFINISHED,
    Outcome,
    Record,
    Settlement,
    Wakeups,
    WorkerBeat,
    attempt_line,
    charge,
    late_applies,
    minute_of,
    retention,
    uncharge,
)
from .extras import SupportsWake
from .flow import Lane, Pacer, Turns, rank, room
from .memory_admin import MemoryAdmin
from .store import Burials, ClaimRequest, Upkeep, Upkept

__all__ = ["MemoryBackend"]

_FINAL = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.FAILED: "failed",
    Outcome.CANCELLED: "cancelled",
    Outcome.DEAD: "dead",
}


class MemoryBackend(MemoryAdmin, SupportsWake):  # (its one extra: wake)
    """Records in a dict, for tests and single-process use of the durable code path."""

    durable = False

    def __init__(
        self, *, keep_finished: float = 7 * 24 * 3600.0, keep_dead: float | None = None
    ) -> None:
        self.keep_finished = keep_finished
        self.keep_dead = keep_dead
        self._lock = threading.Lock()
        self._idempotency: dict[tuple[str, str], tuple[str, float]] = {}
        self._records: dict[str, Record] = {}
        self._order: dict[str, int] = {}
        self._seq = 0
        self._expires: dict[str, float] = {}
        self._wakeups = Wakeups()
        self._workers: dict[str, tuple[float, str]] = {}  # id -> (expires_at, beat JSON)
        self._stats: dict[str, dict[int, dict[str, int]]] = {}  # queue -> minute -> counts
        #: (queue, rate key) -> the last start times the rate limit gave out, ascending
        self._starts: dict[tuple[str, str], list[float]] = {}
        #: queue -> concurrency key ("" for none) -> the turn it was last served in
        self._served: dict[str, dict[str, int]] = {}
        self._turns: dict[str, int] = {}  # queue -> the last turn given

    def __repr__(self) -> str:
        return "MemoryBackend()"

    async def push(self, records: Sequence[Record], *, fresh: bool = False) -> dict[str, str]:
        """Store copies of the records (those whose idempotency key is free)."""
        same: dict[str, str] = {}
        with self._lock:
            if len({r.id for r in records}) != len(records):
                raise DuplicateTask("the same task id appears twice in one push")
            for record in records:
                if record.id in self._records:
                    raise DuplicateTask(f"a task with id {record.id!r} already exists")
            for record in records:
                key = record.idempotency_key
                if key is not None:
                    held = self._idempotency.get((record.queue, key))
                    if held is not None and self._holds(held, record.created_at):
                        same[record.id] = held[0]
                        continue
                    until = record.idempotency_until or record.created_at
                    self._idempotency[(record.queue, key)] = (record.id, until)
                self._seq += 1
                self._records[record.id] = replace(record, updated_at=record.created_at)
                self._order[record.id] = self._seq
        self._wakeups.notify({r.queue for r in records if r.id not in same})
        return same

    def _holds(self, held: tuple[str, float], now: float) -> bool:
        """Whether a key is still taken: its window is open, or its unique task unfinished."""
        task_id, until = held
        if until != WHILE_UNFINISHED:
            return until > now
        record = self._records.get(task_id)
        return record is not None and (record.status in WAITING or record.status in LEASED)

    def _retention(self, outcome: Outcome | None, keep: float | None) -> float:
        """Seconds to keep a finished record (see ``retention``)."""
        return retention(outcome, keep, self.keep_finished, self.keep_dead)

    async def claim(self, request: ClaimRequest) -> list[Record]:
        """Lease the most urgent due records, key by key in turn, within the limits (``flow``)."""
        queue, now = request.queue, request.now
        with self._lock:
            mine = [r for r in self._records.values() if r.queue == queue]
            running = [r for r in mine if r.status in LEASED]
            limit = room(request.limit, request.max_running, len(running))
            if limit <= 0:
                return []
            served = self._served.setdefault(queue, {})
            turns = _Turns(limit, request, self._order, running, self._turns.get(queue, 0))
            lanes: dict[str, list[Record]] = {}
            for record in mine:
                if record.status in WAITING and record.run_at <= now:
                    lanes.setdefault(record.concurrency_key or "", []).append(record)
            for key, lane in lanes.items():
                turns.add(key, served.get(key, 0), Lane(sorted(lane, key=turns.urgency)))
            pacer = Pacer(now, request.rates, self._rate_starts(queue), _fields)
            picked = turns.take(
                limit,
                request.alone_from,
                pacer.may_start if request.rates else None,
            )
            for start, task_id in pacer.delayed:  # waits for the start time it was given
                self._records[task_id].run_at = self._records[task_id].slot = start
            if turns.served:
                served.update(turns.served)
                self._turns[queue] = max(turns.served.values())
            claimed = [self._lease(r, now, request.lease, request.owner) for r in picked]
            waiting = {r.concurrency_key or "" for r in mine if r.status in WAITING}
            for key in [k for k in served if k not in waiting]:
                del served[key]  # a key with nothing waiting loses its place in turn
            return claimed

    def _rate_starts(self, queue: str) -> Callable[[str], list[float]]:
        """The start times each rate limit of ``queue`` gave out, ascending (``flow.Pacer``)."""
        return lambda key: self._starts.setdefault((queue, key), [])

    @staticmethod
    def _lease(record: Record, now: float, lease: float, owner: str) -> Record:
        """Lease a record to ``owner``: reserved, a new attempt (the fencing token)."""
        record.status = "reserved"
        record.attempts += 1
        record.lease_until = now + lease
        record.owner = owner
        record.updated_at = now
        record.slot = None
        return replace(record)

    async def settle(
        self, settlements: Sequence[Settlement], *, buried: Burials | None = None
    ) -> list[str]:
        """Apply outcomes, refusing stale tokens (every record here can be read: none buried)."""
        refused = []
        with self._lock:
            for s in settlements:
                record = self._records.get(s.id)
                if record is None:
                    refused.append(s.id)
                    continue
                stale = record.status not in LEASED or record.attempts != s.token
                if stale and (s.outcome is Outcome.STARTED or not self._late(record, s)):
                    refused.append(s.id)
                    continue
                if record.status == "reserved" and s.ran:
                    record.started += 1
                    record.status = "running"
                if s.outcome is Outcome.STARTED:
                    continue
                record.lease_until = None
                record.owner = None
                record.updated_at = s.now
                attempt = attempt_line(s)
                if attempt is not None:
                    record.history = (record.history or "") + attempt + "\n"
                if s.outcome is Outcome.RETRY:
                    record.status = "retrying"
                    record.run_at = s.run_at
                    record.error = s.error
                    if s.payload is not None:
                        record.payload = s.payload
                    continue
                keep = self._retention(s.outcome, s.keep)
                if keep <= 0:
                    del self._records[s.id]
                    del self._order[s.id]
                    self._expires.pop(s.id, None)
                    continue
                record.status = _FINAL[s.outcome]
                record.result = s.result
                record.error = s.error
                record.reason = s.reason
                record.finished_at = s.now
                self._expires[s.id] = s.now + keep
        return refused

    def _late(self, record: Record, s: Settlement) -> bool:
        """A settlement after its lease lapsed: take back a crash charge, maybe apply it.

        Returns whether the outcome is applied (see ``Store.settle``); the record is then
        made ``running`` again for it.
        """
        found, rest = uncharge(record.charged, s.token)
        if not found:
            return False
        record.charged = rest
        record.crashes -= 1
        record.lost += 1
        if not late_applies(record.status, record.reason, record.attempts, s.token):
            return False
        record.status = "running"
        record.reason = record.error = record.finished_at = None
        self._expires.pop(record.id, None)
        return True

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], now: float, lease: float
    ) -> tuple[list[str], list[str]]:
        """Extend leases."""
        lost, cancel = [], []
        with self._lock:
            for task_id, token in leases:
                record = self._records.get(task_id)
                if record is None or record.status not in LEASED or record.attempts != token:
                    lost.append(task_id)
                    continue
                record.lease_until = now + lease
                if record.cancel_requested:
                    cancel.append(task_id)
        return lost, cancel

    async def release(self, ids: Sequence[str], now: float) -> list[str]:
        """Make later-due waiting records due now."""
        released = []
        with self._lock:
            for task_id in ids:
                record = self._records.get(task_id)
                if record is None or record.status not in WAITING or record.run_at <= now:
                    continue
                record.run_at = now
                record.updated_at = now
                if record.status == "scheduled":
                    record.status = "pending"
                released.append(record)
        self._wakeups.notify({r.queue for r in released})
        return [r.id for r in released]

    async def progress(self, updates: Sequence[tuple[str, int, str]]) -> None:
        """Store reported progress for records still on the reporting attempt."""
        with self._lock:
            for task_id, token, text in updates:
                record = self._records.get(task_id)
                if record is not None and record.attempts == token:
                    record.progress = text

    async def upkeep(self, job: Upkeep) -> Upkept:
        """Beat, reap and purge as ``job`` asks (``Store.upkeep``), under the lock."""
        done = Upkept()
        with self._lock:
            if job.beat is not None:
                self._beat(job.beat, job)
            if job.crash_budget is not None:
                done.requeued, done.dead = self._reap(job.queue, job.now, job.crash_budget)
            if job.purge:
                done.purged = self._purge_finished(job.now)
        return done

    def _reap(self, queue: str, now: float, crash_budget: int) -> tuple[int, int]:
        """Requeue expired leases, dead-letter repeat crashers (under the lock)."""
        requeued = dead = 0
        for record in self._records.values():
            if record.queue != queue or record.status not in LEASED:
                continue
            if record.lease_until is None or record.lease_until >= now:
                continue
            record.lease_until = None
            record.owner = None
            record.updated_at = now
            if record.status == "reserved":  # never started: not a crash
                record.lost += 1
                record.status = "pending"  # run_at kept: back to its place at the head
                requeued += 1
                continue
            record.crashes += 1
            record.charged = charge(record.charged, record.attempts)
            if record.crashes >= crash_budget:
                record.status = "dead"
                record.reason = "crashed_worker"
                record.error = (
                    f"the worker running it stopped renewing its lease {record.crashes} times"
                )
                record.finished_at = now
                self._expires[record.id] = now + self._retention(Outcome.DEAD, None)
                dead += 1
            else:
                record.status = "retrying"  # run_at kept: back to its place at the head
                requeued += 1
        return requeued, dead

    async def next_due(self, queue: str) -> float | None:
        """Earliest run time of a waiting record."""
        with self._lock:
            times = [
                r.run_at for r in self._records.values() if r.queue == queue and r.status in WAITING
            ]
        return min(times) if times else None

    async def wake(self, queue: str, at: float) -> None:
        """A task of ``queue`` fell due at ``at``: wake this process's idle workers of it."""
        self._wakeups.notify({queue})

    async def wait(self, queue: str, timeout: float) -> None:
        """Wait for a push to the queue, up to ``timeout`` seconds."""
        await self._wakeups.wait(queue, timeout)

    def _purge_finished(self, now: float) -> int:
        """Forget finished records and idempotency keys past their retention (under the lock)."""
        gone = [i for i, at in self._expires.items() if at < now]
        for task_id in gone:
            self._records.pop(task_id, None)
            self._order.pop(task_id, None)
            del self._expires[task_id]
        for key in [k for k, held in self._idempotency.items() if not self._holds(held, now)]:
            del self._idempotency[key]
        return len(gone)

    def _beat(self, worker: WorkerBeat, job: Upkeep) -> None:
        """Keep the worker's beat until ``now + ttl``, add its outcome counts (under the lock)."""
        now, ttl, finished = job.now, job.ttl, job.finished
        for gone in [i for i, (until, _) in self._workers.items() if until <= now]:
            del self._workers[gone]
        if ttl > 0:
            self._workers[worker.id] = (now + ttl, worker.to_json())
        else:
            self._workers.pop(worker.id, None)
        if finished:
            minutes = self._stats.setdefault(worker.queue, {})
            for minute, by_outcome in finished.items():
                counts = minutes.setdefault(int(minute), {})
                for outcome, n in by_outcome.items():
                    counts[outcome] = counts.get(outcome, 0) + n
            oldest = minute_of(now) - STATS_MINUTES * 60
            for minute in [m for m in minutes if m < oldest]:
                del minutes[minute]


_crashes = attrgetter("crashes")
_fields = attrgetter("id", "name", "slot")  # what a Pacer reads of a record


class _Turns(Turns[Record]):
    """``flow.Turns`` over records in memory: ranked in push order, keys held by ``running``."""

    def __init__(
        self,
        limit: int,
        request: ClaimRequest,
        order: dict[str, int],
        running: list[Record],
        last: int,
    ) -> None:
        super().__init__(limit, request.per_key, _crashes)
        self._aging = request.aging
        self._order = order
        self._running = running
        self._last = last

    def urgency(self, row: Record) -> tuple[float, int]:
        return rank(row.run_at, row.priority, self._aging), self._order[row.id]

    def running(self) -> dict[str, int]:
        held: dict[str, int] = {}
        for record in self._running:
            if record.concurrency_key is not None:
                held[record.concurrency_key] = held.get(record.concurrency_key, 0) + 1
        return held

    def last_turn(self) -> int:
        return self._last
