"""The SQLite connection's thread (``sqlite.thread.CallThread``): what a store's call relies on.

Calls run on one thread, in order; a result or an exception reaches the caller on its own loop;
a call whose caller gave up before it began is not run; the calls queued when the thread stops
run first, and a call made after the stop is refused. ``SQLiteBackend`` over it: one thread
per open file, ended by ``close``.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from dowork.backends import SQLiteBackend
from dowork.backends.sqlite.thread import CallThread


def test_calls_run_in_order_on_the_thread_and_answer_on_the_callers_loop() -> None:
    thread = CallThread("dowork-sqlite_0")
    ran: list[tuple[int, str]] = []

    def note(i: int) -> int:
        ran.append((i, threading.current_thread().name))
        return i * 10

    def fail() -> None:
        raise ValueError("no")

    async def main() -> list[int]:
        answers = await asyncio.gather(*(thread.run(note, (i,)) for i in range(5)))
        with pytest.raises(ValueError, match="no"):
            await thread.run(fail, ())
        return answers

    try:
        assert asyncio.run(main()) == [0, 10, 20, 30, 40]
        assert asyncio.run(main()) == [0, 10, 20, 30, 40]  # from another loop as well
    finally:
        thread.stop()
    assert ran[:5] == [(i, "dowork-sqlite_0") for i in range(5)]
    assert not thread._thread.is_alive()


def test_a_call_cancelled_before_it_began_is_not_run() -> None:
    thread = CallThread("dowork-sqlite_0")
    gate = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        first = asyncio.create_task(thread.run(gate.wait, (5.0,)))  # holds the thread
        await asyncio.sleep(0.01)
        second = asyncio.create_task(thread.run(ran.append, ("second",)))
        await asyncio.sleep(0)  # queued behind the first
        second.cancel()
        first.cancel()  # (already running: it runs to its end, its answer is dropped)
        gate.set()
        await asyncio.gather(first, second, return_exceptions=True)
        await thread.run(ran.append, ("third",))

    try:
        asyncio.run(main())
    finally:
        thread.stop()
    assert ran == ["third"]


def test_calls_queued_at_the_stop_run_and_later_ones_are_refused() -> None:
    thread = CallThread("dowork-sqlite_0")
    gate = threading.Event()
    ran: list[int] = []

    async def main() -> None:
        held = asyncio.create_task(thread.run(gate.wait, (5.0,)))
        queued = [asyncio.create_task(thread.run(ran.append, (i,))) for i in range(3)]
        await asyncio.sleep(0.01)  # all queued
        threading.Timer(0.05, gate.set).start()
        thread.stop()  # (blocks this loop until the queued calls ran)
        assert ran == [0, 1, 2]
        with pytest.raises(RuntimeError, match="stopped"):
            await thread.run(ran.append, (99,))
        await asyncio.gather(held, *queued)  # their answers, delivered now

    asyncio.run(main())
    assert ran == [0, 1, 2]
    assert not thread._thread.is_alive()


def test_an_answer_for_a_closed_loop_does_not_stop_the_thread() -> None:
    thread = CallThread("dowork-sqlite_0")
    gate = threading.Event()

    left: list[asyncio.Future[bool]] = []

    async def leave() -> None:
        left.append(asyncio.ensure_future(thread.run(gate.wait, (5.0,))))
        await asyncio.sleep(0.01)  # the loop closes while the call runs

    try:
        asyncio.run(leave())
        gate.set()
        assert thread.wait(lambda: "still here") == "still here"
    finally:
        thread.stop()


def test_a_backend_has_one_thread_while_open(tmp_path: Path) -> None:
    store = SQLiteBackend(tmp_path / "tasks.db")

    def names() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("dowork-sqlite")]

    before = names()

    async def main() -> str:
        await store.open()
        await store.open()
        name = await store._file.call(lambda conn: threading.current_thread().name)
        assert len(names()) == len(before) + 1
        await store.close()
        return str(name)

    assert asyncio.run(main()) == "dowork-sqlite_0"
    assert names() == before
