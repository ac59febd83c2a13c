"""A producer process for the enqueue-kill scenarios: submit ids, record each once stored."""

from __future__ import annotations

from pathlib import Path

from tests.faults.harness import producer, record_submitted


def main(url: str, ledger: str, start: int, count: int, batch: int, keyed: bool = False) -> None:
    """Submit ``start..start+count`` one by one (``batch`` 0) or in ``map`` batches.

    ``keyed``: one by one, each with the idempotency key ``n<id>``, as a client that retries
    after a crash would.
    """
    queue, work = producer(url)
    where = Path(ledger)
    if keyed:
        for n in range(start, start + count):
            queue.enqueue(work.task(n, 0.0).configure(idempotency_key=f"n{n}"))
            record_submitted(where, [n])
    elif batch == 0:
        for n in range(start, start + count):
            work.submit(n, 0.0)
            record_submitted(where, [n])
    else:
        for first in range(start, start + count, batch):
            ids = range(first, min(first + batch, start + count))
            work.map([(n, 0.0) for n in ids])
            record_submitted(where, ids)
    queue.shutdown(timeout=1)
