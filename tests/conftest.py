"""Shared fixtures: a fake clock, a seeded random source, and queues closed after each test."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import dowork
from tests.redis_server import INSTALL_HINT, RedisServer


@pytest.fixture
def clock() -> dowork.FakeClock:
    return dowork.FakeClock()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture
def make_queue(
    clock: dowork.FakeClock, rng: random.Random
) -> Iterator[Callable[..., dowork.Queue]]:
    """Build queues on the fake clock; any still running are shut down at teardown."""
    made: list[dowork.Queue] = []

    def make(name: str = "test", **options: Any) -> dowork.Queue:
        options.setdefault("clock", clock)
        options.setdefault("rng", rng)
        queue = dowork.Queue(name, **options)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        if queue.running:
            queue.shutdown(timeout=2)


@pytest.fixture(autouse=True)
def _fresh_global_queue() -> Iterator[None]:
    yield
    dowork.reset_global_queue()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port for the whole session (stop()/start() it).

    A missing binary fails the tests that need it, never skips them.
    """
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError:
        pytest.fail(INSTALL_HINT)
    server.start()
    try:
        yield server
    finally:
        server.stop()
