"""A SQLite claim gives back every field of its records, read back lean or whole.

A claim reads back half the columns of a record on its first attempt and all of them of
one whose other columns are set (``records.LEASED_COLUMNS``): each such column, set alone,
must come back with its value, in a batch beside fresh records, in the claim's order.
"""

from __future__ import annotations

import asyncio
import sqlite3
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
