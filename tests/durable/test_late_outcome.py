"""A worker cut off from its store past a lease settles its late outcome before claiming again.

Had it claimed first, it would take its own task over (the store leased it anew) and run it
a second time, its first outcome refused; and the refused first run and the second, both
outcomes of one task in one batch, could not be told apart in the store's answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from dowork import DurableSettings, Queue, TaskStatus
from dowork.backends import ClaimRequest, Record, Settlement, SQLiteBackend
from dowork.backends._protocol import Outcome
from dowork.backends.store import Burials
from dowork.durable import DurableSource
from dowork.durable.flush import one_lease_each
from dowork.durable.state import store_pause
from dowork.errors import BackendError, BackendFull, BackendUnavailable
from tests.durable.test_outcome_written import WAIT, Unwritable, stored
from tests.upkeep import reap
from tests.waiting import wait_for


class CutOff(Unwritable):
    """``Unwritable`` that counts the claims asked."""

    claims = 0

    async def claim(self, request: ClaimRequest) -> list[Record]:
        self.claims += 1
        return await super().claim(request)


def test_a_late_outcome_is_written_before_the_worker_claims_again(tmp_path: Path) -> None:
    store = CutOff(tmp_path / "tasks.db", poll_interval=0.01)
    settings = DurableSettings(lease=0.5, maintenance=0.05, prefetch=0)
    queue = Queue("jobs", backend=store, log=False, concurrency=1, durable=settings)
    reader = Queue("jobs", backend=SQLiteBackend(tmp_path / "tasks.db"), log=False)
    admin = SQLiteBackend(tmp_path / "tasks.db")
    gate = threading.Event()
    runs: list[int] = []

    @queue.task(name="work")
    def work() -> str:
        runs.append(1)
        gate.wait(WAIT)
        return "first"

    try:
        task = work.submit()
        queue.start()
        wait_for(lambda: stored(reader, task.id) is TaskStatus.RUNNING)
        store.cut = store.beats = True  # the lease lapses; another worker reaps it
        wait_for(lambda: asyncio.run(reap(admin, "jobs", _now(), 3)) == (1, 0))
        assert stored(reader, task.id) is TaskStatus.RETRYING
        gate.set()  # the run ends; its outcome cannot be written yet
        source = queue._engine.source
        assert isinstance(source, DurableSource)
        wait_for(lambda: source._unsettled)
        claims = store.claims
        store.beats = False  # the worker reaches its store again, but for its outcomes
        wait_for(lambda: store.claims > claims or source._slot_waiting > 0)
        assert store.claims == claims  # it did not claim its own task over its outcome
        store.cut = False
        assert task.result(WAIT) == "first"
        wait_for(lambda: stored(reader, task.id) is TaskStatus.SUCCEEDED)
        assert runs == [1]  # the late outcome stood
        (record,) = asyncio.run(admin.get([task.id]))
        assert (record.crashes, record.lost, record.started) == (0, 1, 1)
        assert source.refused == 0
    finally:
        store.cut = store.beats = False
        gate.set()
        queue.shutdown(timeout=5)
        reader.shutdown(timeout=5)
        asyncio.run(admin.close())


class Flaky(SQLiteBackend):
    """A real SQLite store whose settle calls fail where ``fails`` says (by call number);
    the call numbered ``hold_at`` goes through once ``opened`` is set."""

    fails: frozenset[int] = frozenset()
    error: type[BackendError] = BackendUnavailable
    calls = 0
    hold_at = 0
    opened = threading.Event()

    async def settle(
        self, settlements: Sequence[Settlement], *, buried: Burials | None = None
    ) -> list[str]:
        self.calls += 1
        if self.calls in self.fails:
            raise self.error("cut off (test)")
        if self.calls == self.hold_at:
            await asyncio.to_thread(self.opened.wait, WAIT)
        return await super().settle(settlements, buried=buried)


def test_a_write_that_went_through_resets_the_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure after a successful write waits 0.1 s again, not the last delay doubled."""
    store = Flaky(tmp_path / "tasks.db", poll_interval=0.01)
    store.fails, store.hold_at = frozenset({1, 2, 3, 5}), 4
    queue = Queue("jobs", backend=store, log=False, concurrency=2)
    gate = threading.Event()

    @queue.task(name="work")
    def work(n: int) -> int:
        if n == 2:
            gate.wait(WAIT)
        return n

    try:
        first, second = work.submit(1), work.submit(2)
        queue.start()  # claims both at once
        wait_for(lambda: store.calls == 4)  # the 4th write goes through once released:
        gate.set()  # meanwhile the second task ends, so more waits to be written after it
        source = queue._engine.source
        assert isinstance(source, DurableSource)
        wait_for(lambda: bool(source._outbox))
        store.opened.set()
        assert (first.result(WAIT), second.result(WAIT)) == (1, 2)
    finally:
        gate.set()
        store.opened.set()
        queue.shutdown(timeout=5)
    delays = [r.getMessage().rsplit(" ", 1)[1] for r in caplog.records if "cannot settle" in r.msg]
    assert delays == ["0.10s", "0.20s", "0.40s", "0.10s"]


def test_a_worker_asks_a_store_that_failed_it_again_within_5_seconds() -> None:
    """The pauses between a worker's calls to a store that fails it double up to 5 s, not 10
    (writes) or 30 (claims): once the store is back, the worker claims and writes soon."""
    assert [store_pause(n, jitter=False) for n in (1, 2, 3, 6, 7, 10, 11, 50)] == [
        0.1, 0.2, 0.4, 3.2, 5.0, 5.0, 5.0, 5.0,
    ]  # fmt: skip
    for n in range(1, 40):
        assert store_pause(n, jitter=False) / 2 <= store_pause(n) <= store_pause(n, jitter=False)


def test_a_full_store_does_not_stop_the_claims(tmp_path: Path) -> None:
    """A write refused for lack of room does not hold the claims back: they free room."""
    store = Flaky(tmp_path / "tasks.db", poll_interval=0.01)
    store.fails, store.hold_at, store.error = frozenset({1}), 2, BackendFull
    settings = DurableSettings(prefetch=0)
    queue = Queue("jobs", backend=store, log=False, concurrency=1, durable=settings)
    runs: list[int] = []

    @queue.task(name="work")
    def work(n: int) -> int:
        runs.append(n)
        return n

    try:
        first, second = work.submit(1), work.submit(2)
        queue.start()
        wait_for(lambda: runs == [1, 2])  # the second claimed while the first's outcome waits
        assert not first.done  # (its write waits: refused, then held)
        store.opened.set()
        assert (first.result(WAIT), second.result(WAIT)) == (1, 2)
    finally:
        store.opened.set()
        queue.shutdown(timeout=5)


def _now() -> float:
    return time.time()


def _settlement(task_id: str, token: int, outcome: Outcome = Outcome.SUCCEEDED) -> Settlement:
    return Settlement(task_id, token, outcome, 1.0)


def test_a_batch_holds_one_lease_per_task() -> None:
    """Two leases of one task go in separate batches; the order is kept."""
    a1, b1 = _settlement("a", 1, Outcome.STARTED), _settlement("b", 1)
    a1_done, a2 = _settlement("a", 1), _settlement("a", 2)
    outbox = [a1, b1, a1_done, a2, _settlement("c", 1)]
    batch, rest = one_lease_each(outbox)
    assert (batch, rest) == ([a1, b1, a1_done], [a2, outbox[4]])
    assert one_lease_each(rest) == (rest, [])
    assert one_lease_each([]) == ([], [])
