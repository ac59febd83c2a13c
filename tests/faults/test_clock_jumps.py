"""Row 12: clock jumps of an hour, forward and back, on the shared lease clock and local timers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import dowork
from dowork import DurableSettings, FakeClock, Queue, TaskStatus
from dowork.backends import SQLiteBackend
from dowork.clock import TimerHandle
from dowork.durable import DurableSource

pytestmark = [pytest.mark.faults]
HOUR = 3600.0


class SteppedClock:
    """The system clock plus an offset a test can step either way, as NTP would."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, when - self.now()), callback)


def lease_until(db: Path, task_id: str) -> float:
    async def read() -> float:
        backend = SQLiteBackend(db)
        try:
            (record,) = await backend.get([task_id])
            assert record.lease_until is not None
            return record.lease_until
        finally:
            await backend.close()

    return asyncio.run(read())


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.mark.realtime
def test_forward_jump_may_rerun_a_task_but_loses_nothing(tmp_path: Path) -> None:
    """+1 h on the shared clock expires every lease at once: a rerun is allowed, a loss is not."""
    clock = FakeClock()
    db = tmp_path / "jump.sqlite3"
    settings = DurableSettings(lease=30.0, maintenance=0.05)
    gate = threading.Event()
    runs: list[str] = []
    queues = []
    for label in ("a", "b"):
        queue = Queue("jump", backend=f"sqlite:///{db}", clock=clock, log=False, durable=settings)

        @queue.task(name="hold")
        def hold(label: str = label) -> str:
            runs.append(label)
            gate.wait(10)
            return label

        queues.append((queue, hold))
    first, hold_a = queues[0]
    handle = hold_a.submit()
    first.start()
    wait_for(lambda: runs == ["a"])
    second, _ = queues[1]
    second.start()
    clock.advance(HOUR)
    time.sleep(0.5)  # every maintenance step sees the jump
    gate.set()
    try:
        assert handle.result(10) in ("a", "b")
        assert len(runs) <= 2  # at most one rerun
        other = Queue("jump", backend=f"sqlite:///{db}", clock=clock, log=False)
        # Nothing lost: the store has the outcome the handle reported (this run's, or, were
        # it refused, the rerun's).
        assert other.status(handle.id) is TaskStatus.SUCCEEDED
        sources = (first._engine.source, second._engine.source)
        engines = [s for s in sources if isinstance(s, DurableSource)]
        assert len(engines) == 2

        def refused() -> int:
            return sum(engine.refused for engine in engines)

        # A rerun's stale twin is fenced off and counted once its outcome is written.
        wait_for(lambda: refused() == len(runs) - 1)
    finally:
        for queue, _ in queues:
            queue.shutdown(timeout=5)


@pytest.mark.realtime
def test_backward_jump_keeps_heartbeats_going(tmp_path: Path) -> None:
    """-1 h: leases are still renewed (on the stepped clock), not frozen for an hour."""
    clock = SteppedClock()
    db = tmp_path / "back.sqlite3"
    settings = DurableSettings(lease=1.0, maintenance=0.1)
    queue = Queue("back", backend=f"sqlite:///{db}", clock=clock, log=False, durable=settings)
    gate = threading.Event()

    @queue.task(name="hold")
    def hold() -> str:
        gate.wait(10)
        return "held"

    handle = hold.submit()
    queue.start()
    try:
        wait_for(lambda: queue.status(handle.id) is TaskStatus.RUNNING)
        clock.offset = -HOUR
        wait_for(lambda: lease_until(db, handle.id) < time.time() - HOUR / 2)  # renewed
        gate.set()
        assert handle.result(10) == "held"
        assert isinstance(queue._engine.source, DurableSource)
        assert queue._engine.source.refused == 0
    finally:
        queue.shutdown(timeout=5)


@pytest.mark.realtime
@pytest.mark.parametrize("step", [-HOUR, HOUR])
def test_an_armed_local_timer_follows_the_monotonic_clock(
    step: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wall-clock step after a timer is armed neither fires it early nor holds it an hour."""
    queue = dowork.Queue("timers", log=False)
    fired = threading.Event()
    queue.start()
    try:
        queue.call_later(0.4, fired.set)
        time.sleep(0.1)  # armed on the loop
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + step)
        started = time.monotonic()
        assert not fired.wait(0.15)  # not early
        assert fired.wait(3)  # and not an hour late
        assert time.monotonic() - started < 1.0
    finally:
        monkeypatch.undo()
        queue.shutdown(timeout=2)
