"""``SQLiteBackend.push`` of one record from an event loop (``asubmit()``) commits there.

Only when it need not wait: the connection free in this process, no other process holding
SQLite's write lock (the busy timeout is 0 for that try), and commits that do not sync the
file each time. Otherwise the push goes to the connection's thread, as every push did, and
the loop keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from dowork.backends import SQLiteBackend

from .test_contract import rec


def traced(store: SQLiteBackend) -> list[tuple[str, str]]:
    """Every statement the store's connection runs from now on: (thread name, SQL)."""
    seen: list[tuple[str, str]] = []
    conn = store._conn
    assert conn is not None
    conn.set_trace_callback(lambda sql: seen.append((threading.current_thread().name, sql)))
    return seen


def inserts(seen: list[tuple[str, str]]) -> list[str]:
    return [thread for thread, sql in seen if sql.startswith("INSERT")]


def busy_timeout(store: SQLiteBackend) -> int:
    """The busy timeout a use of the connection gets (on its thread), in milliseconds."""

    async def read() -> int:
        return int(await store._file.call(lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0]))

    return asyncio.run(read())


def test_a_push_from_a_loop_commits_on_it_unless_it_would_wait(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    store = SQLiteBackend(path, busy_timeout=10.0)

    async def main() -> None:
        await store.open()
        seen = traced(store)
        await store.push([rec()])
        assert inserts(seen) == ["MainThread"]  # at once, on the loop's thread

        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
        try:
            pushing = asyncio.create_task(store.push([rec()]))
            ticks = 0
            while ticks < 20:  # the loop runs on while the push waits for the lock
                await asyncio.sleep(0.005)
                ticks += 1
            assert not pushing.done()
        finally:
            other.execute("COMMIT")
            other.close()
        await asyncio.wait_for(pushing, 10)
        assert inserts(seen)[1:] == ["dowork-sqlite_0"]  # on the connection's thread
        assert await store.counts("q") == {"pending": 2}
        await store.close()

    asyncio.run(main())
    store = SQLiteBackend(path, busy_timeout=10.0)
    asyncio.run(store.open())
    asyncio.run(store.push([rec()]))  # on the loop: the busy timeout is 0 for it ...
    assert busy_timeout(store) == 10_000  # ... and back for the connection's other uses


def test_a_file_that_syncs_every_commit_is_written_on_its_thread(tmp_path: Path) -> None:
    store = SQLiteBackend(tmp_path / "tasks.db", synchronous="FULL")

    async def main() -> list[str]:
        await store.open()
        seen = traced(store)
        await store.push([rec()])
        await store.close()
        return inserts(seen)

    assert asyncio.run(main()) == ["dowork-sqlite_0"]  # an fsync would stall the loop
