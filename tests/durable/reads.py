"""Reading a durable queue's records straight from its store, as the tests check them."""

from __future__ import annotations

from dowork import Queue
from dowork.backends import Record


def records_in(queue: Queue) -> list[Record]:
    """The records of the queue ``jobs`` in ``queue``'s store (up to 1,000)."""
    backend = queue.backend
    assert backend is not None
    return queue._engine.run_on_home(backend.list("jobs", limit=1000))


def records_of(queue: Queue) -> dict[str, Record]:
    """``records_in`` by id."""
    return {r.id: r for r in records_in(queue)}
