"""A refused outcome is counted as one even when its task's STARTED mark was refused with it.

A worker paused past its lease (SIGSTOP, a long GC, a busy machine) may send a task's mark
and outcome in one batch once it runs again; the store refuses both. Filtering every refused
id that had a mark dropped the outcome's refusal too: no warning, ``refused`` not counted,
and the outcome taken for written (tests/faults' paused worker then waited for refusals that
never came).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

import dowork
from dowork import DurableSettings
from dowork.backends import (
    Backend,
    ClaimRequest,
    MemoryBackend,
    Outcome,
    RedisBackend,
    Settlement,
    SQLiteBackend,
)
from dowork.durable import DurableSource
from dowork.durable.flush import outcomes_refused
from tests.backends.test_contract import LEASE, NOW, rec, start
from tests.redis_server import RedisServer
from tests.upkeep import reap


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "memory":
        return MemoryBackend()
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path / "tasks.sqlite3")
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisBackend(server.url, prefix=f"m{uuid.uuid4().hex[:8]}")


def test_a_mark_and_an_outcome_both_refused_leave_one_outcome_refused(store: Backend) -> None:
    paused, fine = rec(), rec()

    async def main() -> tuple[list[str], list[str], list[str]]:
        await store.open()
        try:
            await store.push([paused, fine])
            await store.claim(ClaimRequest("q", NOW, 2, LEASE, "paused"))
            later = NOW + LEASE + 1
            assert await reap(store, "q", later, 3) == (2, 0)  # both leases lapsed, reserved
            taken = await store.claim(ClaimRequest("q", later, 2, LEASE, "rescuer"))
            assert {r.attempts for r in taken} == {2}
            batch = [
                Settlement(paused.id, 1, Outcome.STARTED, later),
                Settlement(paused.id, 1, Outcome.SUCCEEDED, later),
                Settlement(fine.id, 2, Outcome.STARTED, later),
            ]
            refused = await store.settle(batch)
            alone = [Settlement(fine.id, 2, Outcome.SUCCEEDED, later)]
            return refused, outcomes_refused(batch, refused), await store.settle(alone)
        finally:
            await store.close()

    refused, outcomes, after = asyncio.run(main())
    assert refused == [paused.id, paused.id]  # one per settlement: the mark and the outcome
    assert outcomes == [paused.id]  # one outcome refused: counted and logged (was none)
    assert after == []  # the rescuer's own mark went through: its outcome stands


def test_a_late_outcome_and_the_next_lease_s_retry_are_told_apart(store: Backend) -> None:
    """A worker's outcome still unwritten when the store leased the task here again (a lease
    lapsed, or a write whose reply was lost) may go out with the next lease's retry. In one
    batch the store refuses the first and writes the second, and answers one refusal: the
    flush took the retry for refused too, so its wake was not armed (nor would a group's
    callback be released, or a handle told its outcome was written). They go in two batches,
    one lease of a task each (``one_lease_each``), whose refusals say which."""
    queue = dowork.Queue("q", backend=store, log=False, durable=DurableSettings(lease=LEASE))
    task = rec(queue="other")  # (not this worker's queue: its fetcher leaves it alone)
    now = time.time()
    queue.start()
    try:
        engine, source = queue._engine, queue._engine.source
        assert isinstance(source, DurableSource)

        async def lease_twice() -> None:
            await store.push([task])
            (first,) = await store.claim(ClaimRequest("other", now, 1, LEASE, source.owner))
            await start(store, [first], now)
            assert await reap(store, "other", now + LEASE + 1, 3) == (1, 0)
            later = now + LEASE + 1
            (again,) = await store.claim(ClaimRequest("other", later, 1, LEASE, source.owner))
            assert again.attempts == 2

        engine.run_on_home(lease_twice())
        at = now + LEASE + 2
        late = Settlement(task.id, 1, Outcome.SUCCEEDED, at, result=b"1")
        retry = Settlement(task.id, 2, Outcome.RETRY, at, run_at=at + 3600, error="E")

        async def flush() -> list[float]:
            source._outbox.extend([late, retry])
            await source._flush_outbox()
            return list(source._due_times)

        due = engine.run_on_home(flush())
        assert source.refused == 1  # the late outcome
        assert due == [at + 3600]  # the retry was written: its wake is armed (was not)
        (stored,) = engine.run_on_home(store.get([task.id]))
    finally:
        queue.shutdown(timeout=5)
    assert (stored.status, stored.attempts, stored.crashes, stored.lost) == ("retrying", 2, 0, 1)
