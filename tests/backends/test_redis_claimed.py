"""claim.lua returns a record as pushed in short (id, name, payload, run_at, created_at,
options, in the answer itself) and any other as its hash: both read back as the record
stored, leased.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import redis

from dowork.backends import ClaimRequest, Outcome, Record, RedisBackend, Settlement
from dowork.backends.redis.claim import split_claimed
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


def test_a_claim_answer_mixes_short_records_and_hashes_in_claim_order() -> None:
    """Records as pushed come as 6 values in the answer itself, options None when absent;
    any other as a list (its hash); one whose text is not UTF-8 goes to bury, its token 1."""
    hashed = [b"id", b"h", b"queue", b"q", b"name", b"job", b"payload", b"P", b"status",
              b"retrying", b"run_at", b"3", b"created_at", b"1", b"seq", b"0" * 16,
              b"attempts", b"1"]  # fmt: skip
    answer = [b"10", b"40", [],
              b"a", b"job", b"A", b"1.5", b"1", None,
              hashed,
              b"bad", b"\xff", b"B", b"2", b"2", None,
              b"c", b"job", b"C", b"2.5", b"2", b'{"x": 1}']  # fmt: skip
    claimed, unfit = split_claimed(answer, "q", "w")
    assert [(r.id, r.payload, r.run_at, r.options, r.attempts) for r in claimed] == [
        ("a", b"A", 1.5, None, 1), ("h", b"P", 3.0, None, 2), ("c", b"C", 2.5, '{"x": 1}', 1)
    ]  # fmt: skip
    assert all((r.status, r.lease_until, r.owner, r.updated_at) == ("reserved", 40.0, "w", 10.0)
               for r in claimed)  # fmt: skip
    assert [(i, token) for i, token, _ in unfit] == [(b"bad", 1)]
