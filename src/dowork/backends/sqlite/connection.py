"""The SQLite store's connection: the ``BEGIN IMMEDIATE`` transaction every write runs in.

One writer at a time across processes, readers never blocked; an error rolls back.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

__all__ = ["transaction"]


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A ``BEGIN IMMEDIATE`` transaction, committed at the end or rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # SQLITE_FULL and some I/O errors roll back by themselves
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
