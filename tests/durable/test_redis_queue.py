"""A queue on the Redis backend: several worker processes, SIGKILL, a Redis restart, garbage."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dowork import DurableSettings, Queue, TaskStatus
from tests.durable.harness import (
    each_runs_once,
    producer,
    sigkill_recovers,
    start_worker,
    wait_ledger,
    worker_env,
)
from tests.redis_server import RedisServer

WAIT = 20.0


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    """A Redis URL with a key prefix of its own, so tests never see each other's keys."""
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "aof", persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.realtime
@pytest.mark.timeout(240)
def test_four_processes_on_redis_run_each_task_exactly_once(url: str, tmp_path: Path) -> None:
    each_runs_once(url, tmp_path / "ledger.txt", 20_000, bulk=True)


@pytest.mark.realtime
def test_sigkill_on_redis_is_recovered(url: str, tmp_path: Path) -> None:
    sigkill_recovers(url, tmp_path / "ledger.txt", "Redis")


@pytest.mark.realtime
def test_redis_restart_loses_nothing_with_appendfsync_always(
    persistent_redis: RedisServer, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    backend = persistent_redis.url
    queue, record, _ = producer(backend)
    n = 3000
    record.map([(i,) for i in range(n)])
    worker = start_worker(worker_env(backend, ledger))
    try:
        wait_ledger(ledger, lambda c: sum(c.values()) >= n // 4, 30)
        persistent_redis.stop()  # in the middle of the run
        time.sleep(1.0)
        persistent_redis.start()
        counts = wait_ledger(ledger, lambda c: len(c) >= n, 60)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
    assert len(counts) == n, f"lost {n - len(counts)}"
    twice = sum(1 for c in counts.values() if c > 1)
    print(f"\nRedis restart: lost 0 of {n}, ran twice {twice}")
    assert worker.returncode == 0
    queue.shutdown(timeout=1)


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
