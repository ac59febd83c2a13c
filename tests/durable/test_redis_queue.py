"""A queue on the Redis backend: several worker processes, garbage (faults: tests/faults)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from dowork import DurableSettings, Queue, SystemClock, TaskStatus
from dowork.backends import RedisBackend
from dowork.clock import TimerHandle
from tests.durable.harness import each_runs_once, idle_workers_run_each_once
from tests.redis_server import RedisServer

WAIT = 20.0


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    """A Redis URL with a key prefix of its own, so tests never see each other's keys."""
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:8]}"


@pytest.mark.realtime
@pytest.mark.timeout(240)
def test_four_processes_on_redis_run_each_task_exactly_once(url: str, tmp_path: Path) -> None:
    each_runs_once(url, tmp_path / "ledger.txt", 20_000, bulk=True)


@pytest.mark.realtime
@pytest.mark.timeout(180)
def test_tasks_submitted_to_idle_workers_run_exactly_once(url: str, tmp_path: Path) -> None:
    idle_workers_run_each_once(url, tmp_path / "ledger.txt", 3000)


def test_garbage_written_straight_into_redis_is_dead_lettered(url: str) -> None:
    prefix = url.rsplit("prefix=", 1)[1]
    client = redis.Redis.from_url(url.split("?")[0])
    queue = Queue(
        "junk", backend=url, log=False, durable=DurableSettings(lease=2.0, maintenance=0.25)
    )

    @queue.task(name="ok")
    def ok(n: int) -> int:
        return n

    now = time.time()
    key = f"{prefix}:task:bad1"
    client.hset(key, mapping={"id": "bad1", "queue": "junk", "name": "ok", "payload": b"\xff\xfe"})
    client.hset(key, mapping={"status": "pending", "attempts": 0, "run_at": repr(now)})
    client.hset(key, mapping={"created_at": repr(now), "updated_at": repr(now), "seq": 0})
    client.zadd(f"{prefix}:q:junk:waiting", {f"{0:016x}:bad1": now})
    client.zadd(f"{prefix}:q:junk:waiting", {"not-even-a-member": now})
    good = ok.submit(7)
    queue.start()
    try:
        assert good.result(WAIT) == 7
        deadline = time.monotonic() + WAIT
        while queue.status("bad1") is not TaskStatus.DEAD and time.monotonic() < deadline:
            time.sleep(0.02)
        assert queue.status("bad1") is TaskStatus.DEAD
        after = ok.submit(8)
        assert after.result(WAIT) == 8  # the worker kept going
    finally:
        queue.shutdown(timeout=2)
        client.close()


def test_garbage_in_the_inbox_is_dead_lettered_and_the_worker_goes_on(url: str) -> None:
    """Entries written straight into the inbox list that are no task (see inbox.lua)."""
    prefix = url.rsplit("prefix=", 1)[1]
    client = redis.Redis.from_url(url.split("?")[0])
    queue = Queue("junk", backend=url, log=False)

    @queue.task(name="ok")
    def ok(n: int) -> int:
        return n

    garbage = [b"garbage", b"r\0\0\0\0", b"rid\0ok\0not-a-time\0\0{}", b"rid-only", b"t", b""]
    queue.start()
    try:
        first = ok.submit(1)
        assert first.result(WAIT) == 1  # the worker is idle now, blocked on the inbox
        garbage.append(b"r%s\0ok\0%r\0\0{}" % (first.id.encode(), time.time()))  # id taken
        for entry in garbage:
            client.rpush(f"{prefix}:q:junk:inbox", entry)
            time.sleep(0.05)  # one at a time: some reach the idle worker, popped alone
        assert ok.submit(2).result(WAIT) == 2  # the worker kept going
        backend = RedisBackend(url.split("?")[0], prefix=prefix)
        counts = asyncio.run(backend.counts("junk"))
        assert counts == {"succeeded": 2, "dead": 6}  # the token ("t") carries no task
        assert queue.status(first.id) is TaskStatus.SUCCEEDED  # not overwritten
        dead = asyncio.run(backend.list("junk", statuses=["dead"]))
        assert sorted(r.payload for r in dead) == sorted(set(garbage) - {b"t"})  # kept to see
        assert all(r.id.startswith("junk-") and r.reason for r in dead)
    finally:
        queue.shutdown(timeout=2)
        client.close()


class _BehindClock(SystemClock):
    """A machine whose clock is two minutes slow."""

    def now(self) -> float:
        return time.time() - 120.0

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, when - self.now()), callback)


@pytest.mark.realtime
def test_leases_run_on_the_redis_clock_not_a_slow_worker_clock(url: str) -> None:
    """A worker two minutes slow would grant leases that look expired to everyone else."""
    queue = Queue(
        "skew",
        backend=url,
        clock=_BehindClock(),
        log=False,
        durable=DurableSettings(lease=30.0, maintenance=0.2),
    )
    started, release = threading.Event(), threading.Event()

    @queue.task(name="hold")
    def hold() -> str:
        started.set()
        release.wait(10)
        return "held"

    handle = hold.submit()
    queue.start()
    try:
        assert started.wait(WAIT)
        store = RedisBackend(url.split("?")[0], prefix=url.rsplit("prefix=", 1)[1])

        async def read() -> tuple[float, float | None]:
            try:
                (record,) = await store.get([handle.id])
                return await store.server_time(), record.lease_until
            finally:
                await store.close()

        server_now, lease_until = asyncio.run(read())
        assert lease_until is not None
        assert abs(lease_until - (server_now + 30.0)) < 5.0  # not ~90 s in the past
        release.set()
        assert handle.result(WAIT) == "held"
    finally:
        release.set()
        queue.shutdown(timeout=10)
