"""A refused outcome is counted as one even when its task's STARTED mark was refused with it.

A worker paused past its lease (SIGSTOP, a long GC, a busy machine) may send a task's mark
and outcome in one batch once it runs again; the store refuses both. Filtering every refused
id that had a mark dropped the outcome's refusal too: no warning, ``refused`` not counted,
and the outcome taken for written (tests/faults' paused worker then waited for refusals that
never came).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from dowork.backends import (
    Backend,
    ClaimRequest,
    MemoryBackend,
    Outcome,
    RedisBackend,
    Settlement,
    SQLiteBackend,
)
from dowork.durable.flush import outcomes_refused
from tests.backends.test_contract import LEASE, NOW, rec
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
