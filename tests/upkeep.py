"""The steps of ``Store.upkeep`` one at a time, as the tests of stores check them."""

from __future__ import annotations

from collections.abc import Mapping

from dowork.backends import Store
from dowork.backends._protocol import WorkerBeat
from dowork.backends.store import Upkeep


async def reap(
    store: Store, queue: str, now: float, crash_budget: int, transit: float | None = None
) -> tuple[int, int]:
    """Reap the queue's lapsed leases: ``(requeued, dead)`` (``transit``: see ``Upkeep``)."""
    done = await store.upkeep(Upkeep(queue, now, crash_budget=crash_budget, transit=transit))
    return done.requeued, done.dead


async def purge_finished(store: Store, now: float) -> int:
    """Delete finished records past their retention; return how many."""
    done = await store.upkeep(Upkeep("", now, purge=True))
    return done.purged


async def write_beat(
    store: Store,
    worker: WorkerBeat,
    now: float,
    ttl: float,
    finished: Mapping[int, Mapping[str, int]] | None = None,
) -> None:
    """Record ``worker`` alive until ``now + ttl`` with its ``finished`` counts."""
    await store.upkeep(Upkeep(worker.queue, now, beat=worker, ttl=ttl, finished=finished))
