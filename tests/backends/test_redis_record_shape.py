"""The fields of a task hash on Redis: what the scripts leave out, and records of earlier shapes.

A finished record keeps no ``finished_at`` field: it is its ``updated_at`` once ``expires_at``
is set (every field a write adds costs each later read and write of the hash a scan). Records
written by earlier versions, which hold it, are read with theirs and go on through every
script.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import redis

from dowork.backends import ClaimRequest, Outcome, RedisBackend, Settlement
from tests.backends.test_contract import LEASE, NOW, rec
from tests.redis_server import RedisServer
from tests.upkeep import reap


def test_a_finished_record_reads_its_updated_at_as_finished_at(redis_server: RedisServer) -> None:
    """Settled (both paths of settle.lua), cancelled, reaped and buried: no field, the time."""
    admin: Any = redis.Redis.from_url(redis_server.url)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    ok, failed, waiting, crashed, broken = (rec() for _ in range(5))
    key = f"{prefix}:task:"

    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=prefix)
        await b.push([ok, failed, crashed])
        assert len(await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))) == 3
        first = [Settlement(ok.id, 1, Outcome.SUCCEEDED, NOW + 1),
                 Settlement(crashed.id, 1, Outcome.STARTED, NOW + 1)]  # fmt: skip
        assert await b.settle(first) == []
        missing = Settlement(uuid.uuid4().hex, 1, Outcome.SUCCEEDED, NOW + 2)  # (full path)
        both = [Settlement(failed.id, 1, Outcome.FAILED, NOW + 2, error="E"), missing]
        assert await b.settle(both) == [missing.id]
        await b.push([waiting])
        assert await b.cancel(waiting.id, NOW + 3) == "cancelled"
        assert await reap(b, "q", NOW + LEASE + 4, 1) == (0, 1)
        await b.push([broken])
        admin.hset(key + broken.id, "attempts", "x")  # (the claim buries it: malformed)
        assert await b.claim(ClaimRequest("q", NOW + LEASE + 5, 10, LEASE, "w")) == []
        done = {r.id: r for r in await b.get([ok.id, failed.id, waiting.id, crashed.id, broken.id])}
        listed = {r.id: r for r in await b.list("q", limit=10)}
        await b.close()
        expected = {ok.id: NOW + 1, failed.id: NOW + 2, waiting.id: NOW + 3,
                    crashed.id: NOW + LEASE + 4, broken.id: NOW + LEASE + 5}  # fmt: skip
        for task_id, at in expected.items():
            assert admin.hexists(key + task_id, "finished_at") is False
            assert done[task_id].finished_at == done[task_id].updated_at == at
            assert listed[task_id].finished_at == at
        assert done[broken.id].reason == "malformed"

    asyncio.run(main())
    admin.close()


def test_a_record_of_the_earlier_shape_keeps_its_finished_at_until_requeued(
    redis_server: RedisServer,
) -> None:
    """A finished record holding ``finished_at`` (as written before) is read with it.

    Requeued, it loses it, and is then claimed and settled as any other.
    """
    admin: Any = redis.Redis.from_url(redis_server.url)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    task = rec()
    key = f"{prefix}:task:{task.id}"

    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=prefix)
        await b.push([task])
        await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        assert await b.settle([Settlement(task.id, 1, Outcome.FAILED, NOW + 1, error="E")]) == []
        admin.hset(key, "finished_at", repr(NOW + 0.5))  # (as an earlier version wrote it)
        (old,) = await b.get([task.id])
        assert (old.status, old.finished_at, old.updated_at) == ("failed", NOW + 0.5, NOW + 1)
        (listed,) = await b.list("q", ["failed"])
        assert listed.finished_at == NOW + 0.5
        assert await b.requeue([task.id], NOW + 2) == [task.id]
        (again,) = await b.get([task.id])
        assert (again.status, again.finished_at) == ("pending", None)
        assert admin.hexists(key, "finished_at") is False
        (claimed,) = await b.claim(ClaimRequest("q", NOW + 3, 1, LEASE, "w"))
        assert claimed.attempts == 2
        done = Settlement(task.id, 2, Outcome.SUCCEEDED, NOW + 4, result=b"1")
        assert await b.settle([done]) == []
        (last,) = await b.get([task.id])
        assert (last.status, last.finished_at, last.result) == ("succeeded", NOW + 4, b"1")
        await b.close()

    asyncio.run(main())
    admin.close()
