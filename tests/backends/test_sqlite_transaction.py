"""The SQLite store's ``transaction``: committed at the end, or rolled back, COMMIT included.

A COMMIT SQLite refuses as busy leaves the transaction open; the block must roll it back,
or the connection's next BEGIN fails and the refused write is committed with a later one.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dowork.backends.sqlite.connection import transaction


def test_a_commit_refused_as_busy_is_rolled_back(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    ours = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    ours.execute("CREATE TABLE t (x INTEGER)")  # rollback journal: a reader blocks COMMIT
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (0,)  # holds SHARED
    with pytest.raises(sqlite3.OperationalError, match="locked"), transaction(ours):
        ours.execute("INSERT INTO t VALUES (1)")  # succeeds; only the COMMIT waits
    assert not ours.in_transaction
    reader.execute("COMMIT")

    with transaction(ours):  # the connection writes again ...
        ours.execute("INSERT INTO t VALUES (2)")
    assert reader.execute("SELECT x FROM t").fetchall() == [(2,)]  # ... without the refused row
    ours.close()
    reader.close()


def test_an_error_in_the_block_rolls_back_and_a_clean_one_commits(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")

    def fails() -> None:
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")
            raise ValueError("the caller's")

    with pytest.raises(ValueError, match="the caller's"):
        fails()
    assert not conn.in_transaction
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES (2)")
    assert not conn.in_transaction
    assert conn.execute("SELECT x FROM t").fetchall() == [(2,)]
    conn.close()
