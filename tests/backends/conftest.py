"""Backend fixtures: every contract test runs once per backend."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from dowork.backends import Backend, MemoryBackend, RedisBackend, SQLiteBackend


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Backend]:
    """A zero-argument factory of fresh handles on one shared store (like separate processes)."""
    kind = request.param
    path = tmp_path / "tasks.sqlite3"
    shared = MemoryBackend()
    if kind == "redis":  # the server starts only when a Redis test runs
        url = request.getfixturevalue("redis_server").url
        prefix = f"test-{uuid.uuid4().hex[:12]}"  # a clean namespace per test

    def make() -> Backend:
        if kind == "memory":
            return shared
        if kind == "redis":
            return RedisBackend(url, prefix=prefix)
        return SQLiteBackend(path, poll_interval=0.01)

    return make
