"""A starting worker claims before its first beat and purge, but after its first reap.

The beat and the purge wait for the first claim (a worker starts its first task sooner); the
reap does not, so a task whose worker died long ago keeps its place at the head of the queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dowork import Queue
from dowork.backends import Backend, ClaimRequest
from dowork.backends.store import Upkeep

WAIT = 10.0
pytestmark = pytest.mark.realtime


def record_calls(store: Backend, claimed: list[list[str]] | None = None) -> list[str]:
    """The store's claims and upkeep steps, in the order the worker makes them.

    The ids each claim returned go to ``claimed``.
    """
    calls: list[str] = []
    upkeep, claim = store.upkeep, store.claim
    wait_claim = getattr(store, "wait_claim", None)

    async def upkept(job: Upkeep) -> Any:
        steps = [("beat", job.beat), ("reap", job.crash_budget), ("purge", job.purge or None)]
        calls.extend(name for name, asked in steps if asked is not None)
        return await upkeep(job)

    def claims(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def claiming(*args: Any) -> Any:
            calls.append("claim")
            records = await call(*args)
            if claimed is not None:
                claimed.append([r.id for r in records])
            return records

        return claiming

    setattr(store, "upkeep", upkept)  # noqa: B010
    setattr(store, "claim", claims(claim))  # noqa: B010
    if wait_claim is not None:
        setattr(store, "wait_claim", claims(wait_claim))  # noqa: B010
    return calls


def test_the_first_claim_goes_after_the_reap_and_before_the_beat_and_purge(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    queue = queues(store, concurrency=1)
    done = threading.Event()

    @queue.task(name="job")
    def job() -> None:
        done.set()

    job.submit()
    calls = record_calls(store)
    queue.start()
    assert done.wait(WAIT)
    deadline = time.monotonic() + WAIT
    while calls.count("claim") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls[:6] == ["reap", "claim", "beat", "reap", "purge", "claim"]


def test_an_orphan_found_at_start_keeps_its_place_at_the_head(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    queue = queues(store, concurrency=1)
    done = threading.Event()

    @queue.task(name="job")
    def job(name: str) -> None:
        if name == "b2":
            done.set()

    orphan = job.submit("orphan")
    # Its worker claimed it and died before starting it: the lease lapses at once.
    gone = ClaimRequest("jobs", time.time(), 1, 0.001, "gone:1:dead")
    (record,) = queue._engine.run_on_home(store.claim(gone))
    assert record.id == orphan.id
    backlog = [job.submit(f"b{i}") for i in range(3)]
    time.sleep(0.01)  # past the lease
    claimed: list[list[str]] = []
    record_calls(store, claimed)
    queue.start()
    assert done.wait(WAIT)
    assert orphan.result(WAIT) is None
    assert claimed[0][0] == orphan.id  # first in the worker's first claim
    assert {i for ids in claimed for i in ids} == {orphan.id, *(t.id for t in backlog)}
