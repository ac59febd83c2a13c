"""The operator side of ``MemoryBackend``: the ``StoreAdmin`` methods the CLI and dashboard use.

``MemoryAdmin`` opens and closes (nothing to do), looks records up by id (``get``), cancels
one (``cancel``), counts a queue's records per status, lists the queues and a queue's records
page by page, sends finished records back to pending (``requeue``), deletes a queue's records
(``purge``), and reads the workers' beats and per-minute outcome counts (``workers``,
``stats``; workers write them with ``upkeep``, in ``memory``). Each method works on
``MemoryBackend``'s dicts under its lock, as the worker side does.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from ._protocol import (
    LEASED,
    REQUEUABLE,
    WAITING,
    Record,
    Wakeups,
    WorkerBeat,
    check_page,
    minute_of,
    status_filter,
)

__all__ = ["MemoryAdmin"]


class MemoryAdmin:
    """``MemoryBackend``'s methods of the ``StoreAdmin`` protocol, over its records."""

    keep_finished: float
    _lock: threading.Lock
    _records: dict[str, Record]
    _order: dict[str, int]  #: id -> push order
    _expires: dict[str, float]  #: id of a finished record -> when it is forgotten
    _wakeups: Wakeups
    _workers: dict[str, tuple[float, str]]  #: id -> (expires_at, beat JSON)
    _stats: dict[str, dict[int, dict[str, int]]]  #: queue -> minute -> counts

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def get(self, ids: Sequence[str]) -> list[Record]:
        """Copies of the records with these ids."""
        with self._lock:
            return [replace(self._records[i]) for i in ids if i in self._records]

    async def cancel(self, task_id: str, now: float) -> str:
        """Cancel a waiting record or flag a running one."""
        with self._lock:
            record = self._records.get(task_id)
            if record is None:
                return "unknown"
            if record.status in WAITING:
                record.status = "cancelled"
                record.error = "cancelled"
                record.finished_at = record.updated_at = now
                self._expires[task_id] = now + self.keep_finished
                return "cancelled"
            if record.status in LEASED:
                record.cancel_requested = True
                return "requested"
            return "finished"

    async def counts(self, queue: str) -> dict[str, int]:
        """Records per status."""
        counts: dict[str, int] = {}
        with self._lock:
            for record in self._records.values():
                if record.queue == queue:
                    counts[record.status] = counts.get(record.status, 0) + 1
        return counts

    async def queues(self) -> list[str]:
        """Names of the queues with records, sorted."""
        with self._lock:
            return sorted({r.queue for r in self._records.values()})

    async def requeue(self, ids: Sequence[str], now: float) -> list[str]:
        """Send failed, cancelled and dead records back to pending, keeping ``attempts``."""
        requeued = []
        queues = set()
        with self._lock:
            for task_id in dict.fromkeys(ids):
                record = self._records.get(task_id)
                if record is None or record.status not in REQUEUABLE:
                    continue
                record.status = "pending"
                record.run_at = record.updated_at = now
                record.error = record.reason = record.result = None
                record.crashes = 0
                record.charged = None
                record.cancel_requested = False
                record.lease_until = record.owner = record.finished_at = None
                self._expires.pop(task_id, None)
                requeued.append(task_id)
                queues.add(record.queue)
        self._wakeups.notify(queues)
        return requeued

    async def purge(self, queue: str, statuses: Sequence[str] | None = None) -> int:
        """Delete the queue's records in ``statuses`` (all but running ones for None)."""
        wanted = status_filter(statuses)
        with self._lock:
            gone = [
                r.id
                for r in self._records.values()
                if r.queue == queue
                and (r.status not in LEASED if wanted is None else r.status in wanted)
            ]
            for task_id in gone:
                del self._records[task_id]
                self._order.pop(task_id, None)
                self._expires.pop(task_id, None)
        return len(gone)

    async def workers(self, now: float) -> list[WorkerBeat]:
        """The workers whose beat has not expired."""
        with self._lock:
            alive = sorted((i, text) for i, (until, text) in self._workers.items() if until > now)
        return [WorkerBeat.from_json(text) for _, text in alive]

    async def stats(self, queue: str, since: float) -> dict[int, dict[str, int]]:
        """Per-minute outcome counts of the queue from ``since`` on."""
        first = minute_of(since)
        with self._lock:
            minutes = self._stats.get(queue, {})
            return {m: dict(c) for m, c in sorted(minutes.items()) if m >= first}

    # ``list`` comes last: a method of that name hides the builtin in annotations below it.
    async def list(
        self,
        queue: str,
        statuses: Sequence[str] | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[Record]:
        """One page of the queue's records by ``created_at`` (sorted in memory)."""
        check_page(limit, offset)
        wanted = status_filter(statuses)
        with self._lock:
            found = [
                r
                for r in self._records.values()
                if r.queue == queue and (wanted is None or r.status in wanted)
            ]
            found.sort(key=lambda r: (r.created_at, self._order[r.id]), reverse=newest_first)
            return [replace(r) for r in found[offset : offset + limit]]
