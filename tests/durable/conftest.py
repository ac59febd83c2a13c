"""Fixtures the durable tests share: a fresh store of each kind, queues on a store shut down
after the test, and queues on one shared store like separate processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dowork import Queue
from dowork.backends import Backend, MemoryBackend, RedisBackend, SQLiteBackend


def store_of(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, prefix: str | None = None
) -> Backend:
    """A store of ``kind``: memory (a new one), sqlite (the test's file) or redis (under
    ``prefix`` on the session's server; a clean prefix if none is given)."""
    if kind == "memory":
        return MemoryBackend()
    if kind == "sqlite":
        return SQLiteBackend(tmp_path / "tasks.db", poll_interval=0.01)
    url = request.getfixturevalue("redis_server").url
    return RedisBackend(url, prefix=prefix or f"dowork:t{uuid.uuid4().hex[:10]}")


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh backend of each kind (Redis: a clean key prefix on the session's server)."""
    return store_of(str(request.param), request, tmp_path)


@pytest.fixture
def queues() -> Iterator[Callable[..., Queue]]:
    """``make(backend, **options)``: a queue named ``jobs`` on ``backend``, shut down after."""
    made: list[Queue] = []

    def make(backend: Backend | str, **options: Any) -> Queue:
        options.setdefault("log", False)
        queue = Queue("jobs", backend=backend, **options)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.shutdown(timeout=2)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def durable_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def stores(
    request: pytest.FixtureRequest, tmp_path: Path, durable_kind: str
) -> Iterator[Callable[..., Queue]]:
    """``make(**options)``: a queue on its own connection to one shared store (a process)."""
    made: list[Queue] = []
    shared = MemoryBackend()
    prefix = f"dowork:t{uuid.uuid4().hex[:10]}"

    def make(**options: Any) -> Queue:
        options.setdefault("log", False)
        backend = (
            shared
            if durable_kind == "memory"
            else store_of(durable_kind, request, tmp_path, prefix)
        )
        queue = Queue("jobs", backend=backend, **options)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.shutdown(timeout=5)
