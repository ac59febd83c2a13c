"""Flow-control tests run on the plain in-process queue and on each backend's queue."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dowork import DurableSettings, FakeClock, Queue


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A backend URL: the in-process store, a SQLite file, or a fresh prefix on the test Redis."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasks.sqlite3'}"
    url: str = request.getfixturevalue("redis_server").url
    return f"{url}?prefix=t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def durable_queue(backend_url: str) -> Iterator[Callable[..., Queue]]:
    """Build queues on the backend (FakeClock by default); shut down at teardown."""
    made: list[Queue] = []

    def make(name: str = "jobs", **options: Any) -> Queue:
        options.setdefault("backend", backend_url)
        options.setdefault("log", False)
        options.setdefault("clock", FakeClock())
        options.setdefault("durable", DurableSettings(lease=30.0, maintenance=5.0))
        queue = Queue(name, **options)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.shutdown(timeout=5)
