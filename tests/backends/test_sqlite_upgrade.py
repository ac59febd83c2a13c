"""A SQLite file made by an older dowork gains the columns and indexes it lacks when opened."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from dowork.backends import ClaimRequest, Outcome, Record, Settlement, SQLiteBackend
from dowork.backends.sqlite import admin
from dowork.backends.sqlite.schema import INDEXES, WAITING_SQL


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
            assert (old.priority, old.slot) == (0, None)
            await store.push([Record("new", "q", "job", b"{}", 0.0, 1.0)])
            claimed = await store.claim(ClaimRequest("q", 1.0, 10, 30.0, "w"))
            assert {r.id for r in claimed} == {"old", "new"}
            await store.settle(
                [Settlement(r.id, 1, Outcome.SUCCEEDED, 2.0, attempt='{"n":1}') for r in claimed]
            )
            assert {r.history for r in await store.get(["old", "new"])} == {'{"n":1}\n'}
        finally:
            await store.close()

    asyncio.run(body())


def test_a_file_from_before_priorities_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "before-priorities.db"
    conn = sqlite3.connect(path)
    conn.executescript(  # the table and due index as the release before priorities made them
        "CREATE TABLE dowork_tasks (id TEXT PRIMARY KEY, queue TEXT NOT NULL, name TEXT NOT NULL,"
        " payload BLOB NOT NULL, options TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL"
        " DEFAULT 0, run_at REAL NOT NULL, lease_until REAL, owner TEXT, crashes INTEGER NOT NULL"
        " DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0, error TEXT, reason TEXT,"
        " result BLOB, created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL,"
        " expires_at REAL, progress TEXT, history TEXT);"
        "CREATE INDEX dowork_due ON dowork_tasks (queue, run_at)"
        " WHERE status IN ('pending', 'scheduled', 'retrying');"
    )
    conn.executemany(
        "INSERT INTO dowork_tasks (id, queue, name, payload, status, run_at, created_at,"
        " updated_at) VALUES (?, 'q', 'job', x'7b7d', ?, ?, 0, 0)",
        [("old2", "pending", 2.0), ("old1", "retrying", 1.0), ("later", "scheduled", 50.0)],
    )
    conn.commit()
    conn.close()

    async def body() -> None:
        for _ in range(2):  # a second open finds nothing left to do
            store = SQLiteBackend(path)
            await store.open()
            await store.close()
        store = SQLiteBackend(path)
        try:
            old = await store.get(["old1", "old2", "later"])
            assert {(r.priority, r.slot) for r in old} == {(0, None)}
            await store.push([Record("urgent", "q", "job", b"{}", 3.0, 3.0, priority=1)])
            assert await store.next_due("q") == 1.0
            claimed = await store.claim(ClaimRequest("q", 10.0, 10, 30.0, "w", aging=60.0))
            assert [r.id for r in claimed] == ["urgent", "old1", "old2"]
            assert [r.priority for r in claimed] == [1, 0, 0]
            assert await store.next_due("q") == 50.0
        finally:
            await store.close()

    asyncio.run(body())
    conn = sqlite3.connect(path)
    try:
        columns = {row[1]: row for row in conn.execute("PRAGMA table_info(dowork_tasks)")}
        assert columns["priority"][2:5] == ("INTEGER", 1, "0")  # type, NOT NULL, default
        assert columns["slot"][2] == "REAL"
        assert columns["concurrency_key"][2:4] == ("TEXT", 0)
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "dowork_due" not in indexes  # replaced by the index by priority
        assert {"dowork_ready", "dowork_lanes", "dowork_rates", "dowork_turns"} <= indexes
        plan = conn.execute(
            f"EXPLAIN QUERY PLAN SELECT id FROM dowork_tasks WHERE queue = 'q' AND {WAITING_SQL}"
            " AND concurrency_key IS NULL AND priority = 0 AND run_at <= 5"
            " ORDER BY run_at, rowid LIMIT 3"
        ).fetchall()
        assert [row[3] for row in plan] == [
            "SEARCH dowork_tasks USING INDEX dowork_ready (queue=? AND priority=? AND run_at<?)"
        ]
    finally:
        conn.close()


def test_a_file_from_before_concurrency_keys_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "before-keys.db"
    conn = sqlite3.connect(path)
    conn.executescript(  # the table and due index as the release before concurrency keys
        "CREATE TABLE dowork_tasks (id TEXT PRIMARY KEY, queue TEXT NOT NULL, name TEXT NOT NULL,"
        " payload BLOB NOT NULL, options TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL"
        " DEFAULT 0, run_at REAL NOT NULL, lease_until REAL, owner TEXT, crashes INTEGER NOT NULL"
        " DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0, error TEXT, reason TEXT,"
        " result BLOB, created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL,"
        " expires_at REAL, progress TEXT, history TEXT, priority INTEGER NOT NULL DEFAULT 0,"
        " slot REAL);"
        "CREATE INDEX dowork_ready ON dowork_tasks (queue, priority, run_at)"
        " WHERE status IN ('pending', 'scheduled', 'retrying');"
    )
    conn.executemany(
        "INSERT INTO dowork_tasks (id, queue, name, payload, status, run_at, created_at,"
        " updated_at, priority) VALUES (?, 'q', 'job', x'7b7d', 'pending', ?, 0, 0, ?)",
        [("old0", 1.0, 0), ("old1", 2.0, 0), ("old-high", 3.0, 1)],
    )
    conn.commit()
    conn.close()

    async def body() -> None:
        for _ in range(2):  # a second open finds nothing left to do
            store = SQLiteBackend(path)
            await store.open()
            await store.close()
        store = SQLiteBackend(path)
        try:
            old = await store.get(["old0", "old1", "old-high"])
            assert {r.concurrency_key for r in old} == {None}
            await store.push(
                [Record(f"k{i}", "q", "job", b"{}", 0.5, 0.5, concurrency_key="K") for i in (0, 1)]
            )
            # The old records take turns with the key as one lane: "" (theirs), ranked by
            # their most urgent record, against K's.
            claimed = await store.claim(ClaimRequest("q", 10.0, 4, 30.0, "w", aging=60.0))
            assert [r.id for r in claimed] == ["old-high", "k0", "old0", "k1"]
            assert [r.concurrency_key for r in claimed] == [None, "K", None, "K"]
            assert await store.next_due("q") == 2.0
        finally:
            await store.close()

    asyncio.run(body())
    conn = sqlite3.connect(path)
    try:
        indexes = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
        assert "concurrency_key IS NULL" in indexes["dowork_ready"]  # remade, without keys
        assert "concurrency_key IS NOT NULL" in indexes["dowork_lanes"]
        assert conn.execute("SELECT key FROM dowork_turns").fetchall() == [("",)]
    finally:
        conn.close()


def _opcodes(conn: sqlite3.Connection, sql: str) -> list[str]:
    return [row[1] for row in conn.execute(f"EXPLAIN {sql}")]


def test_a_write_builds_no_temporary_btree_per_row(tmp_path: Path) -> None:
    """The status CHECK and the claim indexes' WHERE are equalities joined by OR: an IN list of
    three or more values there made SQLite build a temporary b-tree for every row written.
    """
    path = tmp_path / "new.db"
    asyncio.run(_open_and_close(path))
    conn = sqlite3.connect(path)
    try:
        for sql in (
            "UPDATE dowork_tasks SET status = 'running' WHERE id = 'x'",
            "UPDATE dowork_tasks SET status = 'pending', run_at = 1 WHERE id = 'x'",
            "INSERT INTO dowork_tasks (id, queue, name, payload, status, run_at, created_at,"
            " updated_at) VALUES ('x', 'q', 'job', x'7b7d', 'pending', 0, 0, 0)",
            "DELETE FROM dowork_tasks WHERE id = 'x'",
        ):
            assert "OpenEphemeral" not in _opcodes(conn, sql), sql
    finally:
        conn.close()


def test_claim_indexes_of_the_shape_before_are_remade(tmp_path: Path) -> None:
    """A file whose claim indexes test ``status IN (...)`` gets the current ones on open."""
    path = tmp_path / "in-lists.db"
    asyncio.run(_open_and_close(path))
    conn = sqlite3.connect(path)
    in_list = "status IN ('pending', 'scheduled', 'retrying')"
    for name, sql in INDEXES.items():
        conn.execute(f"DROP INDEX {name}")
        conn.execute(sql.replace(WAITING_SQL, in_list))
    conn.commit()
    assert (
        in_list
        in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'dowork_ready'").fetchone()[0]
    )
    conn.close()
    asyncio.run(_open_and_close(path))
    conn = sqlite3.connect(path)
    try:
        have = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
        for name, sql in INDEXES.items():
            assert have[name] == sql.replace(" IF NOT EXISTS", "", 1)
            assert in_list not in have[name]
    finally:
        conn.close()


async def _open_and_close(path: Path) -> None:
    store = SQLiteBackend(path)
    await store.open()
    await store.close()


def test_a_listing_index_of_every_record_is_remade_without_the_leased_ones(
    tmp_path: Path,
) -> None:
    """A file made by the previous version lists every record in ``dowork_listing``.

    Opened, it gets the partial index of the records not leased; its records are counted and
    listed by status as before, leased or not, each status through an index.
    """
    path = tmp_path / "listing.db"

    async def fill() -> None:
        store = SQLiteBackend(path)
        try:
            await store.push([Record(f"t{i}", "q", "job", b"{}", 0.0, float(i)) for i in range(6)])
            claimed = await store.claim(ClaimRequest("q", 1.0, 4, 30.0, "w"))
            assert [r.id for r in claimed] == ["t0", "t1", "t2", "t3"]
            done = [
                Settlement("t0", 1, Outcome.SUCCEEDED, 2.0),
                Settlement("t1", 1, Outcome.STARTED, 2.0),
            ]
            done.append(Settlement("t2", 1, Outcome.FAILED, 2.0, error="E"))
            assert await store.settle(done) == []
        finally:
            await store.close()

    asyncio.run(fill())
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX dowork_listing")  # as the version before made it:
    conn.execute("CREATE INDEX dowork_listing ON dowork_tasks (queue, status, created_at)")
    conn.commit()
    conn.close()

    async def read() -> None:
        store = SQLiteBackend(path)
        try:
            assert await store.counts("q") == {
                "succeeded": 1, "running": 1, "failed": 1, "reserved": 1, "pending": 2,
            }  # fmt: skip
            pages = {
                statuses: [r.id for r in await store.list("q", statuses, newest_first=False)]
                for statuses in [("failed",), ("running",), ("reserved", "succeeded", "failed")]
            }
            assert pages == {
                ("failed",): ["t2"],
                ("running",): ["t1"],
                ("reserved", "succeeded", "failed"): ["t0", "t2", "t3"],
            }
            assert [r.id for r in await store.list("q", limit=2, offset=1)] == ["t4", "t3"]
            assert await store.purge("q", ["running", "pending"]) == 3
            assert await store.counts("q") == {"succeeded": 1, "failed": 1, "reserved": 1}
        finally:
            await store.close()

    asyncio.run(read())
    conn = sqlite3.connect(path)
    try:
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'dowork_listing'"
        ).fetchone()
        assert sql == INDEXES["dowork_listing"].replace(" IF NOT EXISTS", "", 1)
        assert "WHERE status NOT IN ('reserved', 'running')" in sql
    finally:
        conn.close()


def test_counts_lists_and_purges_by_status_read_through_an_index(tmp_path: Path) -> None:
    """No count, page or purge by status reads the queue's records one by one."""
    path = tmp_path / "plans.db"
    asyncio.run(_open_and_close(path))
    conn = sqlite3.connect(path, isolation_level=None)
    traced: list[str] = []
    conn.set_trace_callback(traced.append)
    admin._counts(conn, "q")
    for statuses in [("failed",), ("running",), ("dead", "reserved")]:
        admin._list(conn, "q", statuses, 10, 0, True)
    admin._purge_queue(conn, "q", ("failed", "running"))
    admin._purge_queue(conn, "q", None)
    conn.set_trace_callback(None)
    try:
        reads = [sql for sql in traced if sql.split()[0] in ("SELECT", "DELETE")]
        assert len(reads) == 7
        for sql in reads:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            searches = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
            assert searches, sql
            for step in searches:
                assert "dowork_listing" in step or "dowork_leases" in step, (sql, plan)
    finally:
        conn.close()
