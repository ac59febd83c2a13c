"""Redis-only behaviour: URLs and secrets, prefixes, wake-ups across processes, outages."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.exceptions

import dowork
from dowork.backends import Backend, ClaimRequest, Outcome, RedisBackend, Settlement, open_backend
from dowork.backends.redis.scripts import SCRIPTS
from dowork.errors import BackendUnavailable, DuplicateTask, OutcomeUnknown
from tests.backends.test_contract import LEASE, NOW, rec
from tests.backends.test_redis_inbox import blocked, until_blocked
from tests.redis_replies import command
from tests.redis_server import RedisServer
from tests.upkeep import purge_finished


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def server(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's server, running again after the test whatever the test did to it."""
    redis_server.start()
    yield redis_server
    redis_server.start()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


# -- URLs and secrets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@example.org:6380/2", "redis://:***@example.org:6380/2"),
        ("rediss://alice:s3cret@example.org/0", "rediss://alice:***@example.org/0"),
        ("redis://example.org/0?password=s3cret", "redis://example.org/0?password=%2A%2A%2A"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        ("unix://:s3cret@/run/redis.sock", "unix://:***@/run/redis.sock"),
    ],
)
def test_repr_never_shows_the_password(url: str, shown: str) -> None:
    backend = RedisBackend(url, prefix="app")
    assert "s3cret" not in repr(backend)
    assert repr(backend) == f"RedisBackend({shown!r}, prefix='app')"


def test_rediss_means_tls_with_certificate_checks() -> None:
    client = RedisBackend("rediss://alice:s3cret@example.org:6390/3")._new_client()
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is redis.asyncio.SSLConnection
    assert kwargs["username"] == "alice"
    assert kwargs["password"] == "s3cret"
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("example.org", 6390, 3)
    assert kwargs.get("ssl_cert_reqs", "required") == "required"


def test_bad_urls_and_prefixes_are_refused() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisBackend("http://example.org")
    with pytest.raises(ValueError, match="prefix"):
        RedisBackend(prefix="")


def test_lazy_import_and_open_backend() -> None:
    assert isinstance(open_backend("redis://127.0.0.1:1/0"), RedisBackend)
    assert isinstance(RedisBackend(), Backend)
    code = "import sys, dowork, dowork.backends; assert 'redis' not in sys.modules, 'redis'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_errors_never_show_the_password(server: RedisServer) -> None:
    url = f"redis://alice:s3cret@127.0.0.1:{server.port}/0"
    server.stop()

    async def main() -> None:
        backend = RedisBackend(url, connect_timeout=1.0)
        with pytest.raises(BackendUnavailable) as caught:
            await backend.open()
        assert "s3cret" not in str(caught.value)
        assert "***" in str(caught.value)
        await backend.close()

    run(main)


# -- sharing one Redis -----------------------------------------------------------------------


def test_prefixes_keep_apps_apart(redis_server: RedisServer) -> None:
    async def main() -> None:
        one = RedisBackend(redis_server.url, prefix=f"a-{uuid.uuid4().hex}")
        two = RedisBackend(redis_server.url, prefix=f"b-{uuid.uuid4().hex}")
        record = rec()
        await one.push([record])
        await two.push([rec(id=record.id)])  # the same id is a different task there
        with pytest.raises(DuplicateTask):
            await one.push([rec(id=record.id)])
        assert len(await one.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))) == 1
        assert await one.counts("q") == {"reserved": 1}
        assert await two.counts("q") == {"pending": 1}
        (other,) = await two.get([record.id])
        assert other.status == "pending"
        await one.close()
        await two.close()

    run(main)


def test_acl_user_limited_to_its_prefix(redis_server: RedisServer, prefix: str) -> None:
    """Everything runs as a user that may touch only the prefix's keys and channel."""
    admin = redis.Redis.from_url(redis_server.url)
    user = f"dowork-{uuid.uuid4().hex[:8]}"
    rules = ["on", ">s3cret", f"~{prefix}:*", "resetchannels", f"&{prefix}:*"]
    rules += ["+@read", "+@write", "+@scripting", "+@pubsub", "+@connection", "+time"]
    admin.acl_setuser(user, reset=True, enabled=True)
    command(admin, "ACL", "SETUSER", user, *rules)
    url = f"redis://{user}:s3cret@127.0.0.1:{redis_server.port}/0"

    async def main() -> None:
        backend = RedisBackend(url, prefix=prefix)
        await backend.open()
        await backend.push([rec()])
        (claimed,) = await backend.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        assert await backend.settle([Settlement(claimed.id, 1, Outcome.SUCCEEDED, NOW)]) == []
        await backend.wait("q", 0.01)
        with pytest.raises(redis.exceptions.NoPermissionError):  # the ACL is in force
            await backend._link().client.get("elsewhere")
        await backend.close()

    try:
        run(main)
    finally:
        admin.acl_deluser(user)
        admin.close()


def test_times_round_trip_exactly(redis_server: RedisServer, prefix: str) -> None:
    async def main() -> None:
        backend = RedisBackend(redis_server.url, prefix=prefix)
        odd = 0.1 + 0.2 + 1_700_000_000.000_001
        record = rec(run_at=odd, created_at=odd / 3)
        await backend.push([record])
        assert await backend.next_due("q") == odd
        (got,) = await backend.get([record.id])
        assert (got.run_at, got.created_at) == (odd, odd / 3)
        (claimed,) = await backend.claim(ClaimRequest("q", odd, 1, 1 / 3, "w"))
        assert claimed.lease_until == odd + 1 / 3
        assert abs(await backend.server_time() - time.time()) < 5
        await backend.close()

    run(main)


# -- wake-ups across processes ---------------------------------------------------------------


def test_a_push_from_another_client_wakes_wait(redis_server: RedisServer, prefix: str) -> None:
    """Separate backend objects have separate connections, like separate processes."""

    async def main() -> None:
        producer = RedisBackend(redis_server.url, prefix=prefix)
        worker = RedisBackend(redis_server.url, prefix=prefix)
        started = time.monotonic()
        await worker.wait("q", 0.2)  # nothing pushed: the timeout passes (and we subscribe)
        assert time.monotonic() - started >= 0.15
        waiter = asyncio.create_task(worker.wait("q", 30.0))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await producer.push([rec()])
        await asyncio.wait_for(waiter, 2.0)

        await producer.push([rec(queue="other")])  # not our queue: no wake-up
        started = time.monotonic()
        await worker.wait("q", 0.2)
        assert time.monotonic() - started >= 0.15

        await producer.push([rec()])  # pushed while the worker was busy: not slept through
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await worker.wait("q", 30.0)
        assert time.monotonic() - started < 1.0
        await producer.close()
        await worker.close()

    run(main)


def test_wait_wakes_on_a_push_when_redis_lost_its_scripts(
    redis_server: RedisServer, prefix: str
) -> None:
    """A wait that finds work, and finds the drain script gone (a restarted Redis), returns.

    It loaded the script again and then slept out its whole timeout, unless a push came from
    its own process: a worker holding suspects or unsettled outcomes (which wait this way)
    missed other processes' pushes for up to ``maintenance`` seconds.
    """

    admin = redis.Redis.from_url(redis_server.url)

    async def main() -> None:
        worker = RedisBackend(redis_server.url, prefix=prefix)
        await worker.open()
        inbox = f"{worker._keys}q:q:inbox"  # (another process's push: no wake-up in this one)
        admin.script_flush()  # as after a restart
        admin.rpush(inbox, f"t{time.time()!r}")  # a wake-up token, as a push leaves
        started = time.monotonic()
        await worker.wait("q", 20.0)
        assert time.monotonic() - started < 5.0
        waiter = asyncio.create_task(worker.wait("q", 20.0))  # and it goes on waking
        await asyncio.sleep(0.05)
        admin.script_flush()
        admin.rpush(inbox, f"t{time.time()!r}")
        await asyncio.wait_for(waiter, 5.0)
        await worker.close()

    run(main)


def test_an_idle_worker_claims_in_the_round_trip_that_wakes_it(
    redis_server: RedisServer, prefix: str
) -> None:
    """wait_claim sends its claim with the blocking pop; the wake-up token's time (the
    pusher's now) makes a task pushed after the call began due, and the lease runs from it."""

    async def main() -> None:
        producer = RedisBackend(redis_server.url, prefix=prefix)
        worker = RedisBackend(redis_server.url, prefix=prefix)
        started = time.monotonic()
        # Timed out:
        assert await worker.wait_claim(ClaimRequest("q", NOW, 10, LEASE, "w"), 0.2) == []
        assert time.monotonic() - started >= 0.15
        waiting = asyncio.create_task(
            worker.wait_claim(ClaimRequest("q", NOW, 10, LEASE, "w"), 30.0)
        )
        await asyncio.sleep(0.05)
        assert not waiting.done()
        later = rec(run_at=NOW + 7, created_at=NOW + 7)  # due by the pusher's clock
        await producer.push([later])
        (claimed,) = await asyncio.wait_for(waiting, 2.0)
        assert (claimed.id, claimed.status, claimed.attempts) == (later.id, "reserved", 1)
        assert (claimed.lease_until, claimed.owner) == (NOW + 7 + LEASE, "w")
        (stored,) = await worker.get([later.id])
        assert (stored.status, stored.lease_until, stored.updated_at) == (
            "reserved", NOW + 7 + LEASE, NOW + 7,
        )  # fmt: skip
        scheduled = rec(run_at=NOW + 100, created_at=NOW + 8, status="scheduled")
        await producer.push([scheduled])  # wakes the worker, but is not due yet
        assert await worker.wait_claim(ClaimRequest("q", NOW, 10, LEASE, "w"), 5.0) == []
        assert await worker.counts("q") == {"reserved": 1, "scheduled": 1}
        await producer.close()
        await worker.close()

    run(main)


def test_a_busy_claim_wakes_an_idle_second_worker_with_one_token(
    redis_server: RedisServer, prefix: str
) -> None:
    """A claim that leaves due work behind wakes another worker: one token in the inbox, the
    same one kept while claims go on leaving work behind (not deleted and pushed again by
    each), gone after a claim that leaves nothing due, so that idle workers sleep."""
    admin: Any = redis.Redis.from_url(redis_server.url)
    inbox = f"{prefix}:q:q:inbox"

    async def main() -> None:
        busy = RedisBackend(redis_server.url, prefix=prefix)
        idle = RedisBackend(redis_server.url, prefix=prefix)
        await busy.push([rec() for _ in range(9)])
        assert len(await busy.claim(ClaimRequest("q", NOW, 2, LEASE, "a"))) == 2
        (token,) = admin.lrange(inbox, 0, -1)
        assert token.startswith(b"t")
        assert len(await busy.claim(ClaimRequest("q", NOW + 1, 2, LEASE, "a"))) == 2
        assert admin.lrange(inbox, 0, -1) == [token]  # (NOW's, not NOW + 1's)
        claimed = await idle.wait_claim(ClaimRequest("q", NOW + 1, 2, LEASE, "b"), 30.0)
        assert len(claimed) == 2  # (woken by it at once)
        await busy.wait("q", 0.01)  # a drain: the inbox is empty, 3 tasks due
        assert admin.exists(inbox) == 0
        before = blocked(admin)
        waiting = asyncio.create_task(
            idle.wait_claim(ClaimRequest("q", NOW + 2, 2, LEASE, "b"), 30.0)
        )
        await until_blocked(admin, before)
        assert len(await busy.claim(ClaimRequest("q", NOW + 2, 2, LEASE, "a"))) == 2
        assert len(await asyncio.wait_for(waiting, 5.0)) == 1  # woken, it claims the last
        assert admin.exists(inbox) == 0  # nothing left due: nobody to wake
        started = time.monotonic()
        assert await idle.wait_claim(ClaimRequest("q", NOW + 3, 2, LEASE, "b"), 0.3) == []
        assert time.monotonic() - started >= 0.25
        await busy.close()
        await idle.close()

    run(main)
    admin.close()


def test_push_from_a_thread_is_one_atomic_write(redis_server: RedisServer, prefix: str) -> None:
    """push_sync (what submit() and map() use) checks ids unless they are fresh, and a large
    push (several script calls in one transaction) writes all or nothing: also when Redis lost
    its scripts, whose transaction runs the pushes even though the check answers NOSCRIPT (it
    wrote the 2,500 records, then refused the retry as DuplicateTask: one of them)."""
    backend = RedisBackend(redis_server.url, prefix=prefix)
    taken = rec()
    assert backend.push_sync([taken]) is True
    with pytest.raises(DuplicateTask):
        backend.push_sync([rec(), rec(id=taken.id)])
    many = [rec() for _ in range(2500)]
    admin = redis.Redis.from_url(redis_server.url)
    admin.script_flush()  # as after a restart, then a push of one task loads push.lua alone
    admin.script_load(SCRIPTS["push"])
    with pytest.raises(DuplicateTask, match=taken.id):
        backend.push_sync([*many, rec(id=taken.id)])

    async def check_and_push_async() -> None:
        assert await backend.counts("q") == {"pending": 1}  # nothing of the refused pushes
        with pytest.raises(DuplicateTask):
            await backend.push([*many, rec(id=taken.id)])
        assert await backend.counts("q") == {"pending": 1}
        await backend.push(many[:1500])
        assert await backend.counts("q") == {"pending": 1501}
        await backend.close()

    run(check_and_push_async)
    admin.script_flush()  # as after a restart
    admin.close()
    assert backend.push_sync(many[1500:], fresh=True) is True  # loads the scripts again
    pages = asyncio.run(backend.list("q", limit=10_000, newest_first=False))
    assert [r.id for r in pages] == [taken.id, *(r.id for r in many)]  # in push order
    assert RedisBackend(client=redis.asyncio.Redis(), prefix=prefix).push_sync([rec()]) is False


def test_one_backend_serves_successive_event_loops(redis_server: RedisServer, prefix: str) -> None:
    """A queue's home loop can change; each loop gets its own connections, closed with it."""
    backend = RedisBackend(redis_server.url, prefix=prefix)
    record = rec()

    async def push() -> None:
        await backend.push([record])
        await backend.wait("q", 0.01)

    async def get() -> None:
        (got,) = await backend.get([record.id])
        assert got.id == record.id

    run(push)  # never closed: the loop's shutdown closes its connections
    run(get)
    gc.collect()  # an unclosed connection would warn here (warnings are errors)
    assert backend._links == {}


# -- a server that goes away -----------------------------------------------------------------


def test_server_down_raises_unavailable_then_recovers(server: RedisServer, prefix: str) -> None:
    async def main() -> None:
        backend = RedisBackend(server.url, prefix=prefix, connect_timeout=1.0)
        other = RedisBackend(server.url, prefix=prefix)
        await backend.open()
        await backend.wait("q", 0.01)
        server.stop()
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: backend.push([rec()]),
            lambda: backend.claim(ClaimRequest("q", NOW, 1, LEASE, "w")),
            lambda: backend.get(["x"]),
            lambda: backend.counts("q"),
        ]
        for call in calls:
            started = time.monotonic()
            # A pooled connection may take the request before the close is seen: a push then
            # cannot know whether Redis ran it (OutcomeUnknown), reads still say unavailable.
            with pytest.raises((BackendUnavailable, OutcomeUnknown)):
                await call()
            assert time.monotonic() - started < 3.0
        started = time.monotonic()
        await backend.wait("q", 0.2)  # no server: wait still returns in time
        assert time.monotonic() - started < 1.0

        server.start()  # empty: nothing was persisted
        await backend.push([rec()])  # the same object reconnects
        assert await backend.counts("q") == {"pending": 1}
        await backend.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))
        await backend.wait("q", 0.01)  # the push's wake-up token is consumed
        waiter = asyncio.create_task(backend.wait("q", 30.0))
        await asyncio.sleep(0.05)
        await other.push([rec()])
        await asyncio.wait_for(waiter, 2.0)
        await backend.close()
        await other.close()

    run(main)


# -- the durable engine on Redis -------------------------------------------------------------


def test_a_queue_runs_tasks_through_redis(redis_server: RedisServer, prefix: str) -> None:
    backend = RedisBackend(redis_server.url, prefix=prefix)
    queue = dowork.Queue(
        "jobs",
        backend=backend,
        log=False,
        durable=dowork.DurableSettings(lease=2.0, maintenance=0.25),
    )
    try:

        @queue.task(name="add")
        def add(a: int, b: int) -> int:
            return a + b

        queue.start()
        handles = [add.submit(i, i) for i in range(20)]
        assert [h.result(10.0) for h in handles] == [2 * i for i in range(20)]
        assert queue.status(handles[0].id) is dowork.TaskStatus.SUCCEEDED
    finally:
        queue.shutdown(timeout=5)


def test_a_given_client_is_used_and_left_open(redis_server: RedisServer, prefix: str) -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        RedisBackend(client=redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True))

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        backend = RedisBackend(client=client, prefix=prefix)
        assert repr(backend) == f"RedisBackend(client=..., prefix={prefix!r})"
        await backend.open()
        await backend.push([rec()])
        await backend.wait("q", 0.01)
        await backend.close()
        assert await client.exists(f"{prefix}:q:q:waiting") == 1  # still usable
        await client.aclose()

    run(main)


def test_listing_keys_follow_every_change_and_go_with_the_queue(
    redis_server: RedisServer, prefix: str
) -> None:
    """The per-status created zsets (running tasks: the running zset) and the queues set track
    each status change; an empty queue leaves no key behind."""

    async def main() -> None:
        backend = RedisBackend(redis_server.url, prefix=prefix)
        client = backend._link().client
        records = [rec() for _ in range(5)]
        await backend.push(records)
        one, two, three, _running = await backend.claim(ClaimRequest("q", NOW, 4, LEASE, "w"))
        await backend.settle(
            [
                Settlement(one.id, 1, Outcome.SUCCEEDED, NOW),
                Settlement(two.id, 1, Outcome.RETRY, NOW, run_at=NOW),
                Settlement(three.id, 1, Outcome.DEAD, NOW),
            ]
        )
        assert await backend.cancel(records[4].id, NOW) == "cancelled"
        assert await backend.requeue([three.id], NOW) == [three.id]
        sizes = {
            s: await client.zcard(f"{prefix}:q:q:created.{s}")
            for s in ("pending", "retrying", "running", "succeeded", "cancelled", "dead")
        }
        assert sizes == {
            "pending": 1, "retrying": 1, "running": 0, "succeeded": 1, "cancelled": 1, "dead": 0,
        }  # fmt: skip
        running = await client.zrangebyscore(f"{prefix}:q:q:running", "-inf", "(inf")
        assert running == [_running.id.encode()]  # and a member that keeps it a skiplist
        assert await client.object("encoding", f"{prefix}:q:q:running") == b"skiplist"
        assert await client.exists(f"{prefix}:q:q:created") == 0
        assert await client.smembers(f"{prefix}:queues") == {b"q"}
        assert await backend.purge("q", ["pending", "retrying", "reserved"]) == 3
        assert await purge_finished(backend, NOW + 10**9) == 2
        assert await client.keys(f"{prefix}:q:*") == []
        assert await client.exists(f"{prefix}:queues", f"{prefix}:expiry") == 0
        await backend.close()

    run(main)
