"""Redis safety: the README's ACL user, a wiped store (epoch), eviction and out-of-memory, and
a Redis that is down when producers and workers start (reliability.md rows 4, 5 and 19)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

import pytest
import redis
import redis.exceptions
from prometheus_client import CollectorRegistry

import dowork
from dowork.backends import ClaimRequest, Outcome, RedisBackend, Settlement, open_backend
from dowork.errors import BackendFull, BackendUnavailable
from dowork.metrics import BackendCollector
from tests.backends.conftest import add_acl_user
from tests.backends.test_contract import LEASE, NOW, rec
from tests.redis_server import RedisServer
from tests.upkeep import reap


def double(n: int) -> int:
    return 2 * n


def durable_queue(url: str) -> dowork.Queue:
    backend = RedisBackend(url, prefix=f"dowork:t{uuid.uuid4().hex[:8]}", connect_timeout=0.5)
    queue = dowork.Queue(
        "safety",
        backend=backend,
        durable=dowork.DurableSettings(lease=1.0, maintenance=0.2),
        log=False,
    )
    queue.task(name="double")(double)
    return queue


# -- least privilege -------------------------------------------------------------------------


def test_the_default_key_prefix_is_dowork() -> None:
    assert RedisBackend().prefix == "dowork"
    default = open_backend("redis://127.0.0.1:6379/0")
    assert isinstance(default, RedisBackend)
    assert default.prefix == "dowork"
    chosen = open_backend("redis://h/0?prefix=app")
    assert isinstance(chosen, RedisBackend)
    assert chosen.prefix == "app"


def test_the_readme_acl_user_has_no_admin_commands(redis_server: RedisServer) -> None:
    add_acl_user(redis_server.url, "dowork-test", "s3cret-acl")
    url = redis_server.url.replace("redis://", "redis://dowork-test:s3cret-acl@")
    with redis.Redis.from_url(url) as client:
        client.set("dowork:probe", "1")  # its own keys: allowed
        for command in (
            ("FLUSHALL",),
            ("FLUSHDB",),
            ("CONFIG", "GET", "maxmemory"),
            ("KEYS", "dowork:*"),
            ("SCRIPT", "FLUSH"),
            ("CLIENT", "LIST"),
            ("SWAPDB", "0", "1"),
            ("SHUTDOWN",),
            ("ACL", "LIST"),
            ("GET", "other:key"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        client.delete("dowork:probe")

    async def main() -> None:  # and dowork, with the default prefix, needs nothing more
        backend = RedisBackend(url)
        queue = f"acl-{uuid.uuid4().hex[:8]}"
        record = rec(queue=queue)
        await backend.push([record])
        (claimed,) = await backend.claim(ClaimRequest(queue, NOW, 1, LEASE, "w"))
        await backend.settle([Settlement(claimed.id, 1, Outcome.SUCCEEDED, NOW)])
        assert await backend.purge(queue) == 1
        await backend.close()

    asyncio.run(main())


# -- a wiped store (row 4) -------------------------------------------------------------------


def test_a_wiped_redis_is_reported_and_workers_keep_running(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    queue = durable_queue(own_server.url)
    backend = queue.backend
    assert isinstance(backend, RedisBackend)
    queue.start()
    try:
        assert queue.submit(double, 1).result(timeout=10) == 2
        assert backend.resets == 0
        with caplog.at_level(logging.CRITICAL, logger="dowork"):
            own_server.restart()  # no persistence: every key is gone
            deadline = time.monotonic() + 10

            def reported() -> bool:  # the count goes up just before the log line is written
                return any("backend data reset" in r.getMessage() for r in caplog.records)

            while not (backend.resets and reported()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert backend.resets == 1
            assert reported()
        registry = CollectorRegistry()
        registry.register(BackendCollector([queue]))
        assert registry.get_sample_value("queue_backend_resets_total", {"queue": "safety"}) == 1
        assert queue.running
        assert queue.submit(double, 21).result(timeout=10) == 42  # working on
    finally:
        queue.shutdown(timeout=5)


def test_flushall_is_detected_by_every_process(own_server: RedisServer) -> None:
    async def main() -> None:
        one, two = RedisBackend(own_server.url), RedisBackend(own_server.url)
        await one.open()
        await two.open()
        assert await reap(one, "q", NOW, 3) == (0, 0)
        with redis.Redis.from_url(own_server.url) as admin:
            admin.flushall()
        await reap(one, "q", NOW, 3)  # recreates the epoch key
        await reap(two, "q", NOW, 3)  # finds one it never saw
        await reap(one, "q", NOW, 3)
        assert (one.resets, two.resets) == (1, 1)
        await one.close()
        await two.close()

    asyncio.run(main())


# -- eviction and out of memory (row 19) -----------------------------------------------------


def test_an_evicting_redis_is_warned_about(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    with redis.Redis.from_url(own_server.url) as admin:
        admin.config_set("maxmemory", "100mb")
        admin.config_set("maxmemory-policy", "allkeys-lru")

    async def main() -> None:
        backend = RedisBackend(own_server.url)
        with caplog.at_level(logging.WARNING, logger="dowork"):
            await backend.open()
        await backend.close()

    asyncio.run(main())
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("allkeys-lru" in r.getMessage() and "noeviction" in r.getMessage() for r in warnings)


def test_out_of_memory_refuses_submits_and_workers_finish(own_server: RedisServer) -> None:
    queue = durable_queue(own_server.url)
    backend = queue.backend
    assert isinstance(backend, RedisBackend)
    held = [queue.submit(double, n) for n in range(3)]

    async def claim() -> list[str]:
        return [
            r.id for r in await backend.claim(ClaimRequest("safety", time.time(), 10, 30.0, "w"))
        ]

    claimed = queue._engine.run_on_home(claim())  # a worker holds these three
    assert sorted(claimed) == sorted(t.id for t in held)
    with redis.Redis.from_url(own_server.url) as admin:
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", str(used + 2_000_000))
        admin.config_set("maxmemory-policy", "noeviction")

    stored: list[dowork.Task[int]] = []

    def fill() -> None:
        for n in range(100):
            stored.append(queue.submit(double, n))
            queue.submit(double, "x" * 200_000)  # type: ignore[call-overload]  # bulk (a str doubles too)

    with pytest.raises(BackendFull, match="maxmemory"):
        fill()
    assert stored  # some went in before memory ran out

    async def finish() -> list[str]:
        now = time.time()
        return await backend.settle(
            [Settlement(i, 1, Outcome.SUCCEEDED, now, result=b"0") for i in claimed]
        )

    assert queue._engine.run_on_home(finish()) == []  # outcomes are still written
    assert [queue.status(t.id) for t in held] == ["succeeded"] * 3
    queue.start()  # a worker claims and finishes what was stored, memory full or not
    try:
        assert [t.result(timeout=10) for t in stored] == [2 * n for n in range(len(stored))]
    finally:
        queue.shutdown(timeout=5)


# -- Redis down at start (row 5) -------------------------------------------------------------


def test_submit_raises_backend_unavailable_when_redis_is_down(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")  # never started: nothing listens on its port
    queue = durable_queue(f"redis://alice:s3cret@127.0.0.1:{server.port}/0")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        queue.submit(double, 1)
    assert time.monotonic() - started < 5
    assert "s3cret" not in str(caught.value)
    queue.shutdown(timeout=1)


def test_a_worker_waits_for_redis_with_backoff_then_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis")
    queue = durable_queue(server.url)
    try:
        with caplog.at_level(logging.WARNING, logger="dowork"):
            queue.start()  # Redis is down: the worker must neither exit nor spin
            time.sleep(1.5)
            retries = [r for r in caplog.records if "backend error" in r.getMessage()]
            assert queue.running
            assert 2 <= len(retries) <= 8, len(retries)  # backoff 0.05 s doubling, jittered
            server.start()
            started = time.monotonic()
            task = queue.submit(double, 4)
            assert task.result(timeout=30) == 8
            assert time.monotonic() - started < 10  # within the capped backoff
    finally:
        queue.shutdown(timeout=5)
        server.stop()
