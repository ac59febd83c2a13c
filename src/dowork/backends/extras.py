"""What a store may offer beyond ``Store``: small protocols of one method each.

A store names those it offers among its class's bases (``class RedisStore(..., SupportsWake,
...)``), so that mypy checks each signature; ``StoreExtras.of`` finds them once, as the store's
bound methods, when a durable source is built (or when the CLI or the metrics need one), so
that nothing above the stores looks for a method by name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ._protocol import Record
from .store import ClaimRequest, Store

__all__ = [
    "StoreExtras", "SupportsCheckStore", "SupportsCheckWorker", "SupportsPermitEviction",
    "SupportsPushAnywhere", "SupportsPushSync", "SupportsResets", "SupportsServerTime",
    "SupportsWaitClaim", "SupportsWake",
]  # fmt: skip


@runtime_checkable
class SupportsWake(Protocol):
    """Waking idle workers of every process when a task fell due (every store here)."""

    async def wake(self, queue: str, at: float) -> None:
        """A task of ``queue`` fell due at ``at`` (a retry written earlier): wake an idle worker.

        Without it, an idle worker finds such a task at its next ``wait`` timeout.
        """


@runtime_checkable
class SupportsWaitClaim(Protocol):
    """Waiting for work and claiming it in one round trip (Redis)."""

    async def wait_claim(self, request: ClaimRequest, timeout: float) -> list[Record]:
        """``wait(request.queue, timeout)`` then ``claim(request)``, as one call.

        The claim runs the moment work arrives, so a pushed task starts at once; it returns
        what the claim leased (nothing after ``timeout`` seconds without work). Called only
        by a worker with a free slot: a task it takes may be stored as running at once.
        """


@runtime_checkable
class SupportsServerTime(Protocol):
    """A clock every worker shares (Redis ``TIME``), which leases are measured on."""

    async def server_time(self) -> float:
        """The store's time now, in epoch seconds.

        A worker whose own clock differs by 50 ms or more grants, renews and reaps leases on
        this one instead (measured once a minute), so that no worker expires its peers'
        leases early or keeps dead ones alive.
        """


@runtime_checkable
class SupportsCheckStore(Protocol):
    """Noticing that the store itself was deleted or replaced under a worker (SQLite)."""

    async def check_store(self) -> None:
        """Raise ``StoreLost`` if the store is not the one opened (called at every upkeep).

        The worker then stops for good (``Queue.run()`` raises the error), for a supervisor
        to start it again on the store there now.
        """


@runtime_checkable
class SupportsPushSync(Protocol):
    """Pushing from the calling thread, without the event loop (``submit()``: Redis, SQLite)."""

    def push_sync(self, records: Sequence[Record], *, fresh: bool = False) -> bool:
        """``push`` from any thread, blocking: True once the records are stored.

        False when it did nothing because it cannot take these records this way (records
        with idempotency keys; Redis: a store built on a caller's asyncio client; SQLite: a
        file not opened yet): the caller pushes them as usual then.

        Raises:
            DuplicateTask: a record's id is taken (nothing is stored).
        """


@runtime_checkable
class SupportsPushAnywhere(Protocol):
    """Pushing from any event loop of the process, not only the queue's home (SQLite, Redis)."""

    def pushes_anywhere(self) -> bool:
        """Whether ``push`` may run on any event loop of this process, now and later.

        ``asubmit()`` from a loop that is not its queue's home (a worker on a thread of its
        own, say) then pushes there instead of hopping to the home loop and back. False for
        a store bound to one loop (Redis built on a caller's asyncio client).
        """


@runtime_checkable
class SupportsCheckWorker(Protocol):
    """Refusing workers a store that may lose their tasks (Redis: a policy that evicts keys)."""

    async def check_worker(self) -> None:
        """Raise ``EvictionPolicyError`` if a worker must not claim here; else return.

        ``dowork worker`` calls it once at start, to fail in one line instead of at its first
        claim (Redis: a ``maxmemory-policy`` that may evict records, ``allow_eviction`` off).
        """


@runtime_checkable
class SupportsPermitEviction(Protocol):
    """Letting workers claim on a store that may evict tasks (``--allow-eviction``; Redis)."""

    def permit_eviction(self) -> None:
        """From now on, ``check_worker`` and claims accept a store that may evict records."""


@runtime_checkable
class SupportsResets(Protocol):
    """Counting the times the store was found wiped under this process (Redis)."""

    def resets_seen(self) -> int:
        """How many times this process found the store wiped (tasks stored before were lost).

        The metrics report it as ``queue_backend_resets``.
        """


class PushSync(Protocol):
    """The type of a store's bound ``push_sync`` (``SupportsPushSync``)."""

    def __call__(self, records: Sequence[Record], *, fresh: bool = False) -> bool: ...


@dataclass(frozen=True, slots=True)
class StoreExtras:
    """The extras a store offers: each its bound method, or None where the store has none.

    Found once (``of``) when a durable source is built, so that the calls that use one
    (``push_sync`` on every ``submit()``) do not look for it each time.
    """

    wake: Callable[[str, float], Awaitable[None]] | None = None
    wait_claim: Callable[[ClaimRequest, float], Awaitable[list[Record]]] | None = None
    server_time: Callable[[], Awaitable[float]] | None = None
    check_store: Callable[[], Awaitable[None]] | None = None
    push_sync: PushSync | None = None
    pushes_anywhere: Callable[[], bool] | None = None
    check_worker: Callable[[], Coroutine[Any, Any, None]] | None = None
    permit_eviction: Callable[[], None] | None = None
    resets_seen: Callable[[], int] | None = None

    @classmethod
    def of(cls, store: Store) -> StoreExtras:
        """The extras ``store`` offers (see ``SupportsWake`` and the others)."""
        return cls(
            wake=store.wake if isinstance(store, SupportsWake) else None,
            wait_claim=store.wait_claim if isinstance(store, SupportsWaitClaim) else None,
            server_time=store.server_time if isinstance(store, SupportsServerTime) else None,
            check_store=store.check_store if isinstance(store, SupportsCheckStore) else None,
            push_sync=store.push_sync if isinstance(store, SupportsPushSync) else None,
            pushes_anywhere=(
                store.pushes_anywhere if isinstance(store, SupportsPushAnywhere) else None
            ),
            check_worker=store.check_worker if isinstance(store, SupportsCheckWorker) else None,
            permit_eviction=(
                store.permit_eviction if isinstance(store, SupportsPermitEviction) else None
            ),
            resets_seen=store.resets_seen if isinstance(store, SupportsResets) else None,
        )
