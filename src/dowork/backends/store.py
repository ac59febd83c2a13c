"""The worker's seam: the ``Store`` protocol, its ``ClaimRequest`` and its ``Upkeep``.

A store keeps records and leases; it knows nothing of retries, backoff or functions. The
engine claims due records (each claim is a *lease* with a fencing token: the attempt number),
runs them, and settles each with one ``Settlement``. A settlement whose token no longer
matches (the lease expired and another worker took the task) is refused, so a worker that was
paused past its lease cannot overwrite the newer attempt's outcome.

``Store`` is what a worker needs of a store; ``StoreAdmin`` (``_protocol``) what operators'
tools need; ``Backend`` is a store offering both, as every store class does. A store may offer
more, each extra a small protocol of one method (``extras``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Protocol, runtime_checkable

from ._protocol import PRIORITY_AGING, Record, Settlement, StoreAdmin, WorkerBeat

__all__ = ["Backend", "Burials", "ClaimRequest", "Store", "Upkeep", "Upkept"]


#: A caller's list where a store adds ``(id, reason)`` for each record it dead-letters because
#: it cannot read it (``malformed``: written by another program, changed by hand), so that the
#: worker tells its ``on_buried`` hooks (see ``Store``). A store may add from another thread.
Burials = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What one ``Store.claim`` asks for: whose lease, how many records, under which limits.

    The first five fields are positional, in this order; the flow-control ones after
    ``alone_from`` are keywords only.
    """

    queue: str
    now: float  #: the time due records are claimed at (the store's shared clock)
    limit: int  #: at most this many records
    lease: float  #: seconds each lease lasts (``lease_until = now + lease``)
    owner: str  #: the claiming worker's id, ``host:pid:random``
    #: Claim fewer so that the queue never has more running records than this, across every
    #: worker (gotasks' ``WithMaxLimit``).
    max_running: int | None = None
    #: A record that crashed workers this many times or more is claimed alone.
    alone_from: int | None = None
    _: KW_ONLY
    #: Seconds of waiting one priority level is worth (``rank``).
    aging: float = PRIORITY_AGING
    #: Task name (``""``: the queue's own limit) -> ``(n, per)``: at most ``n`` starts per
    #: ``per`` seconds, across every worker.
    rates: Mapping[str, tuple[int, float]] | None = None
    #: At most this many running records per concurrency key, across every worker.
    per_key: int | None = None
    #: Where the store adds the records of the queue it dead-letters during this claim
    #: because it cannot read them (None: nobody asks).
    buried: Burials | None = None


@dataclass(frozen=True, slots=True)
class Upkeep:
    """The housekeeping steps one ``Store.upkeep`` call does: those given, in this order.

    ``beat`` records a worker alive; ``crash_budget`` reaps the queue's lapsed leases;
    ``purge`` deletes finished records past their retention. A step left out is not done.
    """

    queue: str
    now: float
    #: Record that this worker is alive until ``now + ttl`` (``ttl <= 0``: it left).
    beat: WorkerBeat | None = None
    ttl: float = 0.0
    #: With ``beat``: minute (epoch seconds, a multiple of 60) -> the outcomes the worker
    #: settled in it since its last beat (``succeeded``, ``retry``, ``failed``, ...).
    finished: Mapping[int, Mapping[str, int]] | None = None
    #: Reap the queue's lapsed leases, dead-lettering at this many crashes.
    crash_budget: int | None = None
    #: With ``crash_budget``: seconds a task the store handed out before leasing it may stay
    #: unleased, from when the store found it so, before the reap takes it back as a lapsed
    #: lease (Redis: a task a worker popped from the inbox whose lease was never recorded,
    #: because the worker died or the pop's reply was lost; see ``P:q:Q:transit`` in
    #: ``dowork.backends.redis``). None: the store's own bound. Stores that lease every task
    #: they hand out ignore it.
    transit: float | None = None
    #: Delete the finished records (of every queue) and idempotency keys past retention.
    purge: bool = False
    #: Where the reap step adds the records it dead-letters because it cannot read them
    #: (None: nobody asks).
    buried: Burials | None = None


@dataclass(slots=True)
class Upkept:
    """What one ``Store.upkeep`` did (zero for a step not asked for)."""

    requeued: int = 0  #: lapsed leases put back in line
    dead: int = 0  #: records dead-lettered for crashing their workers too often
    purged: int = 0  #: finished records deleted


@runtime_checkable
class Store(Protocol):
    """What a worker needs of a store of task records shared by every process that opens it.

    Push, claim, settle, renew leases, release, report progress, keep house, find the next
    due time and wait for work: nine methods. Opening and closing are ``StoreAdmin``'s.

    A record the store cannot read (written by another program, changed by hand) is
    dead-lettered ``malformed`` wherever the store finds it, by a claim, a settlement or the
    reaper, and added to the ``Burials`` list the call was given (``ClaimRequest.buried``,
    ``settle(buried=)``, ``Upkeep.buried``), once it is written: so each reaches the
    ``on_buried`` hooks of one worker, once.
    """

    #: False for the in-process store (closures allowed, nothing survives the process).
    durable: bool

    async def push(self, records: Sequence[Record], *, fresh: bool = False) -> dict[str, str]:
        """Store new records atomically: all of them or none; return once confirmed.

        ``fresh`` says every id was just drawn at random (128 bits): a store may skip the
        check that it is free.

        A record with an ``idempotency_key`` that an earlier record of its queue still holds
        (its ``idempotency_until`` is after this record's ``created_at``) is not stored; the
        others are, and the key then names the new record until its ``idempotency_until``.
        Returns ``{id of each record not stored: id of the record holding its key}``.

        Raises:
            DuplicateTask: a record's id is taken (nothing is stored).
        """

    async def claim(self, request: ClaimRequest) -> list[Record]:
        """Lease up to ``request.limit`` due records (``run_at <= now``), most urgent first.

        Urgency is ``rank(run_at, priority, aging)``: the earlier, the sooner; equal ranks go
        in push order. So equal priorities are first in, first out, and a record of priority
        ``p`` is claimed before one of priority ``p + d`` that became due more than
        ``d * aging`` seconds after it: no priority starves another beyond that bound.

        Each claimed record has ``attempts`` incremented (the fencing token), ``status``
        reserved, ``lease_until = now + lease``, ``owner`` set and ``slot`` cleared, all in
        one atomic step. It becomes running when its worker settles ``Outcome.STARTED``.
        With ``alone_from``, a record that crashed workers that many times or more is claimed
        alone: the claim returns either that one record, or the due records before the first
        such one. The engine passes ``crash_budget - 1``, so a task on its last crash runs in a
        worker that holds nothing else, and a poison task cannot use up the crash budget of
        the healthy tasks claimed with it.
        With ``max_running``, fewer are claimed so that the queue never has more than that
        many running records across every worker (gotasks' ``WithMaxLimit``).

        ``rates`` maps a task name to ``(n, per)``: at most ``n`` of its records start (are
        claimed) in any ``per`` seconds, across every worker; the name ``""`` is the queue's
        limit, shared by the records whose name has none (``rate_key``). The store keeps,
        per queue and limit, the last ``n`` start times it gave out; a record whose start
        time (``take_slot``) is later than ``now`` is not claimed but delayed: its ``run_at``
        and ``slot`` become that time (its status is unchanged), and when it is due it is
        claimed without asking the limit again. A claim looks at no more than ``2 * limit``
        due records, so it may return fewer than ``limit`` while more are due.

        Records are served by ``concurrency_key`` in turn (records without one share the key
        ``""``): the store remembers, per queue, the turn in which it last served each key
        that has waiting records (a key with none is forgotten, and counts as never served).
        Each step serves the key served longest ago (never served first; ties by its most
        urgent record), claiming that key's most urgent due record, so one key's backlog of
        any size cannot hold back another's. With ``per_key``, a key that already has that
        many running records (across every worker) is passed over. A record delayed by a
        rate limit does not use up its key's turn.

        A record the store cannot read is dead-lettered ``malformed`` instead of claimed, and
        added to ``request.buried``.
        """

    async def settle(
        self, settlements: Sequence[Settlement], *, buried: Burials | None = None
    ) -> list[str]:
        """Apply settlements; return the ids refused because their lease was lost.

        A settlement applies to a leased (reserved or running) record whose ``attempts`` is its
        token. ``STARTED`` turns reserved into running with ``started + 1``; an outcome on a
        reserved record with ``ran`` counts the start too. A settlement for a token whose
        lapsed lease was charged a crash (``charged``) shows its worker was alive: the charge
        moves from ``crashes`` to ``lost``, and if no lease was granted since (``attempts`` is
        still the token) and the record waits or was dead-lettered ``crashed_worker``, the
        outcome is applied after all (so a task that succeeded does not run again).
        Settlements apply in order, so a record's second outcome in one batch finds its lease
        over and is refused. One settlement that cannot be applied never stops the others. A
        leased record the store finds it cannot read, or whose outcome it cannot store, is
        dead-lettered ``malformed`` instead, and added to ``buried``.
        """

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], now: float, lease: float
    ) -> tuple[list[str], list[str]]:
        """Extend the leases ``(id, token)`` of reserved or running records to ``now + lease``.

        Returns ``(lost, cancel_requested)``: ids whose lease was lost (refused), and ids
        someone asked to cancel.
        """

    async def release(self, ids: Sequence[str], now: float) -> list[str]:
        """Make waiting records due at ``now`` if they were due later (a held task's turn came).

        ``scheduled`` ones become ``pending``; others (running, finished, unknown) are left
        alone. Returns the ids released, and wakes the workers of their queues.
        """

    async def progress(self, updates: Sequence[tuple[str, int, str]]) -> None:
        """Store the progress ``(id, token, JSON)`` tasks reported; ignore stale tokens.

        An update whose token is not the record's current attempt (the lease was lost and the
        task runs elsewhere now) or whose record is gone is dropped silently: progress is
        advisory.
        """

    async def upkeep(self, job: Upkeep) -> Upkept:
        """Do the housekeeping steps ``job`` asks for, in order: beat, reap, purge.

        **Beat** (``job.beat``): record that the worker is alive until ``now + ttl``
        (``ttl <= 0``: it left), and add its ``finished`` counts to the per-minute counts of
        its queue, kept for ``STATS_MINUTES``.

        **Reap** (``job.crash_budget``): requeue the queue's leased records whose lease
        expired. A lapsed ``reserved`` lease is not a crash: ``lost + 1``, back to waiting. A
        lapsed ``running`` one is: ``crashes + 1`` and its token added to ``charged``; at
        ``crash_budget`` crashes the record is dead-lettered ``crashed_worker``. Counted in
        ``requeued`` and ``dead``. A record of the queue the store finds it cannot read (a
        leased one, or a waiting one no claim would reach) is dead-lettered ``malformed`` and
        added to ``job.buried``.

        **Purge** (``job.purge``): delete finished records (and idempotency keys) past their
        retention, in every queue; counted in ``purged``. A dead-lettered record is kept
        ``keep_dead`` seconds when the store has that set (dead letters may hold personal
        data, or be wanted longer for inspection), else as any finished record.

        A step that fails raises, and the steps after it are not done: a caller that wants a
        step done whatever happens to another asks for each in its own call.
        """

    async def next_due(self, queue: str) -> float | None:
        """Return the earliest ``run_at`` of the queue's waiting records, or None."""

    async def wait(self, queue: str, timeout: float) -> None:
        """Return when new work may have arrived, or after ``timeout`` seconds."""


@runtime_checkable
class Backend(Store, StoreAdmin, Protocol):
    """A store offering both sides: the worker's ``Store`` and the operators' ``StoreAdmin``.

    ``MemoryBackend``, ``SQLiteBackend`` and ``RedisBackend`` are each one.
    """
