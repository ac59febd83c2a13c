"""The cap on stored results, on every durable store (the in-process ``MemoryBackend``,
SQLite and Redis); in-memory queues, which encode nothing, have none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import dowork
from dowork import DurableSettings, FakeClock, Queue, TaskStatus
from dowork.backends import Backend
from dowork.errors import ResultTooLarge
from tests.durable.reads import records_of

KEY = "a-test-key-of-32-bytes-for-hmac!"


# -- the result cap -----------------------------------------------------------------------------


def test_an_oversized_result_fails_the_task_and_stores_nothing(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    queue = queues(store, durable=DurableSettings(max_result=1024), clock=FakeClock())
    make = queue.task(name="make")(lambda size: "x" * size)
    small, big = make.submit(100), make.submit(5000)
    while queue.dispatch():
        pass
    assert small.result(timeout=5) == "x" * 100
    with pytest.raises(ResultTooLarge) as caught:
        big.result(timeout=5)
    assert (caught.value.size, caught.value.limit) == (5002, 1024)  # JSON: two quotes more
    assert isinstance(caught.value, dowork.DoWorkError)
    assert "5002 bytes" in str(caught.value)
    assert "1024" in str(caught.value)
    record = records_of(queue)[big.id]
    assert (record.status, record.result) == ("failed", None)  # nothing of it stored
    assert "ResultTooLarge" in (record.error or "")
    assert "max_result" in (record.error or "")
    assert big.status is TaskStatus.FAILED
    assert big.attempts == 1  # not retried: it would be as big again


def test_another_process_sees_the_oversized_result_as_a_failure(
    tmp_path: Path, queues: Callable[..., Queue]
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    worker = queues(url, durable=DurableSettings(max_result=1024))
    worker.task(name="make")(lambda size: "x" * size)
    producer = queues(url)
    handle = producer.task(name="make")(lambda size: "")
    task = handle.submit(2000)
    worker.dispatch()
    with pytest.raises(dowork.TaskFailed, match="ResultTooLarge"):
        task.result(timeout=10)


def test_the_default_result_cap_is_512_kib_and_must_be_positive(
    tmp_path: Path, queues: Callable[..., Queue]
) -> None:
    assert DurableSettings().max_result == 512 * 1024
    with pytest.raises(ValueError, match="max_result"):
        DurableSettings(max_result=0)
    queue = queues(f"sqlite:///{tmp_path / 'd.db'}", clock=FakeClock())
    make = queue.task(name="make")(lambda size: "x" * size)
    fits, over = make.submit(500_000), make.submit(530_000)
    while queue.dispatch():
        pass
    assert len(fits.result(timeout=5)) == 500_000
    with pytest.raises(ResultTooLarge):
        over.result(timeout=5)


def test_in_memory_queues_have_no_result_cap(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    task = queue.submit(lambda: "x" * (2 * 1024 * 1024))
    queue.dispatch()
    assert len(task.result(timeout=5)) == 2 * 1024 * 1024
