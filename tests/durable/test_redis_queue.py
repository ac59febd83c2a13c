"""A queue on the Redis backend: several worker processes, SIGKILL, a Redis restart, garbage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

import dowork
from dowork import DurableSettings, Queue, TaskStatus
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
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


def _env(backend: str, ledger: Path, lease: float = 2.0) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DOWORK_TEST_BACKEND=backend,
        DOWORK_TEST_LEDGER=str(ledger),
        DOWORK_TEST_LEASE=str(lease),
        PYTHONPATH=str(ROOT),
    )
    return env


def _worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    code = "from tests.durable import app; app.main()"
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)


def _ledger(ledger: Path) -> Counter[str]:
    return Counter(ledger.read_text().splitlines() if ledger.exists() else [])


def _wait(ledger: Path, predicate: Callable[[Counter[str]], bool], timeout: float) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while True:
        counts = _ledger(ledger)
        if predicate(counts) or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def _stub(n: int, seconds: float = 0.0) -> int:  # producers need only the registered name
    return n


def _producer(
    backend: str,
) -> tuple[Queue, dowork.TaskFunction[..., int], dowork.TaskFunction[..., int]]:
    queue = Queue("app", backend=backend, log=False)
    record = queue.task(name="record")(_stub)
    slow = queue.task(name="slow")(_stub)
    return queue, record, slow


@pytest.mark.realtime
@pytest.mark.timeout(240)
def test_four_processes_on_redis_run_each_task_exactly_once(url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    producer, record, _ = _producer(url)
    n = 20_000
    for start in range(0, n, 1000):
        record.map([(i,) for i in range(start, start + 1000)])
    # A lease far longer than any stall of a loaded machine: no crash, so no rerun allowed.
    workers = [_worker(_env(url, ledger, lease=10.0)) for _ in range(4)]
    try:
        counts = _wait(ledger, lambda c: sum(c.values()) >= n, 50)
        time.sleep(0.3)  # let a late duplicate show up if there were one
        counts = _ledger(ledger)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(20)
    assert len(counts) == n, f"lost {n - len(counts)}"
    assert max(counts.values()) == 1, "a task ran twice without any crash"
    producer.shutdown(timeout=1)


@pytest.mark.realtime
def test_sigkill_on_redis_is_recovered(url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    producer, _, slow = _producer(url)
    handles = [slow.submit(i, 0.5) for i in range(4)]
    victim = _worker(_env(url, ledger, lease=1.0))
    try:
        _wait(ledger, lambda c: sum(1 for k in c if k.startswith("started")) >= 4, 20)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed = time.monotonic()
        rescuer = _worker(_env(url, ledger, lease=1.0))
        try:
            counts = _wait(ledger, lambda c: all(c[f"done {i}"] for i in range(4)), 30)
            recovery = time.monotonic() - killed
        finally:
            rescuer.send_signal(signal.SIGTERM)
            rescuer.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert all(counts[f"done {i}"] >= 1 for i in range(4)), counts
    twice = sum(1 for i in range(4) if counts[f"started {i}"] > 1)
    print(f"\nRedis SIGKILL: lost 0, started twice {twice}/4, recovered in {recovery:.2f}s")
    for h in handles:
        seen = producer.get(h.id)
        assert seen is not None
        assert seen.result(WAIT) == handles.index(h)
    producer.shutdown(timeout=1)


@pytest.mark.realtime
def test_redis_restart_loses_nothing_with_appendfsync_always(
    persistent_redis: RedisServer, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    backend = persistent_redis.url
    producer, record, _ = _producer(backend)
    n = 3000
    record.map([(i,) for i in range(n)])
    worker = _worker(_env(backend, ledger))
    try:
        _wait(ledger, lambda c: sum(c.values()) >= n // 4, 30)
        persistent_redis.stop()  # in the middle of the run
        time.sleep(1.0)
        persistent_redis.start()
        counts = _wait(ledger, lambda c: len(c) >= n, 60)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
    assert len(counts) == n, f"lost {n - len(counts)}"
    twice = sum(1 for c in counts.values() if c > 1)
    print(f"\nRedis restart: lost 0 of {n}, ran twice {twice}")
    assert worker.returncode == 0
    producer.shutdown(timeout=1)


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
