"""The worker side of ``SQLiteBackend``: the protocol methods a queue's engine calls.

``SQLiteStore`` holds the ``Store`` methods (push, claim, settle, heartbeat, release,
progress, upkeep, next_due, wait), and wake, check_store and push_sync. Each is a thin
coroutine that runs one function over the connection on the store's thread
(``SQLiteFile.call``), but ``push_sync``, which runs it on the caller's (``SQLiteFile.here``):
``submit()`` from a thread commits its row without a hop to the event loop. The short ones
live here, the claim in ``claims``, settlements in ``outcomes`` and the reaper and the
purge in ``upkeep``. Work pushed or released in this process wakes its idle workers at once
(``Wakeups``), and other processes' workers through a datagram (``wake``); polling every
``poll_interval`` finds what a lost wake-up missed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from .._protocol import (
    STATS_MINUTES,
    WHILE_UNFINISHED,
    Outcome,
    Record,
    Settlement,
    Wakeups,
    WorkerBeat,
    minute_of,
)
from ..extras import SupportsCheckStore, SupportsPushAnywhere, SupportsPushSync, SupportsWake
from ..store import Burials, ClaimRequest, Upkeep, Upkept
from . import claims, outcomes, upkeep
from .connection import SQLiteFile, transaction
from .lanes import NEXT_DUE_SQL
from .schema import HELD_SQL, WAITING_SQL, waiting_sql
from .wake import WakeChannel

__all__ = ["SQLiteStore"]


class SQLiteStore(SupportsWake, SupportsCheckStore, SupportsPushSync, SupportsPushAnywhere):
    """The worker-side methods of ``SQLiteBackend`` (``Backend`` less ``StoreAdmin``).

    Its extras: ``wake``, ``check_store``, ``push_sync`` and ``pushes_anywhere``.
    """

    _file: SQLiteFile
    _wakeups: Wakeups
    _wake: WakeChannel
    #: A worker waited, or the last claim found nothing: the next claim runs on the caller's
    #: thread if it can (``claim``).
    _idle: bool = True
    keep_finished: float
    keep_dead: float | None
    poll_interval: float

    def _keep(self) -> outcomes.Keep:
        """The retention settings as they are now (they may be changed at any time)."""
        return outcomes.Keep(self.keep_finished, self.keep_dead)

    async def check_store(self) -> None:
        """Raise ``StoreLost`` if the file at the path is not the one this backend opened.

        A worker calls it at every maintenance step: a file deleted (or replaced, e.g. by a
        restore or a ``mv``) under a running worker leaves its connection on the old file,
        which no producer writes to any more, so new work would be stranded in silence.
        """
        self._file.check()

    def pushes_anywhere(self) -> bool:
        """``push`` runs on any event loop: the file has a thread of its own."""
        return True

    async def push(self, records: Sequence[Record], *, fresh: bool = False) -> dict[str, str]:
        """Insert records in one transaction (those whose idempotency key is free)."""
        if not records:
            return {}
        done = None
        if len(records) == 1 and records[0].idempotency_key is None:  # asubmit(): at once
            done = self._file.try_here(_push, records)
        same = done[0] if done is not None else await self._file.call(_push, records)
        queues = {r.queue for r in records if r.id not in same}
        self._wakeups.notify(queues)
        self._wake.send(queues)
        return same

    def push_sync(self, records: Sequence[Record], *, fresh: bool = False) -> bool:
        """``push`` from the calling thread, on the store's connection (``SupportsPushSync``).

        What ``submit()`` does from a thread: one transaction, committed before it returns,
        with no hop to the event loop and the connection's thread. False, having done
        nothing, for records with idempotency keys, and until the file is opened (the first
        ``push`` opens it): ``push`` them then.
        """
        if any(r.idempotency_key is not None for r in records):
            return False
        if records:
            if self._file.here(_push, records) is None:
                return False
            queues = {r.queue for r in records}
            self._wakeups.notify(queues)
            self._wake.send(queues)
        return True

    async def claim(self, request: ClaimRequest) -> list[Record]:
        """Lease up to ``limit`` of the most urgent due records in one transaction.

        After a wait for work or a claim that found nothing (an idle worker, woken by a push
        or polling) it runs on the calling thread when it need not wait
        (``SQLiteFile.try_here``): the task a wake-up announced then starts without two hops
        to the connection's thread and back (about 0.2-0.5 ms of its idle latency). A busy
        worker claims on that thread, beside its loop's work, as before.
        """
        if request.limit <= 0:
            return []
        done = self._file.try_here(self._claim, request) if self._idle else None
        claimed = done[0] if done is not None else await self._file.call(self._claim, request)
        self._idle = not claimed
        return claimed

    def _claim(self, conn: sqlite3.Connection, request: ClaimRequest) -> list[Record]:
        keep_dead = self._keep().of(Outcome.DEAD, None)
        return claims.claim(conn, request, self._file.ok_sql, keep_dead)

    async def settle(
        self, settlements: Sequence[Settlement], *, buried: Burials | None = None
    ) -> list[str]:
        """Write outcomes in one transaction; refuse those whose lease token is stale."""
        if not settlements:
            return []
        return await self._file.call(outcomes.settle, settlements, self._keep(), buried)

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], now: float, lease: float
    ) -> tuple[list[str], list[str]]:
        """Extend leases; report the lost ones and those asked to cancel."""
        if not leases:
            return [], []
        return await self._file.call(_heartbeat, leases, now, lease)

    async def release(self, ids: Sequence[str], now: float) -> list[str]:
        """Make later-due waiting records due now."""
        if not ids:
            return []
        released = await self._file.call(_release, list(ids), now)
        queues = {queue for _, queue in released}
        self._wakeups.notify(queues)
        self._wake.send(queues)
        return [task_id for task_id, _ in released]

    async def progress(self, updates: Sequence[tuple[str, int, str]]) -> None:
        """Store reported progress for records still on the reporting attempt."""
        if updates:
            await self._file.call(_progress, updates)

    async def upkeep(self, job: Upkeep) -> Upkept:
        """Beat, reap and purge as ``job`` asks (``Store.upkeep``): a transaction each."""
        return await self._file.call(self._upkeep, job)

    def _upkeep(self, conn: sqlite3.Connection, job: Upkeep) -> Upkept:
        done = Upkept()
        if job.beat is not None:
            _beat(conn, job.beat, job.now, job.ttl, job.finished)
        if job.crash_budget is not None:
            keep_dead = self._keep().of(Outcome.DEAD, None)
            reaped = upkeep.reap(conn, job.queue, job.now, job.crash_budget, keep_dead)
            done.requeued, done.dead, buried = reaped
            if buried and job.buried is not None:  # (written: the transaction is committed)
                job.buried.extend((task_id, "malformed") for task_id in buried)
        if job.purge:
            done.purged = upkeep.purge_finished(conn, job.now)
        return done

    async def next_due(self, queue: str) -> float | None:
        """Earliest run time of the queue's waiting records."""
        return await self._file.call(_next_due, queue)

    async def wake(self, queue: str, at: float) -> None:
        """A task of ``queue`` fell due at ``at``: wake its idle workers in every process."""
        self._wakeups.notify({queue})
        self._wake.send((queue,))

    async def wait(self, queue: str, timeout: float) -> None:
        """Wait for a push (from any process on this file), or ``min(timeout, poll_interval)``."""
        self._wake.listen(self._wakeups.notify)
        self._idle = True
        await self._wakeups.wait(queue, min(timeout, self.poll_interval))


def _push(conn: sqlite3.Connection, records: Sequence[Record]) -> dict[str, str]:
    same: dict[str, str] = {}
    with transaction(conn):
        if any(r.idempotency_key is not None for r in records):
            records = _claim_keys(conn, records, same)
        rows = [
            (
                r.id, r.queue, r.name, _blob(r.payload), 0 if r.options is None else r.options,
                r.status, r.attempts, r.run_at, r.created_at, r.created_at, r.priority,
                "" if r.slot is None else r.slot, r.concurrency_key or 0,
            )
            for r in records
        ]  # fmt: skip
        conn.executemany(_INSERT_SQL, rows)
    return same


#: A record's row. None is bound as 0 (a slot as ''), which ``NULLIF`` turns back, and the
#: payload as a bytearray: the sqlite3 module binds an int, float, str or bytearray at once,
#: but looks for an adapter for None and bytes (about 1 us a value). An empty
#: ``concurrency_key`` is stored as NULL, as before.
_INSERT_SQL = (
    "INSERT INTO dowork_tasks (id, queue, name, payload, options, status, attempts,"
    " run_at, created_at, updated_at, priority, slot, concurrency_key)"
    " VALUES (?, ?, ?, ?, NULLIF(?, 0), ?, ?, ?, ?, ?, ?, NULLIF(?, ''), NULLIF(?, 0))"
)


def _blob(payload: bytes) -> object:
    """``payload`` as the sqlite3 module binds at once (a bytearray; other types as they are)."""
    return bytearray(payload) if type(payload) is bytes else payload


def _claim_keys(
    conn: sqlite3.Connection, records: Sequence[Record], same: dict[str, str]
) -> list[Record]:
    """Take the free idempotency keys; return the records to store, fill ``same``."""
    fresh: list[Record] = []
    for r in records:
        key = r.idempotency_key
        if key is not None:
            held = conn.execute(
                "SELECT task_id FROM dowork_idempotency i"
                " WHERE queue = ? AND key = ? AND expires_at > ? AND (expires_at < ?"
                " OR EXISTS (SELECT 1 FROM dowork_tasks t WHERE t.id = i.task_id"
                f" AND ({waiting_sql('t')} OR t.{HELD_SQL})))",
                (r.queue, key, r.created_at, WHILE_UNFINISHED),
            ).fetchone()
            if held is not None:
                same[r.id] = held[0]
                continue
            conn.execute(
                "INSERT OR REPLACE INTO dowork_idempotency (queue, key, task_id, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (r.queue, key, r.id, r.idempotency_until or r.created_at),
            )
        fresh.append(r)
    return fresh


def _heartbeat(
    conn: sqlite3.Connection, leases: Sequence[tuple[str, int]], now: float, lease: float
) -> tuple[list[str], list[str]]:
    lost: list[str] = []
    cancel: list[str] = []
    with transaction(conn):
        for task_id, token in leases:
            row = conn.execute(
                "UPDATE dowork_tasks SET lease_until = ?"
                f" WHERE id = ? AND {HELD_SQL} AND attempts = ? RETURNING cancel_requested",
                (now + lease, task_id, token),
            ).fetchone()
            if row is None:
                lost.append(task_id)
            elif row[0]:
                cancel.append(task_id)
    return lost, cancel


def _release(conn: sqlite3.Connection, ids: list[str], now: float) -> list[tuple[str, str]]:
    released: list[tuple[str, str]] = []
    with transaction(conn):
        for task_id in ids:
            row = conn.execute(
                "UPDATE dowork_tasks SET run_at = ?, updated_at = ?,"
                " status = CASE status WHEN 'scheduled' THEN 'pending' ELSE status END"
                f" WHERE id = ? AND {WAITING_SQL} AND run_at > ? RETURNING queue",
                (now, now, task_id, now),
            ).fetchone()
            if row is not None:
                released.append((task_id, row[0]))
    return released


def _progress(conn: sqlite3.Connection, updates: Sequence[tuple[str, int, str]]) -> None:
    with transaction(conn):
        conn.executemany(
            "UPDATE dowork_tasks SET progress = ? WHERE id = ? AND attempts = ?",
            [(text, task_id, token) for task_id, token, text in updates],
        )


def _next_due(conn: sqlite3.Connection, queue: str) -> float | None:
    plain, keyed = conn.execute(NEXT_DUE_SQL, (queue,)).fetchone()
    # A run_at of the wrong type (text) is no time: maintenance buries its record.
    times = [float(t) for t in (plain, keyed) if isinstance(t, int | float)]
    return min(times) if times else None


def _beat(
    conn: sqlite3.Connection,
    worker: WorkerBeat,
    now: float,
    ttl: float,
    finished: Mapping[int, Mapping[str, int]] | None,
) -> None:
    rows = [
        (worker.queue, int(minute), outcome, n)
        for minute, by_outcome in (finished or {}).items()
        for outcome, n in by_outcome.items()
    ]
    with transaction(conn):
        conn.execute("DELETE FROM dowork_workers WHERE expires_at <= ?", (now,))
        if ttl > 0:
            conn.execute(
                "INSERT OR REPLACE INTO dowork_workers (id, expires_at, beat) VALUES (?, ?, ?)",
                (worker.id, now + ttl, worker.to_json()),
            )
        else:
            conn.execute("DELETE FROM dowork_workers WHERE id = ?", (worker.id,))
        if rows:
            conn.executemany(
                "INSERT INTO dowork_stats (queue, minute, outcome, n) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (queue, minute, outcome) DO UPDATE SET n = n + excluded.n",
                rows,
            )
            conn.execute(
                "DELETE FROM dowork_stats WHERE queue = ? AND minute < ?",
                (worker.queue, minute_of(now) - STATS_MINUTES * 60),
            )
