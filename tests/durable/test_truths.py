"""Statuses tell the truth (issue 14): delayed handles, chained DoNotRetry, retries on time,
exact counts, handles whose record is gone, and one run at a time per id in a process.

Each case runs on every store it concerns: the in-process queue (``None``), the in-process
``MemoryBackend``, SQLite and Redis (a real server).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import dowork
from dowork import DurableSettings, FakeClock, Queue, TaskStatus
from dowork.durable import DurableSource
from tests.durable.conftest import store_of
from tests.upkeep import reap
from tests.waiting import wait_for

WAIT = 20.0


@pytest.fixture(params=["inprocess", "memory", "sqlite", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def queues(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Queue]]:
    """``make(kind, **options)``: a queue on a fresh store of that kind, shut down after."""
    made: list[Queue] = []

    def make(kind: str, **options: Any) -> Queue:
        options.setdefault("log", False)
        if kind != "inprocess":
            options["backend"] = store_of(kind, request, tmp_path)
        queue = Queue("jobs", **options)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        if queue.running or queue.durable:
            queue.shutdown(timeout=2)


# -- a) delayed handles ---------------------------------------------------------------------


def test_call_later_and_call_at_handles_read_scheduled_at_once(
    kind: str, queues: Callable[..., Queue]
) -> None:
    clock = FakeClock()
    queue = queues(kind, clock=clock)
    work = queue.task(name="work")(lambda n: n)
    later = queue.call_later(10, work, 1)
    at = queue.call_at(clock.now() + 10, work, 2)
    for handle in (later, at):
        assert handle.status is TaskStatus.SCHEDULED
        assert handle.next_attempt is not None
        assert handle.next_attempt.timestamp() == clock.now() + 10
    assert queue.status(later.id) is TaskStatus.SCHEDULED


def test_a_delay_counts_from_the_call_on_a_queue_driven_by_dispatch(
    kind: str, queues: Callable[..., Queue]
) -> None:
    clock = FakeClock()
    queue = queues(kind, clock=clock)
    work = queue.task(name="work")(lambda n: n)
    later = queue.call_later(10, work, 1)
    at = queue.call_at(clock.now() + 10, work, 2)
    clock.advance(10)  # no dispatch() before: the delays ran from the calls
    queue.dispatch()
    assert (later.result(timeout=5), at.result(timeout=5)) == (1, 2)


def test_a_started_queue_counts_a_delay_from_the_call_not_from_its_loop(
    queues: Callable[..., Queue],
) -> None:
    """The race of ``test_join_shuts_several_queues_in_parallel`` on a busy machine: the
    clock moved before the queue's loop took the delayed task in."""
    clock = FakeClock()
    queue = queues("inprocess", clock=clock).start()
    busy, free = threading.Event(), threading.Event()

    async def hold_the_loop() -> None:
        busy.set()
        free.wait(WAIT)  # blocks the queue's event loop on purpose

    queue.submit(hold_the_loop)
    assert busy.wait(WAIT)
    later = queue.call_later(10, lambda: "on time")
    assert later.status is TaskStatus.SCHEDULED
    clock.advance(10)  # before the loop took the task in: it is due all the same
    free.set()
    assert later.result(WAIT) == "on time"


# -- b) DoNotRetry in a chained step ----------------------------------------------------------


def _drive(queue: Queue, clock: FakeClock) -> None:
    """Dispatch until nothing is left, moving the fake clock past each backoff."""
    for _ in range(50):
        if not queue.dispatch():
            return
        clock.advance(1)
    raise AssertionError("the queue never drained")


@pytest.mark.parametrize("reentrant", [False, True])
def test_do_not_retry_in_a_chained_step_ends_the_job(
    kind: str, queues: Callable[..., Queue], reentrant: bool
) -> None:
    clock = FakeClock()
    queue = queues(kind, clock=clock)
    calls: list[str] = []

    def first(args: dict[str, Any]) -> dict[str, Any]:
        calls.append("first")
        return args

    def refuse(args: dict[str, Any]) -> dict[str, Any]:
        calls.append("refuse")
        raise dowork.DoNotRetry("pointless to try again")

    step = dowork.reentrant(refuse, max_times=3, sleep=0) if reentrant else refuse
    job = queue.chain("refusing", first, step, retries=3, backoff="fixed", base_delay=0.5)
    handle = job.submit({"n": 1})
    _drive(queue, clock)
    assert calls == ["first", "refuse"]  # no retry of the job, nor of the step
    error = handle.exception(timeout=5)
    assert handle.status is TaskStatus.FAILED
    assert handle.attempts == 1
    assert not isinstance(error, dowork.MaxRetriesExceeded)
    assert "DoNotRetry" in str(error)
    if kind == "inprocess":
        assert isinstance(error, dowork.ChainFailed)
        assert isinstance(error.__cause__, dowork.DoNotRetry)
    log = queue.chain_log(handle.id)
    assert log is not None
    assert (log.reached, log.error) == (1, "DoNotRetry: pointless to try again")


def test_should_retry_sees_the_chained_steps_own_exception(
    kind: str, queues: Callable[..., Queue]
) -> None:
    clock = FakeClock()
    queue = queues(kind, clock=clock)
    seen: list[type[BaseException]] = []
    failures = {"flaky": 1, "fatal": 1}

    def should_retry(exc: BaseException) -> bool:
        seen.append(type(exc))
        return isinstance(exc, ConnectionError)

    def flaky(args: dict[str, Any]) -> dict[str, Any]:
        if args["kind"] == "flaky" and failures["flaky"]:
            failures["flaky"] -= 1
            raise ConnectionError("try again")
        if args["kind"] == "fatal":
            raise KeyError("never")
        return {**args, "ok": True}

    job = queue.chain(
        "checked", flaky, retries=3, backoff="fixed", base_delay=0.5, should_retry=should_retry
    )
    retried, stopped = job.submit({"kind": "flaky"}), job.submit({"kind": "fatal"})
    _drive(queue, clock)
    assert retried.result(timeout=5) == {"kind": "flaky", "ok": True}
    assert retried.attempts == 2
    assert stopped.exception(timeout=5) is not None
    assert stopped.attempts == 1  # should_retry said no to the KeyError
    assert sorted(seen, key=lambda t: t.__name__) == [ConnectionError, KeyError]


# -- e) a handle whose record is gone -----------------------------------------------------------


def work(n: int) -> int:
    return n


def test_a_handle_whose_result_was_not_kept_raises_task_gone(
    stores: Callable[..., Queue],
) -> None:
    producer, worker = stores(), stores()
    producer.task(name="work", keep_result=0)(work)
    worker.task(name="work", keep_result=0)(work)
    registered = producer.registry.get("work")
    assert registered is not None
    handle = producer.submit(registered, 7)
    while worker.dispatch():
        pass
    began = time.monotonic()
    with pytest.raises(dowork.TaskGone) as caught:
        handle.result(timeout=WAIT)
    assert time.monotonic() - began < WAIT / 2  # at once, not after the timeout
    assert isinstance(caught.value, dowork.UnknownTask)
    assert handle.id in str(caught.value)
    assert "keep_result=0" in str(caught.value)
    assert isinstance(handle.exception(timeout=0), dowork.TaskGone)


def test_a_handle_whose_record_was_wiped_raises_task_gone(
    stores: Callable[..., Queue],
) -> None:
    producer, admin = stores(), stores()
    fn = producer.task(name="work")(work)
    handle = fn.submit(1)
    backend = admin.backend
    assert backend is not None
    assert admin._engine.run_on_home(backend.purge("jobs")) == 1
    with pytest.raises(dowork.TaskGone):
        handle.result(timeout=WAIT)


def test_a_task_submitted_from_a_task_is_not_taken_for_gone(
    stores: Callable[..., Queue],
) -> None:
    queue = stores()
    child = queue.task(name="child")(work)
    inner: list[dowork.Task[int]] = []

    @queue.task(name="parent")
    async def parent() -> int:
        inner.append(child.submit(5))  # pushed from the loop, in the background
        return 1

    queue.start()
    assert parent.submit().result(WAIT) == 1
    assert inner[0].result(WAIT) == 5


# -- d) exact counts whatever the inbox holds ---------------------------------------------------


def test_counts_are_exact_with_thousands_submitted_one_at_a_time(
    stores: Callable[..., Queue],
) -> None:
    queue = stores()
    fn = queue.task(name="work")(work)
    for n in range(5000):  # submit(): on Redis each goes to the queue's inbox
        fn.submit(n)
    later = queue.call_later(3600, fn, -1)
    backend = queue.backend
    assert backend is not None
    counts = queue._engine.run_on_home(backend.counts("jobs"))
    assert counts == {"pending": 5000, "scheduled": 1}
    assert queue._engine.run_on_home(backend.counts("jobs")) == counts  # read, not moved
    assert queue.status(later.id) is TaskStatus.SCHEDULED


# -- c) retries start on time -------------------------------------------------------------------


def test_a_retry_starts_on_time_at_an_idle_worker(stores: Callable[..., Queue]) -> None:
    """An idle worker waits for a push or its next maintenance (10 s here); a retry written
    meanwhile must still start when due (0.2 s later), not at the maintenance."""
    queue = stores(durable=DurableSettings(lease=60, maintenance=10))
    starts: list[float] = []

    @queue.task(name="flaky", retries=2, backoff="fixed", base_delay=0.2, jitter=False)
    def flaky() -> str:
        starts.append(time.monotonic())
        if len(starts) == 1:
            raise ConnectionError("once")
        return "ok"

    queue.start()
    time.sleep(0.3)  # the worker is idle, waiting
    handle = flaky.submit()
    assert handle.result(WAIT) == "ok"
    late = starts[1] - starts[0] - 0.2
    assert late < 2.0, f"the retry started {late:.2f}s late"


# -- f) one run at a time per id in a process ---------------------------------------------------


def test_an_id_claimed_again_while_it_runs_here_waits_for_that_run(
    stores: Callable[..., Queue], durable_kind: str
) -> None:
    """The store hands a running task out again (its lease was taken for expired): the
    worker holding it holds the new claim, its lease renewed, until the first run ended."""
    queue, admin = stores(durable=DurableSettings(lease=4, maintenance=0.5)), stores()
    gate = threading.Event()
    lock = threading.Lock()
    running: list[int] = []
    most = [0]
    runs = [0]

    @queue.task(name="slow")
    def slow() -> str:
        with lock:
            runs[0] += 1
            running.append(1)
            most[0] = max(most[0], len(running))
        gate.wait(WAIT)
        with lock:
            running.pop()
        return "ok"

    queue.start()
    handle = slow.submit()
    wait_for(lambda: runs[0] == 1)
    store = admin.backend
    assert store is not None

    def attempts() -> int:
        (record,) = admin._engine.run_on_home(store.get([handle.id]))
        return record.attempts

    # Every lease looks expired to this reap: the running task goes back to waiting, and
    # the worker (with free slots) claims it again.
    admin._engine.run_on_home(reap(store, "jobs", time.time() + 3600, 10))
    wait_for(lambda: attempts() == 2)
    time.sleep(0.3)  # room for a second start, if the worker made one
    assert runs[0] == 1
    time.sleep(4.5)  # past the lease of the held claim: the heartbeat keeps it
    (record,) = admin._engine.run_on_home(store.get([handle.id]))
    assert (record.attempts, record.status) == (2, "reserved")  # held here, not started
    gate.set()
    wait_for(lambda: runs[0] == 2)
    assert handle.result(WAIT) == "ok"
    assert admin.status(handle.id) is TaskStatus.SUCCEEDED  # written before result() returned
    assert most[0] == 1  # never twice at once


def test_a_held_claim_is_handed_back_when_the_worker_stops_at_once(
    stores: Callable[..., Queue],
) -> None:
    queue, admin = stores(durable=DurableSettings(lease=4, maintenance=0.5)), stores()
    gate, started = threading.Event(), threading.Event()

    @queue.task(name="slow")
    def slow() -> str:
        started.set()
        gate.wait(WAIT)
        return "ok"

    admin.task(name="slow")(slow)
    queue.start()
    handle = slow.submit()
    assert started.wait(WAIT)
    store = admin.backend
    assert store is not None

    def record() -> Any:
        (found,) = admin._engine.run_on_home(store.get([handle.id]))
        return found

    admin._engine.run_on_home(reap(store, "jobs", time.time() + 3600, 10))
    wait_for(lambda: record().attempts == 2)
    # The store counts the claim before its reply reaches the worker: wait until the worker
    # holds it (a claim still on its way when the worker stops waits out its lease instead).
    source = queue._engine.source
    assert isinstance(source, DurableSource)
    wait_for(lambda: handle.id in source._held)
    try:
        assert queue.abort() == []
    finally:
        gate.set()
    found = record()
    assert found.status in ("pending", "retrying")  # back in the store, for any worker
    assert "handed back" in (found.error or "")
