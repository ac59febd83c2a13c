"""What every store shares: ``Record``, ``Settlement``, constants, pure helpers, ``StoreAdmin``.

The worker's protocol (``Store``) and ``Backend``, a store offering both, are in ``store``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "LEASED",
    "PRIORITY_AGING",
    "REQUEUABLE",
    "STATS_MINUTES",
    "StoreAdmin",
    "WAITING",
    "WHILE_UNFINISHED",
    "Outcome",
    "Record",
    "Settlement",
    "Wakeups",
    "WorkerBeat",
    "attempt_line",
    "charge",
    "check_page",
    "late_applies",
    "retention",
    "minute_of",
    "status_filter",
    "uncharge",
]


class Outcome(StrEnum):
    """What a settlement does to a claimed record."""

    SUCCEEDED = "succeeded"  #: finished; the result is kept for the retention time
    RETRY = "retry"  #: back to waiting until ``run_at``
    FAILED = "failed"  #: finished unsuccessfully (attempts ran out, DoNotRetry, ...)
    CANCELLED = "cancelled"  #: finished because it was cancelled
    DEAD = "dead"  #: dead-lettered: could not run at all (unknown name, undecodable, crashes)
    #: Not an end: the claimed attempt's function started (``reserved`` becomes ``running``
    #: and ``started`` counts it). Refused like any settlement whose lease was lost.
    STARTED = "started"


#: (An enum's members read from the class cost a Python ``__getattr__`` hook each, 3.11.)
_DEAD = Outcome.DEAD

#: Record statuses in which a task waits to be claimed.
WAITING = ("pending", "scheduled", "retrying")

#: Record statuses of a leased task: claimed by a worker but not started (``reserved``), or
#: with its function started (``running``). Only a lapsed ``running`` lease is a crash.
LEASED = ("reserved", "running")

#: How many charged tokens a record remembers (``Record.charged``).
_CHARGED_KEPT = 16

#: ``Record.idempotency_until`` of a *unique* key: held while its task waits or runs, not for a
#: time window (``Task.configure(unique_key=...)``).
WHILE_UNFINISHED = float("inf")

#: Seconds of waiting one priority level is worth by default (``Store.claim``'s ``aging``): a
#: due task is claimed before any task that became due more than this much later per level of
#: priority above it has, so a low priority waits at most ``levels * aging`` behind high ones.
PRIORITY_AGING = 60.0

#: Record statuses of a task that finished unsuccessfully, which ``StoreAdmin.requeue`` revives.
REQUEUABLE = ("failed", "cancelled", "dead")


@dataclass(slots=True)
class Record:
    """One task as a backend stores it. ``payload`` and ``result`` are codec bytes."""

    id: str
    queue: str
    name: str
    payload: bytes
    run_at: float
    created_at: float
    status: str = "pending"
    options: str | None = None  #: JSON of per-enqueue option overrides
    attempts: int = 0  #: leases granted (claims); the fencing token of the current lease
    lease_until: float | None = None
    owner: str | None = None
    crashes: int = 0  #: leases that expired while the function ran (its worker died)
    cancel_requested: bool = False
    error: str | None = None
    reason: str | None = None
    result: bytes | None = None
    updated_at: float = 0.0
    finished_at: float | None = None
    keep: float | None = field(default=None)  #: seconds to keep the finished record
    progress: str | None = None  #: JSON ``[value, message, at]`` the task last reported
    #: A caller's key de-duplicating enqueues: while an earlier record of the same queue holds
    #: it (until ``idempotency_until``), a push stores nothing for this record.
    idempotency_key: str | None = None
    idempotency_until: float | None = None
    #: One JSON object per settled attempt, a line each (times, duration, error, traceback).
    history: str | None = None
    #: Higher is claimed sooner (``Store.claim``); -9 to 9, 0 by default.
    priority: int = 0
    #: The key (a tenant, a customer) whose tasks take turns with other keys' at claim, and
    #: of which at most ``per_key`` run at once (``Store.claim``); a non-empty string.
    concurrency_key: str | None = None
    #: The start time a rate limit reserved for this task (then also its ``run_at``): when it
    #: is due, the claim takes it without asking the limit again. Cleared by the claim.
    slot: float | None = None
    #: Attempts whose function started (a ``STARTED`` mark, or an outcome of a run).
    started: int = 0
    #: Leases that lapsed before the function started (a worker that died holding it unstarted,
    #: a lost claim reply), or whose worker turned out to be alive (a late settlement): not
    #: crashes, never a reason to dead-letter.
    lost: int = 0
    #: The tokens whose lapsed lease was charged a crash, comma-separated (the last 16), so
    #: that a late settlement from a worker that was alive can take the charge back.
    charged: str | None = None


@dataclass(slots=True)
class Settlement:
    """The outcome of one claimed attempt, written back to the backend."""

    id: str
    token: int  #: the attempts count the lease was granted with
    outcome: Outcome
    now: float
    run_at: float = 0.0  #: for RETRY
    error: str | None = None
    reason: str | None = None
    result: bytes | None = None
    keep: float | None = None  #: retention of a finished record (None: the backend default)
    payload: bytes | None = None  #: for RETRY: new arguments to resume from (a chain's step)
    #: One JSON line describing the attempt, appended to the record's ``history`` (see
    #: ``attempt_line``).
    attempt: str | None = None
    #: The function ran (False for a record dead-lettered or held back before it started): an
    #: outcome settled on a ``reserved`` record whose ``STARTED`` mark was not written yet
    #: counts the start (``started + 1``).
    ran: bool = True
    #: Seconds the attempt's function ran, when it did not raise and ``attempt`` is None: its
    #: history line is then written from it (``attempt_line``; a store may keep a short form:
    #: ``_history``, Redis's ``history``).
    took: float | None = None


@dataclass(slots=True)
class WorkerBeat:
    """What a worker process says about itself at each maintenance step, for dashboards.

    ``running`` lists ``[task id, task name]`` of (at most 20 of) the ``held`` tasks it has
    claimed; ``schedules`` describes its recurring schedules (``name``, ``trigger``,
    ``next_run``, ``runs``).
    """

    id: str  #: the engine's lease owner, ``host:pid:random``
    queue: str
    host: str
    pid: int
    started_at: float
    seen_at: float = 0.0
    concurrency: int = 0
    held: int = 0
    running: list[list[str]] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        """Encode for storage."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerBeat:
        """Decode what ``to_json`` stored (fields this version does not know are ignored)."""
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in _BEAT_FIELDS})


_BEAT_FIELDS = frozenset(WorkerBeat.__dataclass_fields__)

#: Minutes of per-minute outcome counts a backend keeps for ``stats``.
STATS_MINUTES = 60


@runtime_checkable
class StoreAdmin(Protocol):
    """What operators' tools need of a store: look at queues and tasks, requeue, purge.

    The ``dowork`` command, the dashboard and dump requeues use only these; workers use the
    whole ``Backend`` (``Store`` and ``StoreAdmin``).
    """

    async def open(self) -> None:
        """Connect and create what is missing (tables, scripts); idempotent."""

    async def close(self) -> None:
        """Release connections."""

    async def get(self, ids: Sequence[str]) -> list[Record]:
        """Return the records with these ids (unknown ids are left out)."""

    async def cancel(self, task_id: str, now: float) -> str:
        """Cancel a task by id and say what happened.

        ``"cancelled"``: it was waiting and will never run; ``"requested"``: it is leased
        (reserved or running) and its worker is told; ``"finished"`` or ``"unknown"``:
        nothing to do.
        """

    async def counts(self, queue: str) -> dict[str, int]:
        """Return the number of records per status in the queue."""

    async def queues(self) -> list[str]:
        """Return the sorted names of the queues that hold at least one record."""

    async def requeue(self, ids: Sequence[str], now: float) -> list[str]:
        """Send finished-unsuccessfully records (failed, cancelled, dead) back to waiting.

        Each becomes ``pending`` with ``run_at = now``, its error, reason, result, crashes,
        cancel request and retention cleared; ``attempts`` is kept, since it is the fencing
        token and must never go down. Atomic per call. Returns the ids requeued, in the order
        given; unknown ids and records in any other status are left alone and left out.
        """

    async def purge(self, queue: str, statuses: Sequence[str] | None = None) -> int:
        """Delete the queue's records in ``statuses`` and return how many were deleted.

        ``None`` means every status except the leased ones (``reserved`` and ``running``): a
        leased record is deleted only when its status is named, since its worker still holds
        it (its settlement is refused).
        """

    # -- workers and throughput (dashboards) --

    async def workers(self, now: float) -> list[WorkerBeat]:
        """Return the workers whose last beat has not expired at ``now``, by id."""

    async def stats(self, queue: str, since: float) -> dict[int, dict[str, int]]:
        """Return the queue's per-minute outcome counts for the minutes from ``since`` on."""

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
        """Return one page of the queue's records, for inspection without loading the queue.

        Records are ordered by ``created_at`` (ties in push order), newest first unless
        ``newest_first`` is false, optionally only those in ``statuses``; ``offset`` records
        are skipped and at most ``limit`` returned.

        Raises:
            ValueError: a negative ``limit`` or ``offset``.
        """


class Wakeups:
    """In-process wake-ups for idle workers, safe across threads and event loops.

    A push in one thread wakes workers of the same queue waiting on any loop of this process;
    other processes are found by polling (SQLite) or blocking reads (Redis).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}

    def notify(self, queues: Iterable[str]) -> None:
        """Wake every worker waiting on one of ``queues``."""
        with self._lock:
            woken = [w for q in queues for w in self._waiters.pop(q, ())]
        for loop, future in woken:
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody to wake
                loop.call_soon_threadsafe(_wake, future)

    async def wait(self, queue: str, timeout: float) -> None:
        """Return on ``notify(queue)`` or after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            self._waiters.setdefault(queue, set()).add(entry)
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await future
        except TimeoutError:
            pass
        finally:
            with self._lock:
                waiting = self._waiters.get(queue)
                if waiting is not None:
                    waiting.discard(entry)


def attempt_line(s: Settlement) -> str | None:
    """The line a settlement appends to its record's history: ``attempt``, or one from ``took``.

    A worker sends ``took`` for an attempt that did not raise (most of them), so that a store
    writing a shorter form of that line need not parse it back.
    """
    took = s.took
    if took is None:
        return s.attempt
    outcome = s.outcome._value_  # (its text: formatting the member is a Python call)
    return f'{{"n":{s.token},"start":{s.now - took!r},"took":{took!r},"outcome":"{outcome}"}}'


def retention(
    outcome: Outcome | None, keep: float | None, keep_finished: float, keep_dead: float | None
) -> float:
    """Seconds to keep a finished record.

    Its own ``keep`` if set, else ``keep_dead`` for a dead letter (when set), else the
    backend's ``keep_finished``.
    """
    if keep is not None:
        return keep
    if outcome is _DEAD and keep_dead is not None:
        return keep_dead
    return keep_finished


def check_page(limit: int, offset: int) -> None:
    """Refuse a negative page size or offset for ``StoreAdmin.list``.

    Raises:
        ValueError: ``limit`` or ``offset`` is negative.
    """
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must not be negative, not {limit} and {offset}")


def status_filter(statuses: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """Return the distinct statuses of a filter, sorted; a lone string is one status.

    A plain ``str`` is a ``Sequence[str]`` too, so ``purge(q, "failed")`` would otherwise
    match by its letters.
    """
    if statuses is None:
        return None
    if isinstance(statuses, str):
        return (statuses,)
    return tuple(sorted(set(statuses)))


def charge(charged: str | None, token: int) -> str:
    """Add ``token`` to a record's ``charged`` list (keeping the last 16)."""
    tokens = charged.split(",") if charged else []
    tokens.append(str(token))
    return ",".join(tokens[-_CHARGED_KEPT:])


def uncharge(charged: str | None, token: int) -> tuple[bool, str | None]:
    """Take ``token`` out of a ``charged`` list: ``(it was there, the list left)``."""
    if not charged:
        return False, charged
    tokens = charged.split(",")
    mark = str(token)
    if mark not in tokens:
        return False, charged
    tokens.remove(mark)
    return True, ",".join(tokens) or None


def late_applies(status: str, reason: str | None, attempts: int, token: int) -> bool:
    """Whether a late settlement (its crash taken back) is applied after all.

    Only if no lease was granted since (``attempts`` is still its token) and the record waits
    or was dead-lettered for crashes (see ``Store.settle``).
    """
    revivable = status in WAITING or (status == "dead" and reason == "crashed_worker")
    return attempts == token and revivable


def minute_of(when: float) -> int:
    """The start of the minute holding ``when`` (epoch seconds), as ``stats`` keys it."""
    return int(when // 60) * 60


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
