"""Rows 3 and 6: Redis restarted (appendfsync always) or paused; a worker paused past its lease."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import LEASE, report
from tests.faults.scenarios import pause_redis, redis_restart, sigstop_worker
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.realtime]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server (appendfsync always) of this test alone, to kill, restart or pause."""
    server = RedisServer(tmp_path / "redis", persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_kill_and_restart_loses_nothing_with_appendfsync_always(
    own_redis: RedisServer, ledger: Path
) -> None:
    figures = report(redis_restart(own_redis, ledger, "Redis AOF always"))
    assert figures.lost == 0
    assert figures.unexpected == 0
    assert figures.extra["workers_alive"] == 2  # no worker gave up
    assert figures.extra["unclean_exits"] == 0


def test_paused_redis_everyone_recovers(own_redis: RedisServer, ledger: Path) -> None:
    figures = report(pause_redis(own_redis, ledger, "Redis AOF always"))
    assert figures.lost == 0
    assert figures.unexpected == 0
    assert figures.extra["workers_alive"] == 2
    assert figures.extra["unclean_exits"] == 0


def test_worker_paused_past_its_lease_is_fenced_off(store: tuple[str, str], ledger: Path) -> None:
    label, url = store
    figures = report(sigstop_worker(url, ledger, label))
    assert figures.lost == 0
    assert figures.orphaned == 4
    assert figures.p99 <= 2 * LEASE  # taken over while the owner is stopped
    assert figures.extra["refused"] == 4  # each stale completion refused and counted
    assert figures.duplicates <= figures.orphaned  # at most one extra run per stalled task
    assert figures.extra["succeeded"] == 4
    assert figures.extra["unclean_exits"] == 0


def test_sigstop_lands_mid_task_however_short_the_tasks(
    aof_redis: RedisServer, ledger: Path
) -> None:
    """Row 6 with tasks of 0 s: they end only once the stop is made, so 4 are refused.

    With tasks that simply ran ``seconds``, a second worker slower to start than that (4.2 s
    beside CPU burners, load 10) found them done: the worker was stopped idle, and the test
    waited for refusals that could never come (1 run in 3 failed that way on a busy machine).
    """
    url = f"{aof_redis.url}?prefix=f{uuid.uuid4().hex[:8]}"
    figures = report(sigstop_worker(url, ledger, "Redis AOF always", seconds=0.0))
    assert figures.orphaned == 4
    assert figures.extra["refused"] == 4
    assert figures.lost == 0
