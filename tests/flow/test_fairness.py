"""Fair per-key concurrency: keys take turns, and at most K tasks of one key run at once.

Each test runs on every backend (``durable_queue``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from dowork import DurableSettings, Queue, Task


def test_a_small_tenant_is_served_between_a_big_ones_tasks(
    durable_queue: Callable[..., Queue],
) -> None:
    queue = durable_queue(concurrency=1)
    ran: list[str] = []

    @queue.task(name="work")
    def work(label: str) -> None:
        ran.append(label)

    queue.enqueue_many(work.task(f"big{i}").configure(concurrency_key="big") for i in range(200))
    for i in range(5):
        queue.enqueue(work.task(f"small{i}").configure(concurrency_key="small"))
    assert queue.dispatch() is False
    assert len(ran) == 205
    last_small = max(ran.index(f"small{i}") for i in range(5))
    assert last_small < 10  # turns: big, small, big, small, ... not 200 big ones first
    assert [x for x in ran if x.startswith("big")] == [f"big{i}" for i in range(200)]


def test_at_most_k_tasks_of_one_key_run_at_once(durable_queue: Callable[..., Queue]) -> None:
    settings = DurableSettings(lease=30.0, maintenance=5.0, key_concurrency=2)
    queue = durable_queue(concurrency=8, durable=settings)
    release = threading.Event()
    lock = threading.Lock()
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    started: list[str] = []

    @queue.task(name="hold")
    def hold(key: str) -> None:
        with lock:
            running[key] = running.get(key, 0) + 1
            most[key] = max(most.get(key, 0), running[key])
            started.append(key)
        release.wait(10)
        with lock:
            running[key] -= 1

    tasks = [queue.enqueue(hold.task("A").configure(concurrency_key="A")) for _ in range(6)]
    tasks += [queue.enqueue(hold.task("B").configure(concurrency_key="B")) for _ in range(3)]
    queue.start()
    deadline = time.monotonic() + 10
    while len(started) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)  # give a wrong implementation the time to start more
    with lock:
        assert sorted(started) == ["A", "A", "B", "B"]
    release.set()
    for task in tasks:
        task.result(timeout=10)
    assert most == {"A": 2, "B": 2}


def test_concurrency_keys_are_checked_where_they_are_written(
    make_queue: Callable[..., Queue],
) -> None:
    with pytest.raises(TypeError, match="concurrency_key must be a non-empty str"):
        Task(len).configure(concurrency_key="")
    with pytest.raises(ValueError, match="key_concurrency must be at least 1"):
        DurableSettings(key_concurrency=0)
    with pytest.raises(ValueError, match="concurrency_key needs a queue with a backend"):
        make_queue(log=False).enqueue(Task(len, args=("x",)).configure(concurrency_key="k"))
    assert Task(len, concurrency_key="tenant-1").concurrency_key == "tenant-1"
