"""A handle of a task this process ran reports its outcome only once the store has it.

The moment ``result()``, ``exception()``, ``await task``, ``done`` or ``wait()`` says how a
task ended, any other reader of the store (a fresh queue on it, ``dowork status``, another
process) sees that ending too. Each case reads the store through a second queue with its own
connection, like another process, right after the handle answered.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import dowork
from dowork import DurableSettings, Queue, TaskStatus
from dowork.backends import Settlement, SQLiteBackend
from dowork.backends.store import Burials
from dowork.durable import DurableSource
from dowork.errors import (
    BackendUnavailable,
    OutcomeNotWritten,
    TaskCancelled,
    TaskNotDone,
    UnknownTask,
)
from tests.waiting import wait_for

WAIT = 20.0
pytestmark = pytest.mark.realtime

FINAL = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.DEAD)


def stored(reader: Queue, task_id: str) -> TaskStatus | None:
    """The status another process reads now (None: the record is gone, as keep_result=0)."""
    try:
        return reader.status(task_id)
    except UnknownTask:
        return None


def test_every_outcome_a_handle_reports_is_already_stored(
    stores: Callable[..., Queue],
) -> None:
    queue, reader = stores(concurrency=4), stores()

    @queue.task(name="work")
    def work(n: int) -> int:
        if n % 5 == 3:
            raise ValueError(f"bad {n}")
        return n * 2

    queue.start()
    late: list[tuple[int, str, TaskStatus | None]] = []
    for n in range(40):  # one at a time: each answer races the write it follows
        how = ("result", "exception", "done", "wait")[n % 4]
        task = work.task(n)
        if n % 7 == 0:
            task.configure(keep_result=0)  # the record goes once written
        queue.enqueue(task)
        if how == "result" and n % 5 == 3:
            with pytest.raises(dowork.MaxRetriesExceeded, match="bad"):
                task.result(WAIT)
        elif how == "result":
            assert task.result(WAIT) == n * 2
        elif how == "exception":
            error = task.exception(WAIT)
            assert (error is None) == (n % 5 != 3)
        elif how == "done":
            deadline = time.monotonic() + WAIT
            while not task.done:
                assert time.monotonic() < deadline
                time.sleep(0.0002)
        else:
            assert task.wait(WAIT)
        assert task.status in FINAL
        status = stored(reader, task.id)
        want = TaskStatus.FAILED if n % 5 == 3 else TaskStatus.SUCCEEDED
        if status is not want and not (status is None and n % 7 == 0):
            late.append((n, how, status))
    assert late == []


def test_an_awaited_outcome_is_already_stored(stores: Callable[..., Queue]) -> None:
    """Async tasks, awaited on the queue's own loop (``async with queue``)."""
    queue, reader = stores(concurrency=4), stores()

    @queue.task(name="work")
    async def work(n: int) -> int:
        await asyncio.sleep(0)
        if n % 4 == 1:
            raise KeyError(n)
        return n

    async def main() -> list[tuple[int, TaskStatus | None]]:
        late = []
        async with queue:
            for n in range(30):
                task = await asyncio.to_thread(work.submit, n)  # the handle that runs here
                if n % 3 and n % 4 == 1:
                    with pytest.raises(dowork.MaxRetriesExceeded, match="KeyError"):
                        await task
                elif n % 3:
                    assert await task == n
                else:
                    await asyncio.sleep(0.01)  # finished by now: await returns at once
                    assert (await task.aexception(WAIT) is None) == (n % 4 != 1)
                want = TaskStatus.FAILED if n % 4 == 1 else TaskStatus.SUCCEEDED
                status = await asyncio.to_thread(stored, reader, task.id)
                if status is not want:
                    late.append((n, status))
        return late

    assert asyncio.run(main()) == []


def test_a_cancelled_task_reads_cancelled_in_the_store_once_its_handle_says_so(
    stores: Callable[..., Queue],
) -> None:
    fixed = DurableSettings(prefetch_window=None)  # (it holds a task behind a long one)
    queue, reader = stores(concurrency=1, durable=fixed), stores()
    started = threading.Event()

    @queue.task(name="sleepy")
    async def sleepy() -> None:
        started.set()
        await asyncio.sleep(WAIT)

    running = sleepy.submit()
    held = sleepy.submit()  # claimed with it, waiting for the slot: reserved
    queue.start()
    assert started.wait(WAIT)
    for task in (held, running):
        assert task.cancel()
        assert isinstance(task.exception(WAIT), TaskCancelled)
        assert stored(reader, task.id) is TaskStatus.CANCELLED
        assert not task.cancel()  # finished


def test_tasks_a_stop_at_once_hands_back_end_their_waits_without_an_outcome(
    stores: Callable[..., Queue],
) -> None:
    """They run again on another worker: no handle here says they ended (nor waits forever)."""
    fixed = DurableSettings(prefetch_window=None)  # (it holds a task behind a long one)
    queue, reader = stores(concurrency=1, durable=fixed), stores()
    started = threading.Event()

    @queue.task(name="sleepy")
    async def sleepy() -> None:
        started.set()
        await asyncio.sleep(WAIT)

    running = sleepy.submit()
    held = sleepy.submit()  # claimed with it, waiting for the slot: reserved
    queue.start()
    assert started.wait(WAIT)
    waiting: list[BaseException | None] = []
    waiter = threading.Thread(target=lambda: waiting.append(held.exception(WAIT)))
    waiter.start()
    assert queue.abort() == []
    waiter.join(WAIT)
    for task, ended in ((running, "cancelled"), (held, None)):
        error = task.exception(0)
        assert isinstance(error, OutcomeNotWritten), error
        assert (error.task_id, error.status) == (task.id, ended)
        assert "handed back" in str(error)
        assert not task.done
        assert stored(reader, task.id) in (TaskStatus.PENDING, TaskStatus.RETRYING)
    assert isinstance(waiting[0], OutcomeNotWritten)


def test_hooks_and_the_after_callback_read_the_outcome_at_once(
    stores: Callable[..., Queue],
) -> None:
    """They run when the outcome is decided, before the handle reports it (as before)."""
    seen: list[Any] = []

    class Watch(dowork.Hooks):
        def on_success(self, task: dowork.Task[Any]) -> None:
            seen.append(("hook", task.done, task.status, task.result()))

    queue, reader = stores(hooks=[Watch()]), stores()

    def after(task: dowork.Task[Any]) -> None:
        seen.append(("after", task.done, task.status, task.result()))

    async def after_async(task: dowork.Task[Any]) -> None:
        await asyncio.sleep(0.05)  # the outcome is written meanwhile
        seen.append(("async after", task.done, task.status, task.result()))

    @queue.task(name="work", after=after)
    def work() -> str:
        return "ok"

    @queue.task(name="slow_after", after=after_async)
    def slow_after() -> str:
        return "ok"

    @queue.task(name="plain")  # no after-callback: the common task's shorter way
    def plain() -> str:
        return "ok"

    queue.start()
    task = work.submit()
    assert task.result(WAIT) == "ok"
    ended = (True, TaskStatus.SUCCEEDED, "ok")
    assert seen == [("hook", *ended), ("after", *ended)]
    assert stored(reader, task.id) is TaskStatus.SUCCEEDED
    seen.clear()
    task = slow_after.submit()
    assert task.result(WAIT) == "ok"  # after its after-callback, as before
    assert seen == [("hook", *ended), ("async after", *ended)]
    assert stored(reader, task.id) is TaskStatus.SUCCEEDED
    seen.clear()
    task = plain.submit()
    assert task.result(WAIT) == "ok"
    assert seen == [("hook", *ended)]
    assert stored(reader, task.id) is TaskStatus.SUCCEEDED


def test_a_failed_chain_has_its_log_stored_when_its_handle_raises(
    stores: Callable[..., Queue],
) -> None:
    queue, reader = stores(), stores()
    queue.chain("crawl", _fetch, _parse)
    queue.start()
    for n in range(5):
        bad = queue.submit_job("crawl", {"url": f"example.org/{n}/404"})
        with pytest.raises(dowork.MaxRetriesExceeded):
            bad.result(WAIT)
        log = reader.chain_log(bad.id)
        assert log is not None, n
        assert log.handler == "_parse"


def _fetch(args: dict[str, Any]) -> dict[str, Any]:
    return args | {"body": "page"}


def _parse(args: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("not found")


# -- a store that cannot take the outcome ----------------------------------------------------


class Unwritable(SQLiteBackend):
    """A real SQLite store whose settlements (and, with ``beats``, heartbeats) fail while
    ``cut`` is set: a worker cut off from its store between running a task and writing it."""

    cut = False
    beats = False

    async def settle(
        self, settlements: Sequence[Settlement], *, buried: Burials | None = None
    ) -> list[str]:
        if self.cut:
            raise BackendUnavailable("cut off (test)")
        return await super().settle(settlements, buried=buried)

    async def heartbeat(self, leases: Any, now: float, lease: float) -> tuple[list[str], list[str]]:
        if self.cut and self.beats:
            raise BackendUnavailable("cut off (test)")
        return await super().heartbeat(leases, now, lease)


def _cut_worker(tmp_path: Path, **settings: Any) -> tuple[Queue, Unwritable, Queue]:
    store = Unwritable(tmp_path / "tasks.db", poll_interval=0.01)
    queue = Queue(
        "jobs", backend=store, log=False, concurrency=1, durable=DurableSettings(**settings)
    )
    reader = Queue("jobs", backend=SQLiteBackend(tmp_path / "tasks.db"), log=False)
    return queue, store, reader


def test_the_handle_waits_while_the_store_cannot_take_the_outcome(tmp_path: Path) -> None:
    queue, store, reader = _cut_worker(tmp_path)
    gate = threading.Event()

    @queue.task(name="work")
    def work() -> str:
        gate.wait(WAIT)
        return "ok"

    try:
        task = work.submit()
        queue.start()
        wait_for(lambda: stored(reader, task.id) is TaskStatus.RUNNING)
        store.cut = True
        gate.set()
        with pytest.raises(TaskNotDone):
            task.result(timeout=0.5)  # returned, but not written: retried meanwhile
        assert (task.done, task.status) == (False, TaskStatus.RUNNING)
        assert stored(reader, task.id) is TaskStatus.RUNNING
        store.cut = False
        assert task.result(WAIT) == "ok"
        assert stored(reader, task.id) is TaskStatus.SUCCEEDED
    finally:
        store.cut = False
        queue.shutdown(timeout=5)
        reader.shutdown(timeout=5)


def test_a_queue_stopped_before_writing_ends_the_wait_with_the_runs_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dowork.durable.stopping._ABORT_WRITES", 0.3)
    queue, store, reader = _cut_worker(tmp_path)
    gate = threading.Event()

    @queue.task(name="work")
    def work() -> str:
        gate.wait(WAIT)
        return "ok"

    try:
        task = work.submit()
        queue.start()
        wait_for(lambda: stored(reader, task.id) is TaskStatus.RUNNING)
        store.cut = True
        gate.set()
        waiting: list[BaseException | None] = []
        waiter = threading.Thread(target=lambda: waiting.append(task.exception(WAIT)))
        waiter.start()
        with pytest.raises(TaskNotDone):
            task.result(timeout=0.3)
        queue.abort()  # stops at once: gives the write up after _ABORT_WRITES
        waiter.join(WAIT)
        with pytest.raises(OutcomeNotWritten) as caught:
            task.result(0)
        error = caught.value
        assert waiting == [error]
        assert (error.task_id, error.status, error.value, error.error) == (
            task.id, "succeeded", "ok", None,
        )  # fmt: skip
        assert (task.done, task.status) == (False, TaskStatus.RUNNING)
        assert stored(reader, task.id) is TaskStatus.RUNNING  # runs again after its lease
    finally:
        store.cut = False
        reader.shutdown(timeout=5)


def test_an_outcome_the_store_refused_gives_way_to_the_one_it_keeps(tmp_path: Path) -> None:
    """Cut off past its lease, a worker's outcome is refused: another worker ran the task
    meanwhile. The first worker's handle reports what the store keeps, the second run's."""
    queue, store, reader = _cut_worker(tmp_path, lease=1.0, maintenance=0.2, prefetch=0)
    store.beats = True
    other = Queue(
        "jobs",
        backend=SQLiteBackend(tmp_path / "tasks.db", poll_interval=0.01),
        log=False,
        durable=DurableSettings(lease=1.0, maintenance=0.2),
    )
    gate = threading.Event()

    @queue.task(name="work")
    def work() -> str:
        gate.wait(WAIT)
        return "first"

    @other.task(name="work")
    def work_elsewhere() -> str:
        return "second"

    try:
        task = work.submit()
        queue.start()
        wait_for(lambda: stored(reader, task.id) is TaskStatus.RUNNING)
        store.cut = True  # no renewal, no outcome: the lease lapses
        other.start()  # reaps the lapsed lease and runs the task again
        wait_for(lambda: stored(reader, task.id) is TaskStatus.SUCCEEDED)
        gate.set()
        with pytest.raises(TaskNotDone):
            task.result(timeout=0.3)
        store.cut = False
        assert task.result(WAIT) == "second"
        source = queue._engine.source
        assert isinstance(source, DurableSource)
        assert source.refused == 1
        assert reader.get(task.id).result(0) == "second"  # type: ignore[union-attr]
    finally:
        store.cut = False
        gate.set()
        queue.shutdown(timeout=5)
        other.shutdown(timeout=5)
        reader.shutdown(timeout=5)


def test_asubmit_hands_the_caller_the_handle_its_worker_runs(
    durable_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A task this process's worker claims before ``asubmit()``'s push returned still runs
    the caller's handle: its exception is the real one, not a reading of the stored text."""
    if durable_kind == "memory":
        url = "memory://"
    elif durable_kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'a.db'}"
    else:
        server = request.getfixturevalue("redis_server")
        url = f"{server.url}?prefix=as{uuid.uuid4().hex[:8]}"

    async def main() -> list[tuple[type, type | None]]:
        queue = Queue("jobs", backend=url, log=False)

        @queue.task(name="boom")
        def boom(n: int) -> int:
            raise ValueError(f"bad {n}")

        await queue.astart()
        kinds = []
        try:
            for n in range(60):
                task = await queue.asubmit(boom, n)
                error = await task.aexception(WAIT)
                assert error is not None
                kinds.append((type(error), type(error.__cause__) if error.__cause__ else None))
        finally:
            await queue.ashutdown()
        return kinds

    kinds = asyncio.run(main())
    assert set(kinds) == {(dowork.MaxRetriesExceeded, ValueError)}


def test_a_handle_on_a_task_run_elsewhere_stops_waiting_when_its_queue_shuts_down(
    stores: Callable[..., Queue],
) -> None:
    """Nothing polls the store for it any more: the wait ends with a clear error at once,
    for a waiter already blocked and for one that starts after the shutdown."""
    producer, reader = stores(), stores()

    @producer.task(name="never")
    def never() -> None:
        pass

    reader.task(name="never")(never)
    task = never.submit()  # nobody works this queue: it stays pending
    handle = reader.get(task.id)
    assert handle is not None
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            handle.result(WAIT)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)  # (blocked in result(); the assertion below holds either way)
    reader.shutdown(timeout=5)
    waiter.join(5)
    assert not waiter.is_alive()
    assert [type(e) for e in errors] == [dowork.QueueShuttingDown]
    with pytest.raises(dowork.QueueShuttingDown, match="is shut down"):
        handle.result(WAIT)  # asked again after the shutdown: at once too


def test_a_worker_counts_the_tasks_it_ran_as_finished(
    stores: Callable[..., Queue],
) -> None:
    """``len(queue)`` of a worker is 0 once its tasks' outcomes are stored, and it stops clean."""
    producer, worker, reader = stores(), stores(), stores()
    work = producer.task(name="work")(lambda i: i)
    worker.task(name="work")(lambda i: i)
    ids = [work.submit(i).id for i in range(20)]
    worker.start()
    deadline = time.monotonic() + WAIT
    while any(stored(reader, i) is not TaskStatus.SUCCEEDED for i in ids):
        assert time.monotonic() < deadline, "the worker did not finish the tasks"
        time.sleep(0.02)
    assert len(worker) == 0  # nothing unfinished: every outcome was counted
    assert worker.shutdown(timeout=10) is True
