"""A queue on the SQLite backend: named tasks, leases, several processes, crashes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypedDict

import pytest

import dowork
from dowork import (
    AsyncTaskFunction,
    DurableSettings,
    FakeClock,
    Queue,
    SyncTaskFunction,
    Task,
    TaskStatus,
)
from dowork.backends import ClaimRequest, Record, SQLiteBackend
from tests.durable.harness import each_runs_once

WAIT = 10.0


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tasks.sqlite3"


@pytest.fixture
def queues(db: Path) -> Iterator[Callable[..., Queue]]:
    made: list[Queue] = []

    def make(**options: Any) -> Queue:
        options.setdefault("backend", f"sqlite:///{db}")
        options.setdefault("log", False)
        options.setdefault("durable", DurableSettings(lease=2.0, maintenance=0.25))
        queue = Queue("jobs", **options)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.shutdown(timeout=2)


class Declared(TypedDict):
    """The three tasks ``declare`` registers, by name."""

    add: SyncTaskFunction[[int, int], int]
    boom: SyncTaskFunction[[], None]
    nap: AsyncTaskFunction[[float], str]


def declare(queue: Queue) -> Declared:
    """Declare the same three tasks on a queue (as each process would import them)."""

    @queue.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @queue.task(name="boom", retries=2, backoff="fixed", base_delay=10)
    def boom() -> None:
        raise OSError("always")

    @queue.task(name="nap")
    async def nap(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "rested"

    return {"add": add, "boom": boom, "nap": nap}


def test_submit_run_and_read_back(queues: Callable[..., Queue]) -> None:
    queue = queues()
    tasks = declare(queue)
    queue.start()
    handle = tasks["add"].submit(2, 3)
    assert handle.result(WAIT) == 5
    assert queue.status(handle.id) is TaskStatus.SUCCEEDED


def test_closures_and_unencodable_arguments_are_refused_at_enqueue(
    queues: Callable[..., Queue], db: Path
) -> None:
    queue = queues()
    tasks = declare(queue)
    with pytest.raises(dowork.NotRegistered, match="not a registered task"):
        queue.submit(lambda: 1)

    def local() -> None: ...

    with pytest.raises(dowork.NotRegistered, match="nested function"):
        queue.task(local)
    with pytest.raises(dowork.NotSerializable):
        tasks["add"].submit(object(), 1)  # type: ignore[arg-type]  # deliberately unencodable
    with pytest.raises(dowork.NotSerializable, match="after-callback"):
        queue.enqueue(Task(tasks["add"].fn, args=(1, 2), after=lambda t: None))
    with pytest.raises(ValueError, match="already registered"):
        queue.task(name="add")(lambda: None)
    assert asyncio.run(_counts(db)) == {}


async def _counts_of(db: Path, queue: str) -> dict[str, int]:
    backend = SQLiteBackend(db)
    try:
        return await backend.counts(queue)
    finally:
        await backend.close()


async def _counts(db: Path) -> dict[str, int]:
    backend = SQLiteBackend(db)
    try:
        return await backend.counts("jobs")
    finally:
        await backend.close()


def test_retries_follow_the_fake_clock_and_are_stored(
    queues: Callable[..., Queue], db: Path
) -> None:
    clock = FakeClock()
    queue = queues(clock=clock)
    tasks = declare(queue)
    handle = tasks["boom"].submit()
    assert queue.dispatch() is True
    assert queue.status(handle.id) is TaskStatus.RETRYING
    assert queue.dispatch() is True  # not due yet
    clock.advance(10)
    assert queue.dispatch() is True
    clock.advance(10)
    assert queue.dispatch() is False
    other = queues(clock=clock)
    seen = other.get(handle.id)
    assert seen is not None
    assert seen.status is TaskStatus.FAILED
    assert seen.attempts == 3
    with pytest.raises(dowork.TaskFailed, match="MaxRetriesExceeded after 3"):
        seen.result(0)


def test_another_queue_object_runs_what_one_submitted(queues: Callable[..., Queue]) -> None:
    """Producer and worker are separate objects on one file, as separate processes would be."""
    producer, worker = queues(), queues()
    declare(producer)
    declare(worker)
    add = producer.registry.get("add")
    assert add is not None
    handles = [producer.submit(add, i, i) for i in range(50)]
    worker.start()
    assert [h.result(WAIT) for h in handles] == [2 * i for i in range(50)]


def test_unknown_names_and_garbage_are_dead_lettered(
    queues: Callable[..., Queue], db: Path
) -> None:
    queue = queues()
    tasks = declare(queue)
    now = time.time()
    garbage = [
        Record("x1", "jobs", "no.such:task", b'{"a":[],"k":{}}', now, now),
        Record("x2", "jobs", "add", b"\x00not json", now, now),
        Record("x3", "jobs", "add", b'{"a":"not a list","k":{}}', now, now),
    ]
    asyncio.run(_push(db, garbage))
    good = tasks["add"].submit(1, 1)
    queue.start()
    assert good.result(WAIT) == 2
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        statuses = {r: queue.status(r) for r in ("x1", "x2", "x3")}
        if all(s is TaskStatus.DEAD for s in statuses.values()):
            break
        time.sleep(0.02)
    assert all(s is TaskStatus.DEAD for s in statuses.values()), statuses
    reasons = asyncio.run(_reasons(db))
    assert reasons == {"x1": "unknown_task", "x2": "undecodable", "x3": "undecodable"}


async def _push(db: Path, records: list[Record]) -> None:
    backend = SQLiteBackend(db)
    try:
        await backend.push(records)
    finally:
        await backend.close()


async def _reasons(db: Path) -> dict[str, str | None]:
    backend = SQLiteBackend(db)
    try:
        return {r.id: r.reason for r in await backend.get(["x1", "x2", "x3"])}
    finally:
        await backend.close()


def test_cancel_by_id_from_another_process_object(queues: Callable[..., Queue]) -> None:
    producer, worker = queues(), queues()
    declare(producer)
    w = declare(worker)
    add = producer.registry.get("add")
    assert add is not None
    waiting = producer.call_later(3600, add, 1, 2)
    assert producer.cancel(waiting.id) is True
    assert producer.status(waiting.id) is TaskStatus.CANCELLED
    worker.start()
    running = w["nap"].submit(60)
    deadline = time.monotonic() + WAIT
    while worker.status(running.id) is not TaskStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert producer.cancel(running.id) is True
    seen = producer.get(running.id)
    assert seen is not None
    with pytest.raises(dowork.TaskFailed, match="cancel"):
        seen.result(WAIT)
    assert seen.status is TaskStatus.CANCELLED


def test_tasks_survive_a_restart(queues: Callable[..., Queue], db: Path) -> None:
    first = queues()
    t = declare(first)
    handles = [t["add"].submit(i, 0) for i in range(20)]
    assert first.shutdown(timeout=2) is True  # never started: nothing ran
    second = queues()
    declare(second)
    second.start()
    for handle in handles:
        seen = second.get(handle.id)
        assert seen is not None
        assert seen.result(WAIT) == handles.index(handle)


def test_url_and_settings_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend URL"):
        Queue("q", backend="ftp://nowhere")
    with pytest.raises(ValueError, match="half the lease"):
        DurableSettings(lease=10, maintenance=6)
    with pytest.raises(ValueError, match="maxsize"):
        Queue("q", backend=f"sqlite:///{tmp_path / 'x.db'}", maxsize=3)
    with pytest.raises(ValueError, match="backend"):
        Queue("q", codec=dowork.JSONCodec())


# -- several processes -------------------------------------------------------------------------


@pytest.mark.realtime
@pytest.mark.timeout(240)
def test_four_worker_processes_run_each_task_exactly_once(db: Path, tmp_path: Path) -> None:
    each_runs_once(f"sqlite:///{db}", tmp_path / "ledger.txt", 20_000, bulk=False)


def test_recurring_schedule_fires_once_across_workers(db: Path) -> None:
    """Three worker objects on one file run the same schedule: each due time runs once."""
    clock = FakeClock(1_700_000_000.0)
    runs: list[float] = []
    workers = []
    for _ in range(3):
        queue = Queue(
            "sched",
            backend=f"sqlite:///{db}",
            clock=clock,
            log=False,
            durable=DurableSettings(lease=2.0, maintenance=0.25),
        )

        @queue.task(name="tick")
        def tick(label: str) -> None:
            runs.append(clock.now())

        schedule = queue.every(60, tick, "a")
        workers.append((queue, schedule))
        queue.start()
    try:
        for step in range(1, 4):
            clock.set(1_700_000_000.0 + 60 * step + 1)  # past the next grid point
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                counts = asyncio.run(_counts_of(db, "sched"))
                if len(runs) >= step and counts.get("succeeded", 0) >= step:
                    break  # settled: a later clock jump cannot expire its lease
                time.sleep(0.01)

        def elsewhere() -> int:
            return sum(s.fired_elsewhere for _, s in workers)

        deadline = time.monotonic() + 2.0
        while elsewhere() < 6 and time.monotonic() < deadline:
            time.sleep(0.01)  # the other two workers' pushes of each due time are refused
        assert len(runs) == 3  # each due time ran exactly once
        assert sum(s.runs for _, s in workers) == 3
        # The other workers' firings were refused (up to 2 per due time; a worker that woke
        # after the clock had jumped past a due time may skip it instead of firing it late).
        assert 1 <= elsewhere() <= 6
    finally:
        for queue, _ in workers:
            queue.shutdown(timeout=2)


_LOADS: Counter[int] = Counter()


def _load(args: dict[str, Any]) -> dict[str, Any]:
    _LOADS[args["n"]] += 1
    return args | {"loaded": True}


_FAILS = {"left": 1}


def _store(args: dict[str, Any]) -> dict[str, Any]:
    if _FAILS["left"] > 0:
        _FAILS["left"] -= 1
        raise ConnectionError("store unavailable")
    return args | {"stored": True}


def _explode(args: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"bad input {args['n']}")


def test_durable_chain_resumes_and_keeps_its_log(queues: Callable[..., Queue]) -> None:
    clock = FakeClock()
    producer, worker = queues(clock=clock), queues(clock=clock)
    for queue in (producer, worker):
        queue.chain("etl", _load, _store, retries=1, backoff="fixed", base_delay=5)
        queue.chain("bad", _load, _explode)
    _FAILS["left"] = 1
    _LOADS.clear()
    good = producer.submit_job("etl", {"n": 1})
    bad = producer.submit_job("bad", {"n": 2})
    assert worker.dispatch() is True  # etl failed at _store, retry stored with its resume point
    clock.advance(5)
    assert worker.dispatch() is False
    seen = producer.get(good.id)
    assert seen is not None
    assert seen.result(0) == {"n": 1, "loaded": True, "stored": True}
    assert _LOADS[1] == 1  # the retry resumed at _store, _load did not run again
    log = producer.chain_log(bad.id)  # read back in another "process"
    assert log is not None
    assert (log.reached, log.args, log.error) == (
        1,
        {"n": 2, "loaded": True},
        "ValueError: bad input 2",
    )


def test_max_running_holds_across_worker_objects(db: Path) -> None:
    """gotasks' WithMaxLimit: at most 2 running in the whole queue, whatever the workers."""
    import threading

    lock = threading.Lock()
    running = [0, 0]
    workers = []
    settings = DurableSettings(lease=2.0, maintenance=0.25, max_running=2)
    for _ in range(3):
        queue = Queue("cap", backend=f"sqlite:///{db}", log=False, concurrency=4, durable=settings)

        @queue.task(name="work")
        def work(n: int) -> int:
            with lock:
                running[0] += 1
                running[1] = max(running[1], running[0])
            time.sleep(0.01)
            with lock:
                running[0] -= 1
            return n

        workers.append((queue, work))
    handles = [workers[0][1].submit(i) for i in range(30)]
    for queue, _ in workers:
        queue.start()
    try:
        for handle in handles:
            assert handle.result(WAIT) == handles.index(handle)
    finally:
        for queue, _ in workers:
            queue.shutdown(timeout=2)
    assert running[1] == 2


def test_bulk_enqueue_is_atomic(queues: Callable[..., Queue], db: Path) -> None:
    queue = queues()
    tasks = declare(queue)
    handles = tasks["add"].map([(i, 1) for i in range(500)])
    assert asyncio.run(_counts(db)) == {"pending": 500}
    bad = [tasks["add"].task(1, 2), tasks["add"].task(object(), 2)]  # type: ignore[arg-type]  # unencodable
    with pytest.raises(dowork.NotSerializable):
        queue.enqueue_many(bad)
    assert asyncio.run(_counts(db)) == {"pending": 500}  # nothing of the bad batch stored
    queue.start()
    assert [h.result(WAIT) for h in handles[:3]] == [1, 2, 3]


def test_keep_result_per_task(queues: Callable[..., Queue]) -> None:
    queue = queues()
    tasks = declare(queue)
    kept = tasks["add"].submit(1, 1)
    gone = queue.enqueue(tasks["add"].task(2, 2).configure(keep_result=0))
    queue.start()
    assert kept.result(WAIT) == 2
    assert gone.result(WAIT) == 4
    assert asyncio.run(_counts(queue_db(queue))) == {"succeeded": 1}  # written, as reported
    other = queues()
    assert other.get(kept.id) is not None
    assert other.get(gone.id) is None  # finished and not stored


def queue_db(queue: Queue) -> Path:
    backend = queue.backend
    assert isinstance(backend, SQLiteBackend)
    return Path(backend.path)


def test_sqlite_urls_follow_sqlalchemy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dowork.backends import open_backend

    monkeypatch.chdir(tmp_path)
    relative = open_backend("sqlite:///rel.db")
    absolute = open_backend(f"sqlite:///{tmp_path / 'abs.db'}")
    bare = open_backend("sqlite:bare.db")
    assert isinstance(relative, SQLiteBackend)
    assert isinstance(absolute, SQLiteBackend)
    assert isinstance(bare, SQLiteBackend)
    assert relative.path == "rel.db"
    assert absolute.path == str(tmp_path / "abs.db")
    assert bare.path == "bare.db"


def test_dead_letters_reach_the_hooks(queues: Callable[..., Queue], db: Path) -> None:
    from dowork.metrics import PrometheusHooks

    metrics = PrometheusHooks()
    queue = queues(hooks=[metrics])
    now = time.time()
    asyncio.run(_push(db, [Record("zz", "jobs", "gone:task", b'{"a":[],"k":{}}', now, now)]))
    queue.dispatch()
    value = metrics.registry.get_sample_value(
        "queue_tasks_failed_total", {"queue": "jobs", "status": "dead"}
    )
    assert value == 1


def test_a_file_from_before_progress_gains_the_column(db: Path) -> None:
    import sqlite3

    from dowork.backends.sqlite.schema import SCHEMA as _SCHEMA

    old_schema = _SCHEMA.replace(",\n    progress TEXT", "")
    assert old_schema != _SCHEMA
    with sqlite3.connect(db) as conn:
        conn.executescript(old_schema)
        conn.execute(
            "INSERT INTO dowork_tasks (id, queue, name, payload, status, run_at, created_at,"
            " updated_at) VALUES ('old', 'jobs', 'add', x'7b7d', 'pending', 1, 1, 1)"
        )
    conn.close()

    async def body() -> None:
        backend = SQLiteBackend(db)
        await backend.open()
        try:
            (claimed,) = await backend.claim(ClaimRequest("jobs", 2.0, 1, 30.0, "w"))
            await backend.progress([(claimed.id, claimed.attempts, "[1, null, 2]")])
            (stored,) = await backend.get(["old"])
            assert stored.progress == "[1, null, 2]"
        finally:
            await backend.close()

    asyncio.run(body())


def test_dispatch_counts_a_task_another_worker_holds_unstarted_as_work(
    queues: Callable[..., Queue], db: Path
) -> None:
    """A claimed, not yet started task (``reserved``) is unfinished: dispatch says work remains."""
    clock = FakeClock()
    queue = queues(clock=clock)
    tasks = declare(queue)
    handle = tasks["add"].submit(1, 2)

    async def claim_elsewhere() -> str:
        backend = SQLiteBackend(db)
        try:
            request = ClaimRequest("jobs", clock.now(), 1, 60.0, "another-worker")
            (record,) = await backend.claim(request)
            return record.status
        finally:
            await backend.close()

    assert asyncio.run(claim_elsewhere()) == "reserved"
    assert queue.dispatch() is True  # held by the other worker, not finished
    assert queue.status(handle.id) is TaskStatus.RESERVED
