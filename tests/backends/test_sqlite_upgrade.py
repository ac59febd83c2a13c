"""A SQLite file made before tasks kept an attempt history gains the column when opened."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from dowork.backends import Outcome, Record, Settlement, SQLiteBackend


def test_an_older_file_gains_the_history_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SQLiteBackend(path)  # nothing opened yet
    conn = sqlite3.connect(path)
    conn.execute(  # the table as earlier versions created it
        "CREATE TABLE dowork_tasks (id TEXT PRIMARY KEY, queue TEXT NOT NULL, name TEXT NOT NULL,"
        " payload BLOB NOT NULL, options TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL"
        " DEFAULT 0, run_at REAL NOT NULL, lease_until REAL, owner TEXT, crashes INTEGER NOT NULL"
        " DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0, error TEXT, reason TEXT,"
        " result BLOB, created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL,"
        " expires_at REAL)"
    )
    conn.execute(
        "INSERT INTO dowork_tasks (id, queue, name, payload, status, run_at, created_at,"
        " updated_at) VALUES ('old', 'q', 'job', x'7b7d', 'pending', 0, 0, 0)"
    )
    conn.commit()
    conn.close()

    async def body() -> None:
        store = SQLiteBackend(path)
        try:
            (old,) = await store.get(["old"])
            assert old.history is None
            await store.push([Record("new", "q", "job", b"{}", 0.0, 1.0)])
            claimed = await store.claim("q", 1.0, 10, 30.0, "w")
            assert {r.id for r in claimed} == {"old", "new"}
            await store.settle(
                [Settlement(r.id, 1, Outcome.SUCCEEDED, 2.0, attempt='{"n":1}') for r in claimed]
            )
            assert {r.history for r in await store.get(["old", "new"])} == {'{"n":1}\n'}
        finally:
            await store.close()

    asyncio.run(body())
