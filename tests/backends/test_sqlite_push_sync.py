"""``SQLiteBackend.push_sync``: ``submit()`` from a thread commits its row on that thread.

The row is written on the store's one connection (a lock keeps its users apart), so it is
the same write as ``push`` makes from the connection's thread: committed before the call
returns, ids checked, in one transaction; records with idempotency keys go through ``push``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import Counter
from pathlib import Path

import pytest

from dowork import Queue
from dowork.backends import SQLiteBackend
from dowork.errors import DuplicateTask

from .test_contract import rec

WAIT = 10.0


def test_a_push_from_a_thread_is_one_transaction_on_that_thread(tmp_path: Path) -> None:
    store = SQLiteBackend(tmp_path / "tasks.db")
    assert store.push_sync([rec()]) is False  # not open yet: push() opens the file
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(store.open())
        conn = store._conn
        assert conn is not None
        traced: list[tuple[str, str]] = []
        trace = lambda sql: traced.append((threading.current_thread().name, sql))  # noqa: E731
        loop.run_until_complete(store._run(conn.set_trace_callback, trace))
        taken = rec()
        assert store.push_sync([taken]) is True
        assert [t for t, sql in traced if sql.startswith("INSERT")] == ["MainThread"]
        assert [sql.split()[0] for _, sql in traced] == ["BEGIN", "INSERT", "COMMIT"]
        with pytest.raises(DuplicateTask):
            store.push_sync([rec(), rec(id=taken.id)])
        assert store.push_sync([rec(idempotency_key="k", idempotency_until=2e9)]) is False
        assert store.push_sync([]) is True
        assert loop.run_until_complete(store.counts("q")) == {"pending": 1}
        (stored,) = loop.run_until_complete(store.get([taken.id]))
        assert (stored.id, stored.payload, stored.status) == (taken.id, taken.payload, "pending")
        loop.run_until_complete(store.close())
        assert store.push_sync([rec()]) is False  # closed: push() opens it again
    finally:
        loop.close()


@pytest.mark.realtime
def test_submits_from_threads_reach_an_idle_worker_at_once(tmp_path: Path) -> None:
    # A poll so slow that only this process's wake-ups can start the tasks in time.
    store = SQLiteBackend(tmp_path / "tasks.db", poll_interval=60.0)
    queue = Queue("jobs", backend=store, log=False, concurrency=4)
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    @queue.task(name="job")
    def job(i: int) -> int:
        with lock:
            ran[i] += 1
        return i

    try:
        queue.start()
        first = job.submit(-1)  # (the worker may not have opened the file yet)
        assert first.result(WAIT) == -1
        traced: list[str] = []
        conn = store._conn
        assert conn is not None
        trace = lambda sql: traced.append(threading.current_thread().name)  # noqa: E731
        queue._engine.run_on_home(store._run(conn.set_trace_callback, trace))

        def submit(start: int) -> None:
            tasks = [job.submit(i) for i in range(start, start + 50)]
            assert [t.result(WAIT) for t in tasks] == list(range(start, start + 50))

        threads = [threading.Thread(target=submit, args=(n * 50,), name=f"p{n}") for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert ran == Counter(range(-1, 200))
        assert {"p0", "p1", "p2", "p3"} <= set(traced)  # each pushed on its own thread
    finally:
        queue.shutdown(timeout=WAIT)


def test_a_pushed_row_reads_back_as_given(tmp_path: Path) -> None:
    """Empty, zero and None values of a pushed record come back as they were given.

    (The push binds None as 0 or '' and bytes as a bytearray, which its INSERT turns back.)
    """
    store = SQLiteBackend(tmp_path / "tasks.db")
    given = [
        dataclasses.replace(rec(options="", slot=0.0, concurrency_key="k"), payload=b""),
        rec(options='{"timeout":5}', slot=None, concurrency_key=None, priority=-1),
        rec(options=None, slot=12.5, concurrency_key="", status="scheduled"),
    ]

    async def body() -> None:
        await store.push(given[:1])
        assert store.push_sync(given[1:2]) is True
        await store.push(given[2:])
        got = {r.id: r for r in await store.get([r.id for r in given])}
        fields = [(r.payload, r.options, r.slot, r.concurrency_key, r.status) for r in given]
        fields[2] = (*fields[2][:3], None, "scheduled")  # an empty key is no key
        stored = [got[r.id] for r in given]
        assert [(r.payload, r.options, r.slot, r.concurrency_key, r.status) for r in stored] == (
            fields
        )
        await store.close()

    asyncio.run(body())
