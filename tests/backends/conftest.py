"""Backend fixtures: every contract test runs once per backend (and once more on Redis as a
restricted ACL user, with the rules the README documents)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from dowork.backends import Backend, MemoryBackend, RedisBackend, SQLiteBackend
from tests.redis_server import RedisServer

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_acl_rules() -> list[str]:
    """The ACL rules of the README's ``ACL SETUSER dowork on >... <rules>`` line."""
    found = re.search(r"^\s*ACL SETUSER dowork on >\S+ (.+)$", README.read_text(), flags=re.M)
    assert found, "README.md documents no 'ACL SETUSER dowork on >password ...' line"
    return found.group(1).split()


def add_acl_user(url: str, user: str, password: str) -> None:
    """Create (or reset) ``user`` on the server with the README's least-privilege rules."""
    with redis.Redis.from_url(url) as admin:
        admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}")
        admin.execute_command("ACL", "SETUSER", user, *readme_acl_rules())


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-acl"])
def backend_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Backend]:
    """A zero-argument factory of fresh handles on one shared store (like separate processes)."""
    kind = request.param
    path = tmp_path / "tasks.sqlite3"
    shared = MemoryBackend()
    if kind.startswith("redis"):  # the server starts only when a Redis test runs
        url = request.getfixturevalue("redis_server").url
        prefix = f"test-{uuid.uuid4().hex[:12]}"  # a clean namespace per test
    if kind == "redis-acl":  # no admin commands, keys and channels under dowork: only
        add_acl_user(url, "dowork-test", "s3cret-acl")
        url = url.replace("redis://", "redis://dowork-test:s3cret-acl@")
        prefix = f"dowork:{prefix}"

    def make() -> Backend:
        if kind == "memory":
            return shared
        if kind.startswith("redis"):
            return RedisBackend(url, prefix=prefix)
        return SQLiteBackend(path, poll_interval=0.01)

    return make


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, free to reconfigure, restart, wipe or fill."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
