"""``asubmit()``'s push on a redis-py connection of the link's own (``redis.own``)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import redis as sync_redis

import dowork
from dowork.backends import RedisBackend
from dowork.backends.redis.own import OwnConnection
from dowork.errors import BackendUnavailable, OutcomeUnknown
from tests.redis_server import RedisServer
from tests.tcp_proxy import TcpProxy


def noop(n: int) -> int:
    return n


def producer(url: str, socket_timeout: float = 10.0) -> tuple[dowork.Queue, RedisBackend]:
    prefix = f"dowork:l{uuid.uuid4().hex[:8]}"
    backend = RedisBackend(url, prefix=prefix, socket_timeout=socket_timeout)
    queue = dowork.Queue("own", backend=backend, log=False)
    queue.task(name="noop")(noop)
    return queue, backend


def own_of(backend: RedisBackend) -> OwnConnection | None:
    """The link's first connection of its own (None: none made)."""
    (link,) = backend._links.values()
    return link.owned[0] if link.owned else None


def owned(backend: RedisBackend) -> list[OwnConnection]:
    (link,) = backend._links.values()
    return link.owned


async def until_closed_by_the_server(own: OwnConnection) -> None:
    """Wait until the event loop has read the end of the connection's stream (up to 5 s)."""
    reader = own._conn._reader
    for _ in range(500):
        if reader.at_eof():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the connection was not closed")


def test_pushes_after_the_first_go_on_the_links_own_connection(redis_server: RedisServer) -> None:
    queue, backend = producer(redis_server.url)

    async def main() -> list[OwnConnection]:
        first = await queue.asubmit(noop, 0)  # through the pool: reads the policy
        assert own_of(backend) is None
        second = await queue.asubmit(noop, 1)
        own = own_of(backend)
        assert isinstance(own, OwnConnection)
        assert not own.busy
        # Concurrent callers: each on a connection of the link's own, up to a quarter of
        # max_connections (50: 12), the others through the pool.
        many = await asyncio.gather(*[queue.asubmit(noop, n) for n in range(2, 202)])
        assert own_of(backend) is own
        assert len(owned(backend)) == 12
        assert not any(o.busy for o in owned(backend))
        ids = [t.id for t in (first, second, *many)]
        assert len(set(ids)) == 202
        records = await backend.get(ids)
        assert [r.status for r in records] == ["pending"] * 202
        assert [json.loads(r.payload)["a"] for r in records] == [[n] for n in range(202)]
        every = list(owned(backend))
        await queue.ashutdown()
        return every

    every = asyncio.run(main())
    assert all(own.closed for own in every)  # with the loop's link


def test_a_workers_claims_and_settlements_go_on_the_links_own_connections(
    redis_server: RedisServer,
) -> None:
    """Not only asubmit()'s pushes: every round trip after the link's first (``_raw``)."""
    queue, backend = producer(redis_server.url)
    handles = [queue.submit(noop, n) for n in range(20)]  # (the blocking client: no link)
    queue.start()
    try:
        assert [h.result(timeout=10) for h in handles] == list(range(20))
        (link,) = backend._links.values()  # the worker's, on its home loop
        assert link.owned  # its claims and settlements made them (its idle wait uses one)
    finally:
        queue.shutdown(timeout=5)


def test_a_stalled_reply_is_outcome_unknown_after_socket_timeout(own_server: RedisServer) -> None:
    proxy = TcpProxy(own_server.port).start()
    queue, backend = producer(proxy.url, socket_timeout=0.3)

    async def main() -> None:
        try:
            await queue.asubmit(noop, 0)
            await queue.asubmit(noop, 1)  # the own connection is up
            own = own_of(backend)
            proxy.mode = "stall"
            with pytest.raises(OutcomeUnknown) as caught:
                await asyncio.wait_for(queue.asubmit(noop, 2), 10)
            assert "TimeoutError: Timeout reading from socket (0.3 s)" in str(caught.value)
            assert own is not None
            assert not own.busy
            proxy.mode = "pass"
            task = await queue.asubmit(noop, 3)  # a new connection
            assert own_of(backend) is own
            assert (await backend.get([task.id]))[0].status == "pending"
            counts = await backend.counts("own")
            assert counts == {"pending": 4}  # the stalled push was stored: unknown, not lost
        finally:
            await queue.ashutdown(timeout=5)

    try:
        asyncio.run(main())
    finally:
        proxy.close()


def test_a_caller_cancelled_mid_push_leaves_the_connection_in_step(
    own_server: RedisServer,
) -> None:
    proxy = TcpProxy(own_server.port).start()
    queue, backend = producer(proxy.url)

    async def main() -> None:
        try:
            await queue.asubmit(noop, 0)
            await queue.asubmit(noop, 1)
            own = own_of(backend)
            proxy.mode = "stall"
            cancelled = asyncio.create_task(queue.asubmit(noop, 2))
            assert own is not None
            for _ in range(500):  # until it is sent, its reply held back (up to 5 s)
                if own.busy:
                    break
                await asyncio.sleep(0.01)
            assert own.busy
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert not own.busy
            proxy.mode = "pass"
            for n in (3, 4):  # one at a time: each on the own connection
                task = await queue.asubmit(noop, n)
                (record,) = await backend.get([task.id])
                assert json.loads(record.payload)["a"] == [n]
            assert own_of(backend) is own
        finally:
            await queue.ashutdown(timeout=5)

    try:
        asyncio.run(main())
    finally:
        proxy.close()


def test_a_connection_the_server_closed_while_idle_is_made_again(
    own_server: RedisServer,
) -> None:
    """The push is not sent on a closed connection (its outcome would be unknown)."""
    queue, backend = producer(own_server.url + "?client_name=dw-own")

    async def main() -> None:
        try:
            await queue.asubmit(noop, 0)
            await queue.asubmit(noop, 1)
            own = own_of(backend)
            assert own is not None
            with sync_redis.Redis.from_url(own_server.url) as admin:
                for client in admin.client_list():
                    if client["name"] == "dw-own":
                        admin.client_kill_filter(_id=client["id"])
            await until_closed_by_the_server(own)
            task = await queue.asubmit(noop, 2)  # not OutcomeUnknown: connected again
            assert (await backend.get([task.id]))[0].status == "pending"
            assert own_of(backend) is own
        finally:
            await queue.ashutdown(timeout=5)

    asyncio.run(main())


def test_a_refused_connection_is_backend_unavailable_not_outcome_unknown(
    own_server: RedisServer,
) -> None:
    proxy = TcpProxy(own_server.port).start()
    queue, backend = producer(proxy.url)

    async def main() -> None:
        try:
            await queue.asubmit(noop, 0)
            await queue.asubmit(noop, 1)
            own = own_of(backend)
            assert own is not None
            proxy.mode = "refuse"  # existing connections cut, new ones closed at once
            proxy.close_connections()
            await until_closed_by_the_server(own)
            with pytest.raises(BackendUnavailable) as caught:
                await queue.asubmit(noop, 2)
            assert not isinstance(caught.value, OutcomeUnknown)  # nothing was sent
        finally:
            proxy.mode = "pass"
            await queue.ashutdown(timeout=5)

    try:
        asyncio.run(main())
    finally:
        proxy.close()


def test_the_own_connection_follows_the_pools_settings(own_server: RedisServer) -> None:
    """A client name and RESP3, which the hand-written client before it did not follow."""
    url = own_server.url + "?client_name=dw-resp3&protocol=3"
    queue, backend = producer(url)

    async def main() -> list[str]:
        try:
            tasks = [await queue.asubmit(noop, n) for n in range(3)]
            assert isinstance(own_of(backend), OwnConnection)
            return [t.id for t in tasks]
        finally:
            with sync_redis.Redis.from_url(own_server.url) as admin:
                named = [c for c in admin.client_list() if c["name"] == "dw-resp3"]
            await queue.ashutdown(timeout=5)
            assert len(named) == 2  # the pool's connection and the own one
            assert {c["resp"] for c in named} == {"3"}

    ids = asyncio.run(main())
    with sync_redis.Redis.from_url(own_server.url) as db:
        entries = db.lrange(f"{backend.prefix}:q:own:inbox", 0, -1)
    assert all(any(i.encode() in entry for entry in entries) for i in ids)


def test_a_callers_client_gets_no_own_connection(redis_server: RedisServer) -> None:
    import redis.asyncio

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        backend = RedisBackend(client=client, prefix=f"dowork:l{uuid.uuid4().hex[:8]}")
        queue = dowork.Queue("own", backend=backend, log=False)
        queue.task(name="noop")(noop)
        try:
            tasks = [await queue.asubmit(noop, n) for n in range(3)]
            assert own_of(backend) is None  # its connections are the caller's to count
            records = await backend.get([t.id for t in tasks])
            assert [r.status for r in records] == ["pending"] * 3
        finally:
            await queue.ashutdown(timeout=5)
            await client.aclose()

    asyncio.run(main())


def test_the_own_connection_logs_in_and_selects_the_database(own_server: RedisServer) -> None:
    with sync_redis.Redis.from_url(own_server.url) as admin:
        admin.acl_setuser(
            "app", enabled=True, passwords=["+secret"], commands=["+@all"], keys=["*"]
        )
    url = f"redis://app:secret@127.0.0.1:{own_server.port}/5"
    queue, backend = producer(url)

    async def main() -> list[str]:
        try:
            tasks = [await queue.asubmit(noop, n) for n in range(3)]
            assert isinstance(own_of(backend), OwnConnection)
            return [t.id for t in tasks]
        finally:
            await queue.ashutdown(timeout=5)

    ids = asyncio.run(main())
    with sync_redis.Redis.from_url(url) as db5:
        inbox = f"{backend.prefix}:q:own:inbox"
        stored = db5.lrange(inbox, 0, -1) + [k for k in db5.keys(f"{backend.prefix}:task:*")]
    assert all(any(i.encode() in entry for entry in stored) for i in ids)
