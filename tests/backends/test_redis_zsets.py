"""The waiting and listing zsets are written as skiplists, and the member that makes them one
is gone again: a small zset is a listpack, whose every insert parses the scores before it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import redis

from dowork.backends import ClaimRequest, Outcome, RedisBackend, Settlement
from tests.backends.test_contract import LEASE, NOW, rec
from tests.redis_server import RedisServer


def test_small_waiting_and_pending_zsets_are_skiplists_with_only_task_members(
    redis_server: RedisServer,
) -> None:
    admin: Any = redis.Redis.from_url(redis_server.url)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    q = f"{prefix}:q:q:"

    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=prefix)
        pushed = [rec() for _ in range(3)]
        await b.push(pushed)  # (push.lua)
        assert b.push_sync([rec()], fresh=True)
        assert b.push_sync([rec()], fresh=True)
        (got,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))  # (drains: inbox_store)
        retry = Settlement(got.id, 1, Outcome.RETRY, NOW, run_at=NOW + 60, error="E")
        assert await b.settle([retry]) == []  # (the full path: flush)
        await b.close()

    asyncio.run(main())
    for name in ("waiting", "created.pending", "created.retrying"):
        assert admin.object("encoding", q + name) == b"skiplist", name
    assert admin.zcard(q + "waiting") == 5
    assert admin.zcard(q + "created.pending") == 4
    for key in admin.scan_iter(match=f"{prefix}:*"):
        if admin.type(key) == b"zset":
            assert all(not m.startswith(b"\xff") for m in admin.zrange(key, 0, -1)), key
    admin.close()
