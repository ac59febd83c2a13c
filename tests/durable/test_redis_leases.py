"""Crash accounting on Redis through a real network path (issue 14 item 2).

A worker that never received its claim's reply, or that was cut off from Redis past its
lease while its task ran, did not crash: the first lapse is a lost lease, the second is
charged and then taken back by the late outcome, which stands (the task is not run again).
The network faults come from ``tests/tcp_proxy.py`` between the worker and a real Redis.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from dowork import DurableSettings, Queue
from dowork.backends import ClaimRequest, Record, RedisBackend
from dowork.errors import BackendError
from tests.backends.test_contract import LEASE, NOW, rec
from tests.backends.test_redis_inbox import blocked, until_blocked
from tests.redis_server import RedisServer
from tests.tcp_proxy import TcpProxy
from tests.upkeep import reap

WAIT = 10.0


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(redis_server.port).start()
    yield proxy
    proxy.close()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def test_a_lost_claim_reply_is_a_lost_lease_not_a_crash(
    redis_server: RedisServer, proxy: TcpProxy, prefix: str
) -> None:
    """The claim ran in Redis but its reply never came: the lease lapses as lost."""

    async def main() -> None:
        worker = RedisBackend(proxy.url, prefix=prefix, socket_timeout=0.5)
        admin = RedisBackend(redis_server.url, prefix=prefix)
        task = rec(run_at=NOW + 100)
        await admin.push([task])
        # (Loads the script.)
        assert await worker.claim(ClaimRequest("q", NOW, 10, LEASE, "w1")) == []
        # The eviction policy was read for a minute: the next round trip is the claim.
        proxy.mode = "drop"
        with pytest.raises(BackendError):
            await worker.claim(ClaimRequest("q", NOW + 100, 10, LEASE, "w1"))
        assert proxy.dropped == 1
        (held,) = await admin.get([task.id])
        assert (held.status, held.owner, held.attempts) == ("reserved", "w1", 1)
        for n in range(2, 6):  # lost again and again: never a crash, never dead-lettered
            at = NOW + 100 + (n - 1) * (LEASE + 1)
            assert await reap(admin, "q", at, 2) == (1, 0)
            (back,) = await admin.get([task.id])
            assert (back.status, back.crashes, back.lost) == ("pending", 0, n - 1)
            (again,) = await admin.claim(ClaimRequest("q", at, 1, LEASE, f"w{n}"))
            assert again.attempts == n
        await worker.close()
        await admin.close()

    asyncio.run(main())


def _record(backend: RedisBackend, task_id: str, loop: asyncio.AbstractEventLoop) -> Record:
    async def get() -> Record:
        (found,) = await backend.get([task_id])
        return found

    return asyncio.run_coroutine_threadsafe(get(), loop).result(WAIT)


def _wait_for(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.mark.realtime
def test_a_worker_cut_off_from_redis_past_its_lease_is_not_charged_a_crash(
    redis_server: RedisServer, proxy: TcpProxy, prefix: str
) -> None:
    """Its late outcome takes the crash back and stands: the task ran once, succeeded."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    admin = RedisBackend(redis_server.url, prefix=prefix)
    backend = RedisBackend(proxy.url, prefix=prefix, socket_timeout=0.5)
    queue = Queue(
        "jobs",
        backend=backend,
        log=False,
        concurrency=1,
        durable=DurableSettings(lease=0.6, maintenance=0.1, prefetch=0),
    )
    gate = threading.Event()
    runs: list[int] = []

    @queue.task(name="slow")
    def slow() -> str:
        runs.append(1)
        gate.wait(WAIT)
        return "finished"

    try:
        handle = slow.submit()
        queue.start()
        _wait_for(lambda: _record(admin, handle.id, loop).status == "running")
        proxy.mode = "refuse"  # the worker's connections are cut, and it cannot reconnect
        proxy.close_connections()
        time.sleep(0.8)  # past the lease: another worker's reaper charges a crash
        reaping = reap(admin, "jobs", time.time(), 3)
        assert asyncio.run_coroutine_threadsafe(reaping, loop).result(WAIT) == (1, 0)
        charged = _record(admin, handle.id, loop)
        assert (charged.status, charged.crashes, charged.charged) == ("retrying", 1, "1")
        proxy.mode = "pass"
        gate.set()
        assert handle.result(WAIT) == "finished"
        _wait_for(lambda: _record(admin, handle.id, loop).status == "succeeded")
        done = _record(admin, handle.id, loop)
        assert (done.crashes, done.lost, done.started, done.charged) == (0, 1, 1, None)
        assert runs == [1]  # the outcome stood: not run again
    finally:
        gate.set()
        proxy.mode = "pass"
        queue.shutdown(timeout=5)
        asyncio.run_coroutine_threadsafe(admin.close(), loop).result(WAIT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()


def test_a_lost_pop_reply_runs_the_task_again_within_the_lease(
    redis_server: RedisServer, proxy: TcpProxy, prefix: str
) -> None:
    """An idle worker's pop moved a task into taken, but its reply never came: the task is
    nobody's until a drain holds it for its worker, and the queue's reaper requeues it
    ``transit`` (lease - maintenance) later, as a crashed worker's (a minute before)."""
    direct = redis.Redis.from_url(redis_server.url)
    transit = LEASE - 5.0

    async def main() -> None:
        worker = RedisBackend(proxy.url, prefix=prefix)  # (blocks 5 s a pop: no reply meanwhile)
        admin = RedisBackend(redis_server.url, prefix=prefix)
        await worker.open()
        before = blocked(direct)
        waiting = asyncio.create_task(
            worker.wait_claim(ClaimRequest("q", time.time(), 10, LEASE, "w1"), 30.0)
        )
        await until_blocked(direct, before)
        proxy.mode = "drop"  # the pop's reply is lost, and its connection cut
        task = rec()
        assert admin.push_sync([task], fresh=True) is True
        with pytest.raises(BackendError):
            await asyncio.wait_for(waiting, WAIT)
        assert proxy.dropped == 1
        assert direct.llen(f"{prefix}:q:q:taken") == 1  # popped, never taken
        now = time.time()
        assert await reap(admin, "q", now + transit - 1, 3, transit) == (0, 0)  # (drains it)
        (held,) = await admin.get([task.id])
        assert (held.status, held.owner) == ("running", "~")
        assert await reap(admin, "q", now + transit + 1, 3, transit) == (1, 0)
        (again,) = await admin.claim(ClaimRequest("q", now + transit + 1, 10, LEASE, "w2"))
        assert (again.id, again.attempts) == (task.id, 2)
        await worker.close()
        await admin.close()

    try:
        asyncio.run(main())
    finally:
        direct.close()


@pytest.mark.realtime
def test_a_worker_runs_a_task_popped_and_never_taken_within_its_lease(
    redis_server: RedisServer, prefix: str
) -> None:
    """A task left in taken (its pop's reply lost, or its worker killed before the take): a
    worker of lease 1 s and maintenance 0.25 s runs it within about a lease, not a minute."""
    direct = redis.Redis.from_url(redis_server.url)
    queue = Queue(
        "jobs",
        backend=RedisBackend(redis_server.url, prefix=prefix),
        log=False,
        concurrency=1,
        durable=DurableSettings(lease=1.0, maintenance=0.25, prefetch=0),
    )
    runs: list[float] = []

    @queue.task(name="once")
    def once() -> str:
        runs.append(time.monotonic())
        return "ran"

    try:
        handle = once.submit()  # (into the inbox: no worker runs yet)
        assert direct.lmove(f"{prefix}:q:jobs:inbox", f"{prefix}:q:jobs:taken") is not None
        began = time.monotonic()
        queue.start()
        assert handle.result(WAIT) == "ran"
        assert len(runs) == 1
        assert runs[0] - began < 1.0 + 2 * 0.25 + 2.0  # (a loaded machine's slack)
    finally:
        queue.shutdown(timeout=5)
        direct.close()
