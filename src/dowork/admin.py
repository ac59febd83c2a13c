"""Queue maintenance shared by the ``dowork`` command and the web dashboard.

Both front ends re-queue, cancel and purge through these functions, so a task revived from
the browser goes through exactly the same backend calls as one revived from a shell.
"""

from __future__ import annotations

from collections.abc import Sequence

from .backends import StoreAdmin
from .backends._protocol import LEASED
from .task import TaskStatus

__all__ = ["PURGEABLE", "STATUSES", "cancel_task", "purge_queue", "requeue_finished"]

#: Every record status, in the order people read them (``TaskStatus``'s).
STATUSES = tuple(status.value for status in TaskStatus)

#: What a purge deletes when no status is named: everything but leased (reserved or running)
#: tasks.
PURGEABLE = tuple(s for s in STATUSES if s not in LEASED)


async def requeue_finished(
    store: StoreAdmin, queue: str, statuses: Sequence[str], now: float
) -> list[str]:
    """Send every task of ``queue`` in ``statuses`` (failed, dead, ...) back to pending.

    The ids are read a page at a time (ids only are kept), then re-queued in one call.
    Returns the ids re-queued.
    """
    ids: list[str] = []
    while True:
        batch = await store.list(queue, list(statuses), limit=500, offset=len(ids))
        if not batch:
            break
        ids.extend(r.id for r in batch)
    return await store.requeue(ids, now) if ids else []


async def purge_queue(store: StoreAdmin, queue: str, statuses: Sequence[str] | None = None) -> int:
    """Delete the tasks of ``queue`` in ``statuses`` (default: all but running); say how many."""
    return await store.purge(queue, list(statuses) if statuses else list(PURGEABLE))


async def cancel_task(store: StoreAdmin, task_id: str, now: float) -> str:
    """Cancel one task by id; the backend's answer (``cancelled``, ``requested``, ...)."""
    return await store.cancel(task_id, now)
