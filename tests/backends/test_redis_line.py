"""``asubmit()``'s push on a connection of its own per event loop (``redis.line.Line``)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import redis.asyncio

import dowork
from dowork.backends import RedisBackend
from dowork.backends.redis.line import Line
from dowork.errors import OutcomeUnknown
from tests.redis_server import RedisServer
from tests.tcp_proxy import TcpProxy


def noop(n: int) -> int:
    return n


def producer(url: str, socket_timeout: float = 10.0) -> tuple[dowork.Queue, RedisBackend]:
    prefix = f"dowork:l{uuid.uuid4().hex[:8]}"
    backend = RedisBackend(url, prefix=prefix, socket_timeout=socket_timeout)
    queue = dowork.Queue("line", backend=backend, log=False)
    queue.task(name="noop")(noop)
    return queue, backend


def line_of(backend: RedisBackend) -> object:
    (link,) = backend._links.values()
    return link.line


def test_pushes_after_the_first_share_one_line_pipelined(redis_server: RedisServer) -> None:
    queue, backend = producer(redis_server.url)

    async def main() -> object:
        first = await queue.asubmit(noop, 0)  # through redis-py: reads the policy
        assert line_of(backend) is None
        second = await queue.asubmit(noop, 1)
        line = line_of(backend)
        assert isinstance(line, Line)
        many = await asyncio.gather(*[queue.asubmit(noop, n) for n in range(2, 202)])
        assert line_of(backend) is line  # one connection, requests pipelined on it
        ids = [t.id for t in (first, second, *many)]
        assert len(set(ids)) == 202
        records = await backend.get(ids)
        assert [r.status for r in records] == ["pending"] * 202
        assert [json.loads(r.payload)["a"] for r in records] == [[n] for n in range(202)]
        await queue.ashutdown()
        return line

    line = asyncio.run(main())
    assert isinstance(line, Line)
    assert line.closed  # with the loop's link


def test_a_stalled_reply_is_outcome_unknown_after_socket_timeout(own_server: RedisServer) -> None:
    proxy = TcpProxy(own_server.port).start()
    queue, backend = producer(proxy.url, socket_timeout=0.3)

    async def main() -> None:
        try:
            await queue.asubmit(noop, 0)
            await queue.asubmit(noop, 1)  # the line is up
            proxy.mode = "stall"
            with pytest.raises(OutcomeUnknown) as caught:
                await asyncio.wait_for(queue.asubmit(noop, 2), 10)
            assert "Timeout" in str(caught.value)
            proxy.mode = "pass"
            task = await queue.asubmit(noop, 3)  # a new connection
            assert (await backend.get([task.id]))[0].status == "pending"
            counts = await backend.counts("line")
            assert counts == {"pending": 4}  # the stalled push was stored: unknown, not lost
        finally:
            await queue.ashutdown(timeout=5)

    try:
        asyncio.run(main())
    finally:
        proxy.close()


def test_a_caller_cancelled_mid_push_leaves_the_line_in_step(own_server: RedisServer) -> None:
    proxy = TcpProxy(own_server.port).start()
    queue, backend = producer(proxy.url)

    async def main() -> None:
        try:
            await queue.asubmit(noop, 0)
            await queue.asubmit(noop, 1)
            line = line_of(backend)
            proxy.mode = "stall"
            cancelled = asyncio.create_task(queue.asubmit(noop, 2))
            await asyncio.sleep(0.1)  # sent, its reply held back
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            proxy.mode = "pass"
            after = await asyncio.gather(*[queue.asubmit(noop, n) for n in (3, 4)])
            records = await backend.get([t.id for t in after])
            assert [json.loads(r.payload)["a"] for r in records] == [[3], [4]]
            assert line_of(backend) is line
        finally:
            await queue.ashutdown(timeout=5)

    try:
        asyncio.run(main())
    finally:
        proxy.close()


@pytest.mark.parametrize(
    ("url", "lined"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("redis://user:secret@127.0.0.1:6379/3", True),
        ("unix:///tmp/redis.sock?db=2", True),
        ("rediss://127.0.0.1:6379/0", False),  # TLS: redis-py's connection
        ("redis://127.0.0.1:6379/0?client_name=app", False),  # a setting a line ignores
        ("redis://127.0.0.1:6379/0?protocol=3", False),
    ],
)
def test_a_line_follows_only_the_settings_it_knows(url: str, lined: bool) -> None:
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, socket_timeout=10.0)
    assert isinstance(Line.of(pool, 10.0, 5.0), Line) is lined


def test_a_line_logs_in_and_selects_the_database(own_server: RedisServer) -> None:
    import redis as sync_redis

    with sync_redis.Redis.from_url(own_server.url) as admin:
        admin.acl_setuser(
            "app", enabled=True, passwords=["+secret"], commands=["+@all"], keys=["*"]
        )
    url = f"redis://app:secret@127.0.0.1:{own_server.port}/5"
    queue, backend = producer(url)

    async def main() -> list[str]:
        try:
            tasks = [await queue.asubmit(noop, n) for n in range(3)]
            assert isinstance(line_of(backend), Line)
            return [t.id for t in tasks]
        finally:
            await queue.ashutdown(timeout=5)

    ids = asyncio.run(main())
    with sync_redis.Redis.from_url(url) as db5:
        inbox = f"{backend.prefix}:q:line:inbox"
        stored = db5.lrange(inbox, 0, -1) + [k for k in db5.keys(f"{backend.prefix}:task:*")]
    assert all(any(i.encode() in entry for entry in stored) for i in ids)
