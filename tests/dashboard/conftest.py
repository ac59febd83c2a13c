"""Dashboard fixtures: a store URL per backend (a real SQLite file, the test Redis) and a client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from dowork.backends import SQLiteBackend
from dowork.dashboard import create_app


def sqlite_store(path: Path) -> str:
    """The URL of a new, empty dowork SQLite file (as the first worker or producer makes it):
    the dashboard itself never creates one."""

    async def make() -> None:
        store = SQLiteBackend(path)
        await store.open()
        await store.close()

    asyncio.run(make())
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh store: a SQLite file, or a clean prefix on the test Redis."""
    if request.param == "sqlite":
        return sqlite_store(tmp_path / "tasks.db")
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=dash-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return sqlite_store(tmp_path / "tasks.db")


@pytest.fixture
def client(store_url: str) -> Iterator[TestClient]:
    """A client of a dashboard on ``store_url`` (lifespan run, so the store is closed after)."""
    with TestClient(create_app(store_url), base_url="http://127.0.0.1") as c:
        yield c
