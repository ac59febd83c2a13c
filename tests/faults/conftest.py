"""Fixtures of the fault tests: a ledger directory, and the backends under test.

Redis here runs with ``appendonly yes`` and ``appendfsync always``: the "lost = 0" claim on
Redis holds for that setting (reliability.md §1), so that is what the scenarios measure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import INSTALL_HINT, RedisServer


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    where = tmp_path / "ledger"
    where.mkdir()
    return where


@pytest.fixture(scope="session")
def aof_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server with appendfsync always, shared by the fault tests (own key prefixes)."""
    try:
        server = RedisServer(tmp_path_factory.mktemp("aof-redis"), persistent=True)
    except FileNotFoundError:
        pytest.fail(INSTALL_HINT)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """``(label, url)`` of an empty store: SQLite, or Redis (AOF always) under a new prefix."""
    if request.param == "sqlite":
        return "SQLite", f"sqlite:///{tmp_path / 'faults.sqlite3'}"
    server: RedisServer = request.getfixturevalue("aof_redis")
    return "Redis AOF always", f"{server.url}?prefix=f{uuid.uuid4().hex[:8]}"
