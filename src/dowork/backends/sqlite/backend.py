"""``SQLiteBackend``: the SQLite store as users build it, assembled from its two sides.

Several processes on one machine can share one file: every write runs in a ``BEGIN
IMMEDIATE`` transaction (one writer at a time, readers never blocked), a busy timeout rides
out short lock waits, and partial indexes of waiting rows keep a claim O(log n) however many
finished rows the file holds (see ``schema`` and ``lanes``). Finished rows are deleted when
their retention passes, and the file is created with ``auto_vacuum=INCREMENTAL`` so freed
pages go back to the file system. The class holds the settings and one ``SQLiteFile`` (the
connection and its thread); its methods come from ``SQLiteStore`` (the worker side) and
``SQLiteAdmin`` (the operator side).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from .._protocol import Wakeups
from .admin import SQLiteAdmin
from .connection import SQLiteFile
from .store import SQLiteStore
from .wake import WakeChannel

__all__ = ["SQLiteBackend"]

T = TypeVar("T")


class SQLiteBackend(SQLiteStore, SQLiteAdmin):
    """A task store in one SQLite file, shareable by the processes of one machine.

    Args:
        path: the database file (created if missing).
        keep_finished: default seconds a finished task's record (status, result, error) is
            kept for lookups by id; ``0`` deletes it at once.
        busy_timeout: seconds a writer waits for another process's transaction.
        poll_interval: how often an idle worker looks for work written by other processes,
            should their wake-up not reach it (work pushed in this process wakes it at once,
            and other processes' pushes through a datagram: see ``sqlite.wake``).
        synchronous: SQLite's ``synchronous`` pragma; ``NORMAL`` (default) survives process
            crashes, ``FULL`` also survives power loss at some cost per write.
        keep_dead: seconds a dead-lettered record is kept (``None``: ``keep_finished``).
        create: create the file and dowork's tables when missing; ``False`` (tools that only
            look, such as ``dowork status``) raises ``BackendUnavailable`` instead, so a
            mistyped path creates nothing.
        wake: let pushes wake the idle workers of other processes through a datagram socket
            (see ``sqlite.wake``); ``False`` leaves them to ``poll_interval``.

    A file that cannot be opened (a missing directory, a read-only file, not a database)
    raises ``BackendUnavailable`` or ``BackendError`` naming the path, never a bare
    ``sqlite3`` error.
    """

    durable = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        keep_finished: float = 7 * 24 * 3600.0,
        busy_timeout: float = 10.0,
        poll_interval: float = 0.05,
        synchronous: str = "NORMAL",
        keep_dead: float | None = None,
        create: bool = True,
        wake: bool = True,
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self._file = SQLiteFile(
            os.fspath(path),
            busy_timeout=busy_timeout,
            synchronous=synchronous.upper(),
            create=create,
        )
        self.keep_finished = keep_finished
        self.keep_dead = keep_dead
        self.poll_interval = poll_interval
        self._wakeups = Wakeups()
        self._wake = WakeChannel(os.fspath(path), enabled=wake)

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.path!r})"

    # The connection's settings live on the file object; these keep them readable (and
    # writable before the file is opened) where they always were.

    @property
    def path(self) -> str:
        """The database file's path, as given."""
        return self._file.path

    @path.setter
    def path(self, value: str) -> None:
        self._file.path = value

    @property
    def busy_timeout(self) -> float:
        """Seconds a writer waits for another process's transaction."""
        return self._file.busy_timeout

    @busy_timeout.setter
    def busy_timeout(self, value: float) -> None:
        self._file.busy_timeout = value

    @property
    def synchronous(self) -> str:
        """SQLite's ``synchronous`` pragma, upper case."""
        return self._file.synchronous

    @synchronous.setter
    def synchronous(self, value: str) -> None:
        self._file.synchronous = value

    @property
    def create(self) -> bool:
        """Whether opening creates a missing file and dowork's tables."""
        return self._file.create

    @create.setter
    def create(self, value: bool) -> None:
        self._file.create = value

    @property
    def _conn(self) -> sqlite3.Connection | None:
        """The connection once open (for tests that trace it; use it on its thread only)."""
        return self._file.conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the connection's thread (see ``SQLiteFile.run``)."""
        return await self._file.run(fn, *args)

    async def open(self) -> None:
        """Open the file, switch it to WAL and create the table and indexes if missing.

        Raises:
            BackendUnavailable: the file cannot be opened (its directory is missing, it is
                read-only, or it does not exist and ``create`` is off).
            BackendError: it is not a SQLite database, or SQLite failed otherwise.
        """
        await self._file.open()

    async def close(self) -> None:
        """Close the connection and its thread, and stop receiving wake-ups."""
        self._wake.close()
        await self._file.close()
