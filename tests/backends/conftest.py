"""Backend fixtures: every contract test runs once per backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dowork.backends import Backend, MemoryBackend, SQLiteBackend


@pytest.fixture(params=["memory", "sqlite"])
def backend_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Backend]:
    """A zero-argument factory of fresh handles on one shared store (like separate processes)."""
    kind = request.param
    path = tmp_path / "tasks.sqlite3"
    shared = MemoryBackend()

    def make() -> Backend:
        if kind == "memory":
            return shared
        return SQLiteBackend(path, poll_interval=0.01)

    return make
