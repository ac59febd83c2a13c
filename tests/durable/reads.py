"""Reading a durable queue's records straight from its store, as the tests check them."""

from __future__ import annotations

from typing import Any

from dowork import Queue
from dowork.backends import Record
from dowork.durable import DurableSource


def records_in(queue: Queue) -> list[Record]:
    """The records of the queue ``jobs`` in ``queue``'s store (up to 1,000)."""
    backend = queue.backend
    assert backend is not None
    return queue._engine.run_on_home(backend.list("jobs", limit=1000))


def records_of(queue: Queue) -> dict[str, Record]:
    """``records_in`` by id."""
    return {r.id: r for r in records_in(queue)}


def count_looks(queue: Queue) -> list[int]:
    """Count the fetcher's looks for work (``_fetch`` calls) of ``queue``: ``[n]``, live."""
    source = queue._engine.source
    assert isinstance(source, DurableSource)
    looks = [0]
    fetch = source._fetch

    async def counted(now: float) -> Any:
        looks[0] += 1
        return await fetch(now)

    source._fetch = counted  # type: ignore[method-assign]
    return looks
