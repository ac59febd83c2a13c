"""A SQLite claim gives back every field of its records, read back lean or whole.

A claim reads back half the columns of a record on its first attempt and all of them of
one whose other columns are set (``records.LEASED_COLUMNS``): each such column, set alone,
must come back with its value, in a batch beside fresh records, in the claim's order.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

import pytest

from dowork.backends import ClaimRequest, Record, SQLiteBackend

#: A column a fresh record leaves unset, the value to set, and the field a claim gives back.
_SET = [
    ("crashes", 2, 2),
    ("cancel_requested", 1, True),
    ("started", 3, 3),
    ("lost", 1, 1),
    ("error", "boom", "boom"),
    ("reason", "timeout", "timeout"),
    ("result", b"42", b"42"),
    ("finished_at", 5.0, 5.0),
    ("progress", "[1, null, 2.0]", "[1, null, 2.0]"),
    ("history", '{"n":1}\n', '{"n":1}\n'),
]


@pytest.mark.parametrize(("column", "value", "field"), _SET, ids=[c for c, _, _ in _SET])
def test_a_claim_gives_back_a_column_set_alone(
    tmp_path: Path, column: str, value: object, field: object
) -> None:
    path = tmp_path / "q.db"

    async def push() -> None:
        store = SQLiteBackend(path)
        records = [Record(f"t{i}", "q", "job", b"{}", float(i), 0.0) for i in range(3)]
        await store.push(records)
        await store.close()

    asyncio.run(push())
    conn = sqlite3.connect(path)
    conn.execute(f"UPDATE dowork_tasks SET {column} = ? WHERE id = 't1'", (value,))
    conn.commit()
    conn.close()

    async def claim() -> None:
        store = SQLiteBackend(path)
        try:
            claimed = await store.claim(ClaimRequest("q", 10.0, 10, 30.0, "w"))
            assert [r.id for r in claimed] == ["t0", "t1", "t2"]
            assert getattr(claimed[1], column) == field
            for fresh in (claimed[0], claimed[2]):
                assert getattr(fresh, column) in (None, 0, False)
            assert {(r.attempts, r.status, r.owner) for r in claimed} == {(1, "reserved", "w")}
        finally:
            await store.close()

    asyncio.run(claim())


def test_an_idle_store_claims_on_the_calling_thread_unless_it_would_wait(tmp_path: Path) -> None:
    """After a claim that found nothing, or a wait, the next runs at once on the loop's thread.

    A worker woken by a push then starts the task without two hops to the connection's
    thread and back; a claim that would wait for another process's lock goes there instead,
    and one after a claim that found work goes there too.
    """
    path = tmp_path / "q.db"
    store = SQLiteBackend(path, busy_timeout=10.0)
    request = ClaimRequest("q", 10.0, 10, 30.0, "w")

    async def body() -> None:
        await store.open()
        conn = store._conn
        assert conn is not None
        seen: list[str] = []
        conn.set_trace_callback(
            lambda sql: seen.append(threading.current_thread().name) if "UPDATE" in sql else None
        )
        assert await store.claim(request) == []
        await store.push([Record("a", "q", "job", b"{}", 0.0, 0.0)])
        assert [r.id for r in await store.claim(request)] == ["a"]
        assert seen == ["MainThread"]  # idle: on the loop's thread
        await store.push([Record("b", "q", "job", b"{}", 0.0, 0.0)])
        assert [r.id for r in await store.claim(request)] == ["b"]
        assert seen[1].startswith("dowork-sqlite")  # after a claim that found work: its thread
        assert await store.claim(request) == []

        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
        other.execute("INSERT INTO dowork_tasks (id, queue, name, payload, status, run_at,"
                      " created_at, updated_at) VALUES ('c', 'q', 'job', x'7b7d', 'pending',"
                      " 0, 0, 0)")  # fmt: skip
        claiming = asyncio.create_task(store.claim(request))
        await asyncio.sleep(0.05)  # the loop runs on while the claim waits on its thread
        assert not claiming.done()
        other.execute("COMMIT")
        other.close()
        assert [r.id for r in await claiming] == ["c"]
        assert seen[2].startswith("dowork-sqlite")
        await store.wait("q", 0.0)  # a worker that waited for work
        await store.push([Record("d", "q", "job", b"{}", 0.0, 0.0)])
        assert [r.id for r in await store.claim(request)] == ["d"]
        assert seen[3] == "MainThread"
        await store.close()

    asyncio.run(body())


def test_a_claim_of_one_level_reads_its_records_as_a_claim_of_several(tmp_path: Path) -> None:
    """A queue of one priority level is read before its lease, others back from it: same records."""
    path = tmp_path / "q.db"

    async def push() -> None:
        store = SQLiteBackend(path)
        for queue in ("one", "two"):
            records = [Record(f"{queue}{i}", queue, "job", b"{}", float(i), 0.0) for i in range(3)]
            if queue == "two":  # another level, not due: the claim merges the levels
                records.append(Record("two-later", queue, "job", b"{}", 1e9, 0.0, priority=1))
            await store.push(records)
        await store.close()

    asyncio.run(push())
    conn = sqlite3.connect(path)
    for column, value, _ in _SET:
        conn.execute(f"UPDATE dowork_tasks SET {column} = ? WHERE id LIKE '%1'", (value,))
    conn.commit()
    conn.close()

    async def claim(queue: str) -> list[dict[str, object]]:
        store = SQLiteBackend(path)
        try:
            claimed = await store.claim(ClaimRequest(queue, 10.0, 10, 30.0, "w"))
        finally:
            await store.close()
        return [{**asdict(r), "id": r.id[len(queue) :], "queue": ""} for r in claimed]

    one, two = asyncio.run(claim("one")), asyncio.run(claim("two"))
    assert len(one) == 3
    assert one == two
    assert one[1]["crashes"] == 2
    assert one[1]["history"] == '{"n":1}\n'


def test_a_claim_reads_the_largest_attempts_and_crashes_the_table_keeps(tmp_path: Path) -> None:
    """The claim folds attempts, crashes and whether another column is set into one integer
    (``records.LEVEL_COLUMNS``): at the table's limits (10^9 each) they read back as stored,
    and a repeat crasher at ``alone_from`` = 10^9 is claimed alone, one below it is not."""
    path = tmp_path / "q.db"
    top = 1_000_000_000

    async def main() -> None:
        store = SQLiteBackend(path)
        try:
            await store.push(
                [
                    Record(f"t{i}", "q", "job", b"{}", float(i), 0.0, attempts=top - 1)
                    for i in range(4)
                ]
            )
            with sqlite3.connect(path) as conn:
                conn.execute("UPDATE dowork_tasks SET crashes = ? WHERE id = 't1'", (top - 1,))
                conn.execute("UPDATE dowork_tasks SET crashes = ? WHERE id = 't3'", (top,))
            request = ClaimRequest("q", 10.0, 10, 30.0, "w", alone_from=top)
            first = await store.claim(request)
            assert [(r.id, r.attempts, r.crashes) for r in first] == [
                ("t0", top, 0), ("t1", top, top - 1), ("t2", top, 0),
            ]  # fmt: skip
            (alone,) = await store.claim(request)
            assert (alone.id, alone.attempts, alone.crashes) == ("t3", top, top)
        finally:
            await store.close()

    asyncio.run(main())
