"""The fields of a task hash on Redis: what the scripts leave out, and records of earlier shapes.

A task hash holds no ``id`` field (its key holds the id) and a finished one no ``finished_at``:
it is its ``updated_at`` once ``expires_at`` is set (every field costs each later read and write
of the hash a scan). Records written by earlier versions, which hold them, are read with theirs
and go on through every script.
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


def test_no_task_hash_holds_an_id_field(redis_server: RedisServer) -> None:
    """However a task is written, its id is its key's alone, and read back.

    Pushed (push.lua, push_keyed.lua), through the inbox (stored by a drain, leased by a claim
    at once, popped by an idle worker) or retried.
    """
    admin: Any = redis.Redis.from_url(redis_server.url)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    plain, keyed, laned = rec(), rec(idempotency_key="k"), rec(concurrency_key="c")
    fresh = [rec() for _ in range(3)]

    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=prefix)
        await b.push([plain])
        await b.push([keyed])
        await b.push([laned])
        await b.push([fresh[0]], fresh=True)
        await b.get([fresh[0].id])  # (a drain stores it)
        await b.push([fresh[1]], fresh=True)
        claimed = await b.claim(ClaimRequest("q", NOW + 1, 10, LEASE, "w"))
        assert {r.id for r in claimed} == {plain.id, keyed.id, laned.id, fresh[0].id, fresh[1].id}
        retry = Settlement(plain.id, 1, Outcome.RETRY, NOW + 1, run_at=NOW + 1, error="E")
        assert await b.settle([retry]) == []
        (again,) = await b.claim(ClaimRequest("q", NOW + 2, 10, LEASE, "w"))  # (a whole hash)
        assert (again.id, again.attempts, again.error) == (plain.id, 2, "E")
        await b.push([fresh[2]], fresh=True)
        (popped,) = await b.wait_claim(ClaimRequest("q", NOW + 3, 10, LEASE, "w"), 1.0)
        assert popped.id == fresh[2].id
        assert await b.settle([Settlement(popped.id, 1, Outcome.SUCCEEDED, NOW + 4)]) == []
        ids = [plain.id, keyed.id, laned.id, *(r.id for r in fresh)]
        assert [r.id for r in await b.get(ids)] == ids
        assert {r.id for r in await b.list("q", limit=10)} == set(ids)
        await b.close()
        for task_id in ids:
            assert admin.hexists(f"{prefix}:task:{task_id}", "id") is False

    asyncio.run(main())
    admin.close()


def test_records_of_the_earlier_shape_with_an_id_field_go_through_every_script(
    redis_server: RedisServer,
) -> None:
    """A task hash holding its id (as written before) is claimed, settled, read and requeued.

    One as pushed, one retried with more fields; both go as any other, their id field kept.
    """
    admin: Any = redis.Redis.from_url(redis_server.url)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    pushed, retried = rec(), rec()

    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=prefix)
        await b.push([pushed, retried])
        for r in (pushed, retried):  # (as an earlier version wrote them)
            admin.hset(f"{prefix}:task:{r.id}", "id", r.id)
        admin.hset(f"{prefix}:task:{retried.id}", mapping={"attempts": "1", "error": "E"})
        claimed = await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))
        assert [(r.id, r.attempts) for r in claimed] == [(pushed.id, 1), (retried.id, 2)]
        done = [Settlement(pushed.id, 1, Outcome.SUCCEEDED, NOW + 1, result=b"1"),
                Settlement(retried.id, 2, Outcome.FAILED, NOW + 1, error="F")]  # fmt: skip
        assert await b.settle(done) == []
        got = await b.get([pushed.id, retried.id])
        assert [(r.id, r.status) for r in got] == [(pushed.id, "succeeded"), (retried.id, "failed")]
        listed = await b.list("q", limit=10)
        assert sorted(r.id for r in listed) == sorted([pushed.id, retried.id])
        assert await b.requeue([retried.id], NOW + 2) == [retried.id]
        (again,) = await b.claim(ClaimRequest("q", NOW + 3, 10, LEASE, "w"))
        assert (again.id, again.attempts, again.error) == (retried.id, 3, None)
        assert await b.settle([Settlement(again.id, 3, Outcome.SUCCEEDED, NOW + 4)]) == []
        assert await b.counts("q") == {"succeeded": 2}
        await b.close()
        assert admin.hget(f"{prefix}:task:{retried.id}", "id") == retried.id.encode()

    asyncio.run(main())
    admin.close()
