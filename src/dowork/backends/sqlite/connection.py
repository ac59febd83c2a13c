"""The SQLite store's one connection to its file, and the one thread every call runs on.

``SQLiteFile`` opens the file (created with mode 0600 whatever the umask, since task arguments
and results may hold personal data; SQLite gives its ``-wal`` and ``-shm`` files the same
mode), switches it to WAL, installs the schema, and runs every call on one dedicated thread
that holds the connection (``run``, ``call``), turning ``sqlite3`` errors into dowork's:
``BackendBusy`` past the busy timeout, ``BackendFull``, ``DuplicateTask``, or a
``BackendError`` or ``BackendUnavailable`` that names the path and says what to fix. It also
notices the file deleted or replaced under a running worker (``check``). ``transaction`` is
the ``BEGIN IMMEDIATE`` block every write runs in: one writer at a time across processes,
readers never blocked.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import (
    BackendBusy,
    BackendError,
    BackendFull,
    BackendUnavailable,
    DuplicateTask,
    StoreLost,
)
from . import schema
from .rows import CLAIMED_OK, claim_test
from .thread import CallThread

__all__ = ["SQLiteFile", "transaction"]

T = TypeVar("T")


def transaction(conn: sqlite3.Connection) -> _Transaction:
    """A ``BEGIN IMMEDIATE`` transaction, committed at the end or rolled back on any error.

    The COMMIT too: one refused as busy (a reader's lock on a file not in WAL mode, past the
    busy timeout) leaves the transaction open, which would fail every later BEGIN and commit
    this write with the next one after its caller was told nothing was stored.
    """
    return _Transaction(conn)


class _Transaction:
    """``transaction``'s context manager.

    A class: a generator's (``contextlib``) costs about 10k instructions a use, as much as
    the BEGIN and COMMIT themselves, and a worker's batch makes two.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        conn = self._conn
        if kind is None:
            try:
                conn.execute("COMMIT")
            except BaseException:
                _roll_back(conn)
                raise
        else:
            _roll_back(conn)


def _roll_back(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:  # SQLITE_FULL and some I/O errors roll back by themselves
        conn.execute("ROLLBACK")


class SQLiteFile:
    """One SQLite file, opened on first use, with its connection on a thread of its own.

    ``path``, ``busy_timeout``, ``synchronous`` and ``create`` are ``SQLiteBackend``'s
    arguments of the same names; ``conn`` is the connection once open (used on the thread
    only) and ``ok_sql`` the claim's readability test for this file (``rows.claim_test``).
    """

    def __init__(self, path: str, *, busy_timeout: float, synchronous: str, create: bool) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self.create = create
        self.conn: sqlite3.Connection | None = None
        self.ok_sql = CLAIMED_OK
        self._thread: CallThread | None = None
        self._open_lock = threading.Lock()
        #: Held by every use of the connection: on its thread, and from a caller's (``here``).
        self._using = threading.Lock()
        #: The connection's busy timeout is 0 (left so by ``try_here``; ``_conn`` restores it).
        self._busy_off = False
        #: The opened file's (st_dev, st_ino), to notice it deleted or replaced (``check``).
        self._identity: tuple[int, int] | None = None
        self._where = os.path.abspath(path)  # the path, whatever the cwd becomes

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the connection's thread (opening the file first if need be)."""
        thread = self._thread
        if thread is None:
            await self.open()
            thread = self._thread
            assert thread is not None
        try:
            return await thread.run(fn, args)
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: sqlite3.DatabaseError) -> BackendError:
        """The dowork error for an error of SQLite's (naming the path)."""
        if isinstance(exc, sqlite3.OperationalError):
            if "locked" in str(exc) or "busy" in str(exc):
                return BackendBusy(
                    f"{self.path}: {exc} (another process held it past the busy timeout of "
                    f"{self.busy_timeout:g}s)"
                )
            if "full" in str(exc):
                return BackendFull(f"{self.path}: {exc}; nothing of this write was stored")
        elif isinstance(exc, sqlite3.IntegrityError):
            if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                return DuplicateTask(f"{self.path}: {exc}")
            return BackendError(f"{self.path}: a value the table refuses ({exc})")
        return BackendError(f"{self.path}: {exc}")  # (and a corrupt or full file)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on the connection's thread, as ``run``."""
        thread = self._thread
        if thread is None:  # (else as ``run``, one coroutine less: a worker's every batch)
            return await self.run(self._apply, fn, args)
        try:
            return await thread.run(self._apply, (fn, args))
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc

    def _apply(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._using:
            conn = self._conn()
            assert conn is not None
            return fn(conn, *args)

    def _conn(self) -> sqlite3.Connection | None:
        """The connection with its busy timeout (the caller holds ``_using``)."""
        conn = self.conn
        if self._busy_off and conn is not None:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            self._busy_off = False
        return conn

    def here(self, fn: Callable[..., T], *args: Any) -> tuple[T] | None:
        """``(fn(conn, *args),)`` on the calling thread, as ``call``; None if not open.

        The connection is the same (one lock keeps its uses apart), so what one thread
        writes is what the others read, and no two of this process's writes wait on each
        other's SQLite lock. None, having done nothing, before the file is opened (``run``
        opens it) or once it is closed.
        """
        with self._using:
            conn = self._conn()
            if conn is None:
                return None
            try:
                return (fn(conn, *args),)
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from exc

    def try_here(self, fn: Callable[..., T], *args: Any) -> tuple[T] | None:
        """``here`` when it need not wait; else None, having done nothing.

        Not when another thread uses the connection, before the file is opened, when every
        commit syncs the file (``synchronous`` FULL or EXTRA), or when another process holds
        SQLite's write lock (the busy timeout is 0 meanwhile, and stays 0 until another use
        of the connection): an event loop's short write (``asubmit()``) then commits at once,
        without the hop to the connection's thread and back, and never waits for a lock.
        """
        if self.synchronous.upper() in ("FULL", "EXTRA") or not self._using.acquire(False):
            return None
        try:
            conn = self.conn
            if conn is None:
                return None
            if not self._busy_off:
                conn.execute("PRAGMA busy_timeout = 0")
                self._busy_off = True
            try:
                return (fn(conn, *args),)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise self._error(exc) from exc
                if conn.in_transaction:  # (``transaction`` rolls back itself; another fn may not)
                    conn.execute("ROLLBACK")
                return None  # nothing was stored
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from exc
        finally:
            self._using.release()

    async def open(self) -> None:
        """Open the file, switch it to WAL and create the table and indexes if missing.

        Raises:
            BackendUnavailable: the file cannot be opened (its directory is missing, it is
                read-only, or it does not exist and ``create`` is off).
            BackendError: it is not a SQLite database, or SQLite failed otherwise.
        """
        with self._open_lock:
            if self._thread is not None:
                return
            thread = CallThread("dowork-sqlite_0")
            try:
                thread.wait(self._connect)
            except BaseException as exc:
                thread.stop()
                if isinstance(exc, sqlite3.Error):
                    raise self._open_error(exc) from exc
                raise
            self._thread = thread

    async def close(self) -> None:
        """Close the connection and its thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        conn, self.conn = self.conn, None
        if conn is not None:
            await thread.run(self._close, (conn,))
        thread.stop()

    def _close(self, conn: sqlite3.Connection) -> None:
        with self._using:  # after a call from another thread that has it (``here``)
            conn.close()

    def check(self) -> None:
        """Raise ``StoreLost`` if the file at the path is not the one opened (``check_store``)."""
        opened = self._identity
        if opened is None or self._thread is None:
            return
        try:
            st = os.stat(self._where)
        except FileNotFoundError:
            what = "was deleted"
        except OSError:
            return  # cannot tell (e.g. a directory made unreadable): no verdict
        else:
            if (st.st_dev, st.st_ino) == opened:
                return
            what = "was replaced by another file"
        raise StoreLost(
            f"SQLite database {self.path} {what} while this process had it open; it keeps "
            "reading the old file, which no producer writes to: restart it to use the file "
            "now at the path"
        )

    def _in_memory(self) -> bool:
        return self.path == ":memory:" or self.path.startswith("file:")

    def _create_private(self) -> None:
        """Create the database file with mode 0600 (umask or not) if it does not exist yet."""
        if self._in_memory():
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return  # an existing file keeps its owner's mode; other errors are SQLite's to report
        try:
            os.fchmod(fd, 0o600)  # a umask such as 0o277 would have taken bits away
        finally:
            os.close(fd)

    def _connect(self) -> None:
        memory = self._in_memory()
        if self.create or memory:
            self._create_private()
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
        else:  # only an existing file: mode=rw never creates one
            target = urllib.parse.quote(os.path.abspath(self.path))
            conn = sqlite3.connect(
                f"file:{target}?mode=rw",
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                uri=True,
            )
        try:
            if not (self.create or memory):
                _require_tables(conn, self.path)
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            schema.install(conn)
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self.ok_sql = claim_test(conn)
        self._identity = self._file_identity()

    def _file_identity(self) -> tuple[int, int] | None:
        """The (device, inode) of the file at the path, or None (in memory, or missing)."""
        if self._in_memory():
            return None
        try:
            st = os.stat(self._where)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _open_error(self, exc: sqlite3.Error) -> BackendError:
        """A dowork error for a file SQLite cannot open, saying what to fix."""
        path, text = self.path, str(exc)
        folder = os.path.dirname(os.path.abspath(path))
        if "readonly" in text or "read-only" in text:
            return BackendUnavailable(
                f"SQLite database {path} is read-only ({text}): dowork writes to the file and "
                "to its directory (the -wal and -shm files); check their permissions"
            )
        if "not a database" in text:
            return BackendError(f"{path} is not a SQLite database ({text}): check the path")
        if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
            if not os.path.isdir(folder):
                why = f"its directory {folder} does not exist"
            elif os.path.isdir(path):
                why = "it is a directory"
            elif not self.create and not os.path.exists(path):
                why = "no such file (nothing was created); check the path"
            else:
                why = f"{text}; check the permissions of the file and of {folder}"
            return BackendUnavailable(f"cannot open SQLite database {path}: {why}")
        return BackendError(f"{path}: {text}")


def _require_tables(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a file without dowork's tables when only an existing store may be opened."""
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dowork_tasks'"
    ).fetchone():
        raise BackendUnavailable(
            f"{path} holds no dowork tasks (no dowork_tasks table): check the path"
        )
