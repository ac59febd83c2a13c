"""claim.lua returns a record as pushed in short ({id, name, payload, run_at, created_at[,
options]}) and any other as its hash: both read back as the record stored, leased.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import redis

from dowork.backends import ClaimRequest, Outcome, Record, RedisBackend, Settlement
from tests.backends.test_contract import LEASE, NOW, rec
from tests.redis_server import RedisServer


def leased(r: Record, now: float) -> Record:
    return dataclasses.replace(
        r, status="reserved", attempts=r.attempts + 1, lease_until=now + LEASE, owner="w",
        updated_at=now, slot=None, started=r.started,
    )  # fmt: skip


def test_claimed_records_are_the_stored_ones_leased(redis_server: RedisServer) -> None:
    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=f"test-{uuid.uuid4().hex[:12]}")
        plain, opts = rec(), rec(options='{"timeout": 5}')
        late = rec(run_at=NOW - 5, created_at=NOW - 9, name="other")
        await b.push([plain, opts, late])
        stored = {r.id: r for r in await b.list("q", limit=10)}
        (first,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        assert first == leased(stored[late.id], NOW)
        retry = Settlement(late.id, 1, Outcome.RETRY, NOW, run_at=NOW, error="E")
        assert await b.settle([retry]) == []
        stored[late.id] = (await b.get([late.id]))[0]  # (attempts 1: a hash, not as pushed)
        claimed = await b.claim(ClaimRequest("q", NOW + 1, 10, LEASE, "w"))
        assert sorted(r.id for r in claimed) == sorted(stored)
        for r in claimed:
            assert r == leased(stored[r.id], NOW + 1), r.id
        fresh = rec(options='{"x": 1}')
        assert b.push_sync([fresh], fresh=True)  # (the inbox, leased at once: lease_fresh)
        (got,) = await b.claim(ClaimRequest("q", NOW + 2, 10, LEASE, "w"))
        want = Record(fresh.id, "q", "job", fresh.payload, NOW, NOW, options='{"x": 1}')
        assert got == leased(want, NOW + 2)
        await b.close()

    asyncio.run(main())


def test_a_record_as_pushed_is_read_without_hgetall(redis_server: RedisServer) -> None:
    """claim.lua reads records as pushed by HLEN and HMGET: fewer strings for Lua to make.

    A retried one, with more fields, is read whole.
    """
    admin = redis.Redis.from_url(redis_server.url)

    def hgetalls() -> int:
        return int(admin.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))

    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=f"test-{uuid.uuid4().hex[:12]}")
        plain, opts, late = rec(), rec(options='{"timeout": 5}'), rec(run_at=NOW - 5)
        await b.push([plain, opts, late])
        admin.config_resetstat()
        claimed = await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))
        assert sorted(r.id for r in claimed) == sorted(r.id for r in (plain, opts, late))
        assert hgetalls() == 0
        retry = Settlement(late.id, 1, Outcome.RETRY, NOW, run_at=NOW, error="E")
        assert await b.settle([retry]) == []
        (again,) = await b.claim(ClaimRequest("q", NOW + 1, 10, LEASE, "w"))
        assert (again.id, again.attempts, again.error) == (late.id, 2, "E")
        assert hgetalls() == 1
        await b.close()

    asyncio.run(main())
    admin.close()
