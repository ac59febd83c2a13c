"""``asubmit()`` into a durable queue whose home is another loop (its worker's own thread)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import dowork
from dowork import Hooks, Queue, Task

WAIT = 20.0


def url_of(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'a.db'}"
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=ae{uuid.uuid4().hex[:8]}"


def test_asubmit_from_another_loop_hands_over_the_handle_the_worker_runs(
    durable_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The push goes out from the caller's loop where the store allows (no hop to the
    worker's loop and back); the handle is still the one this process's worker runs."""
    queue = Queue("jobs", backend=url_of(durable_kind, tmp_path, request), log=False)

    @queue.task(name="boom")
    def boom(n: int) -> int:
        raise ValueError(f"bad {n}")

    queue.start()

    async def main() -> list[tuple[type, type | None]]:
        kinds = []
        tasks = [await queue.asubmit(boom, n) for n in range(30)]
        for task in tasks:
            error = await task.aexception(WAIT)
            assert error is not None
            kinds.append((type(error), type(error.__cause__) if error.__cause__ else None))
        if durable_kind == "redis":  # this loop has connections of its own
            assert asyncio.get_running_loop() in queue.backend._links  # type: ignore[union-attr]
        return kinds

    try:
        kinds = asyncio.run(main())
    finally:
        assert queue.shutdown(timeout=WAIT)
    assert set(kinds) == {(dowork.MaxRetriesExceeded, ValueError)}


def test_enqueue_hooks_still_run_on_the_home_loop(
    durable_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    seen: list[int] = []

    class Seen(Hooks):
        def on_enqueue(self, task: Task[Any]) -> None:
            seen.append(threading.get_ident())

    queue = Queue(
        "jobs", backend=url_of(durable_kind, tmp_path, request), hooks=[Seen()], log=False
    )

    @queue.task(name="double")
    def double(n: int) -> int:
        return 2 * n

    queue.start()

    async def main() -> list[int]:
        tasks = [await queue.asubmit(double, n) for n in range(3)]
        return [await task.aresult(WAIT) for task in tasks]

    try:
        assert asyncio.run(main()) == [0, 2, 4]
    finally:
        assert queue.shutdown(timeout=WAIT)
    assert seen == [queue._engine.loop_thread_id] * 3
