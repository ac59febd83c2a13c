"""Safety defaults of durable queues: the payload cap, signed pickle, registry-only task names,
private SQLite files, idempotency keys, retention, delivery counts, and SQLite under a lock
or out of space (reliability.md rows 7, 8, 10, 11 and section 4)."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dowork
from dowork import DurableSettings, FakeClock, Queue, TaskStatus
from dowork.backends import Backend, Record, SQLiteBackend
from dowork.codec import JSONCodec, PickleCodec
from dowork.durable import DurableSource
from dowork.errors import BackendBusy, BackendFull, DecodeError, PayloadTooLarge
from tests.backends.test_safety import Retention
from tests.durable.reads import records_in

KEY = "a-test-key-of-32-bytes-for-hmac!"


def echo(value: Any) -> Any:
    return value


# -- the payload cap (row 11) ----------------------------------------------------------------


def test_oversized_arguments_raise_before_anything_is_written(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    queue = queues(store, durable=DurableSettings(max_payload=64 * 1024))
    task_fn = queue.task(name="echo")(echo)
    small = task_fn.submit("x" * 1000)
    with pytest.raises(PayloadTooLarge) as caught:
        task_fn.submit("x" * (10 * 1024 * 1024))
    assert caught.value.limit == 64 * 1024
    assert caught.value.size > 10 * 1024 * 1024
    with pytest.raises(PayloadTooLarge):  # a batch with one oversized call stores none
        task_fn.map([("a",), ("b" * 100_000,), ("c",)])
    assert [r.id for r in records_in(queue)] == [small.id]
    assert isinstance(caught.value, dowork.DoWorkError)


def test_the_default_cap_is_512_kib(tmp_path: Path, queues: Callable[..., Queue]) -> None:
    assert DurableSettings().max_payload == 512 * 1024
    queue = queues(f"sqlite:///{tmp_path / 'cap.db'}")
    task_fn = queue.task(name="echo")(echo)
    task_fn.submit("x" * 500_000)
    with pytest.raises(PayloadTooLarge):
        task_fn.submit("x" * 530_000)
    assert len(records_in(queue)) == 1
    with pytest.raises(ValueError, match="max_payload"):
        DurableSettings(max_payload=0)


# -- pickle only by choice, and signed -------------------------------------------------------


class _Boobytrap:
    """Unpickling this makes a directory: proof that a payload was (or was not) unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def test_json_is_the_default_and_pickle_needs_a_key(
    tmp_path: Path, queues: Callable[..., Queue]
) -> None:
    queue = queues(f"sqlite:///{tmp_path / 'j.db'}")
    assert isinstance(queue._engine.source, DurableSource)
    assert isinstance(queue._engine.source.codec, JSONCodec)
    with pytest.raises(TypeError):
        PickleCodec()  # type: ignore[call-arg]  # deliberately without its key
    with pytest.raises(ValueError, match="16 bytes"):
        PickleCodec(key="short")
    assert KEY not in repr(PickleCodec(key=KEY))


def test_signed_pickle_round_trips_and_refuses_forgeries(tmp_path: Path) -> None:
    codec = PickleCodec(key=KEY)
    value = {"when": frozenset({1, 2}), "tuple": (1, "a")}
    data = codec.encode(value)
    assert codec.decode(data) == value
    trap = str(tmp_path / "unpickled")
    forgeries = {
        "unsigned": pickle.dumps(_Boobytrap(trap)),
        "other key": PickleCodec(key="another-key-of-32-bytes-for-hmac").encode(_Boobytrap(trap)),
        "altered": data[:-2] + bytes([data[-2] ^ 1]) + data[-1:],
        "truncated": data[:10],
    }
    for what, forged in forgeries.items():
        with pytest.raises(DecodeError) as caught:
            codec.decode(forged)
        assert caught.value.reason == "bad_signature", what
    assert not os.path.exists(trap)


def test_a_forged_pickle_is_dead_lettered_never_unpickled(
    tmp_path: Path, queues: Callable[..., Queue]
) -> None:
    db = tmp_path / "p.db"
    queue = queues(f"sqlite:///{db}", codec=PickleCodec(key=KEY), clock=FakeClock())
    ran: list[Any] = []
    queue.task(name="echo")(ran.append)
    trap = str(tmp_path / "unpickled")
    now = time.time()
    forged = [
        Record(
            "unsigned", "jobs", "echo", pickle.dumps({"a": [_Boobytrap(trap)], "k": {}}), 0, now
        ),
        Record(
            "wrong-key",
            "jobs",
            "echo",
            PickleCodec(key="another-key-of-32-bytes-for-hmac").encode(
                {"a": [_Boobytrap(trap)], "k": {}}
            ),
            0,
            now,
        ),
    ]
    backend = queue.backend
    assert backend is not None
    queue._engine.run_on_home(backend.push(forged))
    queue.dispatch()
    assert not os.path.exists(trap)
    assert ran == []
    got = {r.id: (r.status, r.reason) for r in records_in(queue)}
    assert got == {"unsigned": ("dead", "bad_signature"), "wrong-key": ("dead", "bad_signature")}


# -- task names come only from the registry (row 10) -----------------------------------------


def test_a_message_naming_an_importable_function_is_dead_lettered_not_imported(
    tmp_path: Path, queues: Callable[..., Queue]
) -> None:
    queue = queues(f"sqlite:///{tmp_path / 'r.db'}", clock=FakeClock())
    queue.task(name="echo")(echo)
    marker = tmp_path / "pwned"
    payload = JSONCodec().encode({"a": [f"touch {marker}"], "k": {}})
    now = time.time()
    names = ["os.system", "os:system", "subprocess:getoutput", "builtins:exec", "tests.x:echo"]
    records = [Record(f"m{i}", "jobs", name, payload, 0, now) for i, name in enumerate(names)]
    backend = queue.backend
    assert backend is not None
    queue._engine.run_on_home(backend.push(records))
    modules = set(sys.modules)
    queue.dispatch()
    assert not marker.exists()
    assert set(sys.modules) == modules  # nothing was imported to find those names
    got = {r.name: (r.status, r.reason) for r in records_in(queue)}
    assert got == dict.fromkeys(names, ("dead", "unknown_task"))


# -- private SQLite files --------------------------------------------------------------------


def test_sqlite_files_are_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    db = tmp_path / "private.db"
    old = os.umask(0)  # the most permissive umask: files would be 0644 or 0666
    try:
        backend = SQLiteBackend(db)

        async def use() -> None:
            await backend.open()
            await backend.push([Record("a", "q", "n", b"{}", 0.0, 0.0)])
            await backend.get(["a"])

        asyncio.run(use())
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
        assert modes == {"private.db": 0o600, "private.db-wal": 0o600, "private.db-shm": 0o600}
        asyncio.run(backend.close())
    finally:
        os.umask(old)


def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    db.touch()
    db.chmod(0o640)
    backend = SQLiteBackend(db)
    asyncio.run(backend.open())
    asyncio.run(backend.close())
    assert db.stat().st_mode & 0o777 == 0o640


# -- idempotency keys through the queue ------------------------------------------------------


def test_an_idempotency_key_gives_the_first_task(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    clock = FakeClock()
    queue = queues(store, clock=clock, durable=DurableSettings(idempotency_window=60))
    task_fn = queue.task(name="echo")(echo)
    first = queue.enqueue(task_fn.task(1).configure(idempotency_key="order-1"))
    retry = queue.enqueue(task_fn.task(2).configure(idempotency_key="order-1"))
    other = queue.enqueue(task_fn.task(3).configure(idempotency_key="order-2"))
    assert retry.id == first.id
    assert retry.idempotency_key == "order-1"
    assert other.id != first.id
    assert len(records_in(queue)) == 2
    queue.dispatch()
    assert retry.result(timeout=5) == 1  # the first task's outcome
    clock.advance(61)  # the window passed: the key is free again
    later = queue.enqueue(task_fn.task(4).configure(idempotency_key="order-1"))
    assert later.id != first.id
    queue.dispatch()
    assert later.result(timeout=5) == 4


def test_an_in_memory_queue_refuses_idempotency_keys() -> None:
    queue = Queue("mem")
    with pytest.raises(ValueError, match="durable"):
        queue.enqueue(dowork.Task(echo, (1,)).configure(idempotency_key="k"))
    with pytest.raises(TypeError, match="idempotency_key"):
        dowork.Task(echo, (1,)).configure(idempotency_key="")
    assert queue.dispatch() is False  # nothing was enqueued


# -- retention of dead letters and results, on the queue's clock -----------------------------


def test_results_and_dead_letters_are_purged_on_the_fake_clock(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    clock = FakeClock()
    assert isinstance(store, Retention)
    store.keep_finished = 3600.0
    store.keep_dead = 600.0
    queue = queues(
        store, clock=clock, durable=DurableSettings(lease=30, maintenance=5, purge_every=10)
    )
    task_fn = queue.task(name="echo")(echo)
    done = task_fn.submit("ok")
    now = clock.now()
    unknown = Record("ghost", "jobs", "no-such-task", b'{"a":[],"k":{}}', now, now)
    queue._engine.run_on_home(store.push([unknown]))
    queue.dispatch()
    assert queue.status(done.id) is TaskStatus.SUCCEEDED
    assert queue.status("ghost") is TaskStatus.DEAD
    clock.advance(601)
    queue.dispatch()  # maintenance purges the dead letter, keeps the result
    assert {r.id for r in records_in(queue)} == {done.id}
    clock.advance(3000)
    queue.dispatch()
    assert records_in(queue) == []


# -- attempt and delivery counts (crash re-delivery) -----------------------------------------


_KILLER_APP = """
import os, signal
import dowork

queue = dowork.Queue(
    "kill", backend=os.environ["SAFETY_DB"], log=False,
    durable=dowork.DurableSettings(lease=1.0, maintenance=0.25),
)


@queue.task(name="fragile")
def fragile(ledger: str) -> int:
    me = dowork.current_task()
    with open(ledger, "a") as f:
        f.write(f"{me.attempts} {me.deliveries}\\n")
    if me.deliveries == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-task
    return me.deliveries
"""


@pytest.mark.realtime
def test_a_sigkill_redelivered_task_sees_delivery_count_two(tmp_path: Path) -> None:
    (tmp_path / "killer_app.py").write_text(textwrap.dedent(_KILLER_APP))
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    ledger = tmp_path / "ledger.txt"
    env = dict(os.environ, SAFETY_DB=url, PYTHONPATH=f"{tmp_path}{os.pathsep}{Path.cwd()}")
    producer = Queue("kill", backend=url, log=False)
    producer.task(name="fragile")(echo)
    task = producer.submit(echo, str(ledger))
    argv = [sys.executable, "-m", "dowork", "worker", "killer_app:queue", "--no-metrics", "-p", "1"]
    first = subprocess.Popen(argv, env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        first.kill()
    second = subprocess.Popen(argv, env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        assert task.result(timeout=30) == 2
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        producer.shutdown(timeout=2)
    assert ledger.read_text().split("\n")[:2] == ["1 1", "1 2"]  # attempt 1 both times
    assert (task.attempts, task.deliveries) == (1, 2)  # the producer's handle knows too


def test_in_memory_deliveries_equal_attempts(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    seen: list[tuple[int, int]] = []

    def flaky() -> None:
        me = dowork.current_task()
        seen.append((me.attempts, me.deliveries))
        if me.attempts < 2:
            raise OSError("again")

    queue.enqueue(dowork.Task(flaky, retries=1, backoff="immediate"))
    while queue.dispatch():
        pass
    assert seen == [(1, 1), (2, 2)]


# -- SQLite locked (row 7) and full (row 8) --------------------------------------------------


_LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def test_a_locked_file_raises_backend_busy_after_the_busy_timeout(
    tmp_path: Path, queues: Callable[..., Queue]
) -> None:
    db = tmp_path / "locked.db"
    queue = queues(SQLiteBackend(db, busy_timeout=0.3))
    task_fn = queue.task(name="echo")(echo)
    task_fn.submit("before")
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(BackendBusy, match="busy timeout"):
            task_fn.submit("while locked")
        waited = time.monotonic() - started
        assert 0.25 <= waited < 5, waited
        assert isinstance(BackendBusy("x"), dowork.BackendUnavailable)
    finally:
        locker.communicate("\n", timeout=10)  # release the lock, close the pipes
    task_fn.submit("after")  # the lock is gone: writes go through again
    assert len(records_in(queue)) == 2
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_full_file_raises_backend_full_and_keeps_what_it_had(
    tmp_path: Path, queues: Callable[..., Queue]
) -> None:
    db = tmp_path / "full.db"
    backend = SQLiteBackend(db)
    queue = queues(backend, clock=FakeClock())
    task_fn = queue.task(name="echo")(echo)
    kept = [task_fn.submit(n) for n in range(5)]

    def cap_pages() -> None:  # max_page_count is per connection: cap dowork's own
        conn = backend._conn
        assert conn is not None
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")

    queue._engine.run_on_home(backend._run(cap_pages))

    def fill() -> None:
        for _ in range(50):
            task_fn.submit("x" * 20_000)

    with pytest.raises(BackendFull, match="full"):
        fill()
    stored = records_in(queue)
    assert {t.id for t in kept} <= {r.id for r in stored}
    queue.dispatch()  # workers still claim and finish what is stored
    assert [queue.status(t.id) for t in kept] == [TaskStatus.SUCCEEDED] * 5
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
