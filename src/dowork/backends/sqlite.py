"""SQLite backend: the embedded durable store (stdlib ``sqlite3``, WAL, no server).

Several processes on one machine can share one file: every claim runs in a ``BEGIN
IMMEDIATE`` transaction (one writer at a time, readers never blocked), a busy timeout rides
out short lock waits, and a partial index on ``(queue, run_at)`` of waiting rows keeps a claim
O(log n) however many finished rows the file holds; indexes on ``(queue, created_at)`` and
``(queue, status, created_at)`` serve ``queues()``, ``list()`` and ``counts()``. Finished rows
are deleted when their retention passes, and the file is created with
``auto_vacuum=INCREMENTAL`` so freed pages go back to the file system. Every call runs on one
dedicated thread holding the connection. A new file is created with mode 0600 whatever the
umask (SQLite gives its ``-wal`` and ``-shm`` files the database file's mode), since task
arguments and results may hold personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import BackendBusy, BackendError, BackendFull, DuplicateTask
from ._protocol import (
    REQUEUABLE,
    STATS_MINUTES,
    WHILE_UNFINISHED,
    Outcome,
    Record,
    Settlement,
    Wakeups,
    WorkerBeat,
    check_page,
    minute_of,
    retention,
    status_filter,
)

__all__ = ["SQLiteBackend"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dowork_tasks (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    payload BLOB NOT NULL,
    options TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_at REAL NOT NULL,
    lease_until REAL,
    owner TEXT,
    crashes INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    reason TEXT,
    result BLOB,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    expires_at REAL,
    progress TEXT,
    history TEXT
);
CREATE INDEX IF NOT EXISTS dowork_due ON dowork_tasks (queue, run_at)
    WHERE status IN ('pending', 'scheduled', 'retrying');
CREATE INDEX IF NOT EXISTS dowork_leases ON dowork_tasks (queue, lease_until)
    WHERE status = 'running';
CREATE INDEX IF NOT EXISTS dowork_expiry ON dowork_tasks (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS dowork_created ON dowork_tasks (queue, created_at);
CREATE INDEX IF NOT EXISTS dowork_listing ON dowork_tasks (queue, status, created_at);
CREATE TABLE IF NOT EXISTS dowork_idempotency (
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    task_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (queue, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dowork_workers (
    id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    beat TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dowork_stats (
    queue TEXT NOT NULL,
    minute INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (queue, minute, outcome)
) WITHOUT ROWID;
"""

_COLUMNS = (
    "id, queue, name, payload, run_at, created_at, status, options, attempts, lease_until, "
    "owner, crashes, cancel_requested, error, reason, result, updated_at, finished_at, progress,"
    " history"
)
_WAITING_SQL = "status IN ('pending', 'scheduled', 'retrying')"
_FINAL = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.FAILED: "failed",
    Outcome.CANCELLED: "cancelled",
    Outcome.DEAD: "dead",
}


def _record(row: tuple[Any, ...]) -> Record:
    return Record(
        id=row[0],
        queue=row[1],
        name=row[2],
        payload=bytes(row[3]),
        run_at=row[4],
        created_at=row[5],
        status=row[6],
        options=row[7],
        attempts=row[8],
        lease_until=row[9],
        owner=row[10],
        crashes=row[11],
        cancel_requested=bool(row[12]),
        error=row[13],
        reason=row[14],
        result=None if row[15] is None else bytes(row[15]),
        updated_at=row[16],
        finished_at=row[17],
        progress=row[18],
        history=row[19] or None,
    )


#: Columns added after the first release, created in files made by an older dowork.
_ADDED_COLUMNS = {"progress": "TEXT", "history": "TEXT"}


def _migrate(conn: sqlite3.Connection) -> None:
    """Add the columns an older file lacks (each ``ADD COLUMN`` is cheap: no table rewrite)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(dowork_tasks)")}
    for column, kind in _ADDED_COLUMNS.items():
        if column not in have:
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it
                conn.execute(f"ALTER TABLE dowork_tasks ADD COLUMN {column} {kind}")


def _alone_or_rest(due: Sequence[tuple[str, int]], alone_from: int | None) -> list[str]:
    """The ids to claim from ``(id, crashes)`` in queue order (see ``Backend.claim``).

    A repeat crasher (``crashes >= alone_from``) alone, or the records before the first one.
    """
    if alone_from is None:
        return [task_id for task_id, _ in due]
    if due and due[0][1] >= alone_from:
        return [due[0][0]]
    ids = []
    for task_id, crashes in due:
        if crashes >= alone_from:
            break
        ids.append(task_id)
    return ids


class SQLiteBackend:
    """A task store in one SQLite file, shareable by the processes of one machine.

    Args:
        path: the database file (created if missing).
        keep_finished: default seconds a finished task's record (status, result, error) is
            kept for lookups by id; ``0`` deletes it at once.
        busy_timeout: seconds a writer waits for another process's transaction.
        poll_interval: how often an idle worker looks for work written by other processes
            (work submitted in the same process wakes it at once).
        synchronous: SQLite's ``synchronous`` pragma; ``NORMAL`` (default) survives process
            crashes, ``FULL`` also survives power loss at some cost per write.
        keep_dead: seconds a dead-lettered record is kept (``None``: ``keep_finished``).
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
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = os.fspath(path)
        self.keep_finished = keep_finished
        self.keep_dead = keep_dead
        self.busy_timeout = busy_timeout
        self.poll_interval = poll_interval
        self.synchronous = synchronous.upper()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._open_lock = threading.Lock()
        self._wakeups = Wakeups()

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.path!r})"

    # -- plumbing --------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            await self.open()
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise BackendBusy(
                    f"{self.path}: {exc} (another process held it past the busy timeout of "
                    f"{self.busy_timeout:g}s)"
                ) from exc
            if "full" in str(exc):
                raise BackendFull(f"{self.path}: {exc}; nothing of this write was stored") from exc
            raise BackendError(f"{self.path}: {exc}") from exc
        except sqlite3.IntegrityError as exc:
            raise DuplicateTask(f"{self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # a corrupt or full file
            raise BackendError(f"{self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # SQLITE_FULL and some I/O errors roll back by themselves
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _retention(self, outcome: Outcome | None, keep: float | None) -> float:
        """Seconds to keep a finished record (see ``retention``)."""
        return retention(outcome, keep, self.keep_finished, self.keep_dead)

    def _create_private(self) -> None:
        """Create the database file with mode 0600 (umask or not) if it does not exist yet."""
        if self.path == ":memory:" or self.path.startswith("file:"):
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
        self._create_private()
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        with contextlib.suppress(sqlite3.OperationalError):  # another process made it first
            conn.executescript(_SCHEMA)
        _migrate(conn)
        self._conn = conn

    async def open(self) -> None:
        """Open the file, switch it to WAL and create the table and indexes if missing."""
        with self._open_lock:
            if self._executor is not None:
                return
            executor = ThreadPoolExecutor(1, thread_name_prefix="dowork-sqlite")
            try:
                executor.submit(self._connect).result()
            except BaseException:
                executor.shutdown(wait=False)
                raise
            self._executor = executor

    async def close(self) -> None:
        """Close the connection and its thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)

    # -- the protocol ----------------------------------------------------------------------

    async def push(self, records: Sequence[Record]) -> dict[str, str]:
        """Insert records in one transaction (those whose idempotency key is free)."""
        if not records:
            return {}
        same = await self._run(self._push, records)
        self._wakeups.notify({r.queue for r in records if r.id not in same})
        return same

    def _push(self, records: Sequence[Record]) -> dict[str, str]:
        same: dict[str, str] = {}
        with self._tx() as conn:
            if any(r.idempotency_key is not None for r in records):
                records = self._claim_keys(conn, records, same)
            rows = [
                (
                    r.id, r.queue, r.name, r.payload, r.options, r.status, r.attempts, r.run_at,
                    r.created_at, r.created_at,
                )
                for r in records
            ]  # fmt: skip
            conn.executemany(
                "INSERT INTO dowork_tasks (id, queue, name, payload, options, status, attempts,"
                " run_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return same

    @staticmethod
    def _claim_keys(
        conn: sqlite3.Connection, records: Sequence[Record], same: dict[str, str]
    ) -> list[Record]:
        """Take the free idempotency keys; return the records to store, fill ``same``."""
        fresh: list[Record] = []
        for r in records:
            key = r.idempotency_key
            if key is not None:
                held = conn.execute(
                    "SELECT task_id FROM dowork_idempotency i"
                    " WHERE queue = ? AND key = ? AND expires_at > ? AND (expires_at < ?"
                    " OR EXISTS (SELECT 1 FROM dowork_tasks t WHERE t.id = i.task_id"
                    f" AND (t.{_WAITING_SQL} OR t.status = 'running')))",
                    (r.queue, key, r.created_at, WHILE_UNFINISHED),
                ).fetchone()
                if held is not None:
                    same[r.id] = held[0]
                    continue
                conn.execute(
                    "INSERT OR REPLACE INTO dowork_idempotency (queue, key, task_id, expires_at)"
                    " VALUES (?, ?, ?, ?)",
                    (r.queue, key, r.id, r.idempotency_until or r.created_at),
                )
            fresh.append(r)
        return fresh

    async def claim(
        self,
        queue: str,
        now: float,
        limit: int,
        lease: float,
        owner: str,
        max_running: int | None = None,
        alone_from: int | None = None,
    ) -> list[Record]:
        """Lease up to ``limit`` due records in one transaction."""
        if limit <= 0:
            return []
        return await self._run(
            self._claim, queue, now, limit, lease, owner, max_running, alone_from
        )

    def _claim(
        self,
        queue: str,
        now: float,
        limit: int,
        lease: float,
        owner: str,
        max_running: int | None,
        alone_from: int | None,
    ) -> list[Record]:
        with self._tx() as conn:
            if max_running is not None:
                (running,) = conn.execute(
                    "SELECT COUNT(*) FROM dowork_tasks WHERE queue = ? AND status = 'running'",
                    (queue,),
                ).fetchone()
                limit = min(limit, max_running - running)
                if limit <= 0:
                    return []
            due = conn.execute(
                f"SELECT id, crashes FROM dowork_tasks WHERE queue = ? AND {_WAITING_SQL}"
                f" AND run_at <= ? ORDER BY run_at, rowid LIMIT ?",
                (queue, now, limit),
            ).fetchall()
            ids = _alone_or_rest(due, alone_from)
            if not ids:
                return []
            rows = conn.execute(
                f"UPDATE dowork_tasks SET status = 'running', attempts = attempts + 1,"
                f" lease_until = ?, owner = ?, updated_at = ?"
                f" WHERE id IN ({','.join('?' * len(ids))}) RETURNING {_COLUMNS}",
                (now + lease, owner, now, *ids),
            ).fetchall()
        records = [_record(row) for row in rows]
        records.sort(key=lambda r: (r.run_at, r.created_at))
        return records

    async def settle(self, settlements: Sequence[Settlement]) -> list[str]:
        """Write outcomes in one transaction; refuse those whose lease token is stale."""
        if not settlements:
            return []
        return await self._run(self._settle, settlements)

    def _settle(self, settlements: Sequence[Settlement]) -> list[str]:
        refused: list[str] = []
        with self._tx() as conn:
            for s in settlements:
                line = None if s.attempt is None else s.attempt + "\n"
                if s.outcome is Outcome.RETRY:
                    cur = conn.execute(
                        "UPDATE dowork_tasks SET status = 'retrying', run_at = ?, error = ?,"
                        " lease_until = NULL, owner = NULL, updated_at = ?,"
                        " payload = COALESCE(?, payload),"
                        " history = COALESCE(history || ?, ?, history)"
                        " WHERE id = ? AND status = 'running' AND attempts = ?",
                        (s.run_at, s.error, s.now, s.payload, line, line, s.id, s.token),
                    )
                else:
                    keep = self._retention(s.outcome, s.keep)
                    if keep <= 0:
                        cur = conn.execute(
                            "DELETE FROM dowork_tasks"
                            " WHERE id = ? AND status = 'running' AND attempts = ?",
                            (s.id, s.token),
                        )
                    else:
                        cur = conn.execute(
                            "UPDATE dowork_tasks SET status = ?, result = ?, error = ?,"
                            " reason = ?, lease_until = NULL, owner = NULL, updated_at = ?,"
                            " finished_at = ?, expires_at = ?,"
                            " history = COALESCE(history || ?, ?, history)"
                            " WHERE id = ? AND status = 'running' AND attempts = ?",
                            (
                                _FINAL[s.outcome], s.result, s.error, s.reason, s.now, s.now,
                                s.now + keep, line, line, s.id, s.token,
                            ),
                        )  # fmt: skip
                if cur.rowcount == 0:
                    refused.append(s.id)
        return refused

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], now: float, lease: float
    ) -> tuple[list[str], list[str]]:
        """Extend leases; report the lost ones and those asked to cancel."""
        if not leases:
            return [], []
        return await self._run(self._heartbeat, leases, now, lease)

    def _heartbeat(
        self, leases: Sequence[tuple[str, int]], now: float, lease: float
    ) -> tuple[list[str], list[str]]:
        lost: list[str] = []
        cancel: list[str] = []
        with self._tx() as conn:
            for task_id, token in leases:
                row = conn.execute(
                    "UPDATE dowork_tasks SET lease_until = ? WHERE id = ? AND status = 'running'"
                    " AND attempts = ? RETURNING cancel_requested",
                    (now + lease, task_id, token),
                ).fetchone()
                if row is None:
                    lost.append(task_id)
                elif row[0]:
                    cancel.append(task_id)
        return lost, cancel

    async def release(self, ids: Sequence[str], now: float) -> list[str]:
        """Make later-due waiting records due now."""
        if not ids:
            return []
        released = await self._run(self._release, list(ids), now)
        self._wakeups.notify({queue for _, queue in released})
        return [task_id for task_id, _ in released]

    def _release(self, ids: list[str], now: float) -> list[tuple[str, str]]:
        released: list[tuple[str, str]] = []
        with self._tx() as conn:
            for task_id in ids:
                row = conn.execute(
                    "UPDATE dowork_tasks SET run_at = ?, updated_at = ?,"
                    " status = CASE status WHEN 'scheduled' THEN 'pending' ELSE status END"
                    f" WHERE id = ? AND {_WAITING_SQL} AND run_at > ? RETURNING queue",
                    (now, now, task_id, now),
                ).fetchone()
                if row is not None:
                    released.append((task_id, row[0]))
        return released

    async def progress(self, updates: Sequence[tuple[str, int, str]]) -> None:
        """Store reported progress for records still on the reporting attempt."""
        if updates:
            await self._run(self._progress, updates)

    def _progress(self, updates: Sequence[tuple[str, int, str]]) -> None:
        with self._tx() as conn:
            conn.executemany(
                "UPDATE dowork_tasks SET progress = ? WHERE id = ? AND attempts = ?",
                [(text, task_id, token) for task_id, token, text in updates],
            )

    async def reap(self, queue: str, now: float, crash_budget: int) -> tuple[int, int]:
        """Requeue expired leases; dead-letter tasks that crashed their workers too often."""
        return await self._run(self._reap, queue, now, crash_budget)

    def _reap(self, queue: str, now: float, crash_budget: int) -> tuple[int, int]:
        with self._tx() as conn:
            dead = conn.execute(
                "UPDATE dowork_tasks SET status = 'dead', reason = 'crashed_worker',"
                " error = 'the worker running it stopped renewing its lease ' || (crashes + 1)"
                " || ' times', crashes = crashes + 1, lease_until = NULL, owner = NULL,"
                " updated_at = ?, finished_at = ?, expires_at = ?"
                " WHERE queue = ? AND status = 'running' AND lease_until < ?"
                " AND crashes + 1 >= ?",
                (now, now, now + self._retention(Outcome.DEAD, None), queue, now, crash_budget),
            ).rowcount
            # run_at is kept: an orphan goes back to its place at the head of the queue, so
            # it runs again within about two leases however long the backlog behind it.
            requeued = conn.execute(
                "UPDATE dowork_tasks SET status = 'retrying', crashes = crashes + 1,"
                " lease_until = NULL, owner = NULL, updated_at = ?"
                " WHERE queue = ? AND status = 'running' AND lease_until < ?",
                (now, queue, now),
            ).rowcount
        return requeued, dead

    async def get(self, ids: Sequence[str]) -> list[Record]:
        """Fetch records by id."""
        if not ids:
            return []
        return await self._run(self._get, list(ids))

    def _get(self, ids: list[str]) -> list[Record]:
        conn = self._conn
        assert conn is not None
        found: list[Record] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM dowork_tasks WHERE id IN ({marks})", chunk
            ).fetchall()
            found.extend(_record(row) for row in rows)
        return found

    async def cancel(self, task_id: str, now: float) -> str:
        """Cancel a waiting task, or flag a running one for its worker."""
        return await self._run(self._cancel, task_id, now)

    def _cancel(self, task_id: str, now: float) -> str:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT status FROM dowork_tasks WHERE id = ?", (task_id,)
            ).fetchone()
            if row is None:
                return "unknown"
            status = row[0]
            if status in ("pending", "scheduled", "retrying"):
                conn.execute(
                    "UPDATE dowork_tasks SET status = 'cancelled', error = 'cancelled',"
                    " updated_at = ?, finished_at = ?, expires_at = ? WHERE id = ?",
                    (now, now, now + self.keep_finished, task_id),
                )
                return "cancelled"
            if status == "running":
                conn.execute(
                    "UPDATE dowork_tasks SET cancel_requested = 1 WHERE id = ?", (task_id,)
                )
                return "requested"
            return "finished"

    async def next_due(self, queue: str) -> float | None:
        """Earliest run time of the queue's waiting records."""
        return await self._run(self._next_due, queue)

    def _next_due(self, queue: str) -> float | None:
        conn = self._conn
        assert conn is not None
        row = conn.execute(
            f"SELECT MIN(run_at) FROM dowork_tasks WHERE queue = ? AND {_WAITING_SQL}", (queue,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def counts(self, queue: str) -> dict[str, int]:
        """Records per status."""
        return await self._run(self._counts, queue)

    def _counts(self, queue: str) -> dict[str, int]:
        conn = self._conn
        assert conn is not None
        rows = conn.execute(
            "SELECT status, COUNT(*) FROM dowork_tasks WHERE queue = ? GROUP BY status", (queue,)
        ).fetchall()
        return {status: count for status, count in rows}

    async def wait(self, queue: str, timeout: float) -> None:
        """Wait for a push from this process, or ``min(timeout, poll_interval)`` seconds."""
        await self._wakeups.wait(queue, min(timeout, self.poll_interval))

    async def purge_finished(self, now: float) -> int:
        """Delete finished records past their retention and return freed pages to the OS."""
        return await self._run(self._purge, now)

    def _purge(self, now: float) -> int:
        with self._tx() as conn:
            deleted = conn.execute(
                "DELETE FROM dowork_tasks WHERE expires_at IS NOT NULL AND expires_at < ?", (now,)
            ).rowcount
            conn.execute("DELETE FROM dowork_idempotency WHERE expires_at < ?", (now,))
            conn.execute(  # unique keys whose task finished (or is gone)
                "DELETE FROM dowork_idempotency WHERE expires_at = ? AND NOT EXISTS (SELECT 1"
                " FROM dowork_tasks t WHERE t.id = dowork_idempotency.task_id"
                f" AND (t.{_WAITING_SQL} OR t.status = 'running'))",
                (WHILE_UNFINISHED,),
            )
        if deleted and self._conn is not None:
            self._conn.execute("PRAGMA incremental_vacuum")
        return deleted

    async def queues(self) -> list[str]:
        """Names of the queues with records, sorted (one index probe per queue)."""
        return await self._run(self._queues)

    def _queues(self) -> list[str]:
        conn = self._conn
        assert conn is not None
        rows = conn.execute(  # a loose index scan: jump from one queue name to the next
            "WITH RECURSIVE names(queue) AS ("
            " SELECT MIN(queue) FROM dowork_tasks"
            " UNION ALL SELECT (SELECT MIN(queue) FROM dowork_tasks WHERE queue > names.queue)"
            " FROM names WHERE names.queue IS NOT NULL"
            ") SELECT queue FROM names WHERE queue IS NOT NULL"
        ).fetchall()
        return [row[0] for row in rows]

    async def requeue(self, ids: Sequence[str], now: float) -> list[str]:
        """Send failed, cancelled and dead records back to pending in one transaction."""
        if not ids:
            return []
        requeued, queues = await self._run(self._requeue, list(dict.fromkeys(ids)), now)
        self._wakeups.notify(queues)
        return requeued

    def _requeue(self, ids: list[str], now: float) -> tuple[list[str], set[str]]:
        done: dict[str, str] = {}
        finished = ",".join(f"'{status}'" for status in REQUEUABLE)
        with self._tx() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    "UPDATE dowork_tasks SET status = 'pending', run_at = ?, updated_at = ?,"
                    " error = NULL, reason = NULL, result = NULL, crashes = 0,"
                    " cancel_requested = 0, lease_until = NULL, owner = NULL,"
                    " finished_at = NULL, expires_at = NULL"
                    f" WHERE id IN ({marks}) AND status IN ({finished}) RETURNING id, queue",
                    (now, now, *chunk),
                ).fetchall()
                done.update(rows)
        return [i for i in ids if i in done], set(done.values())

    async def purge(self, queue: str, statuses: Sequence[str] | None = None) -> int:
        """Delete the queue's records in ``statuses`` (all but running ones for None)."""
        wanted = status_filter(statuses)
        if wanted == ():
            return 0
        return await self._run(self._purge_queue, queue, wanted)

    def _purge_queue(self, queue: str, wanted: tuple[str, ...] | None) -> int:
        args: tuple[str, ...] = ()
        if wanted is None:
            where = "status != 'running'"
        else:
            where, args = f"status IN ({','.join('?' * len(wanted))})", wanted
        with self._tx() as conn:
            deleted = conn.execute(
                f"DELETE FROM dowork_tasks WHERE queue = ? AND {where}", (queue, *args)
            ).rowcount
        if deleted and self._conn is not None:
            self._conn.execute("PRAGMA incremental_vacuum")
        return deleted

    async def beat(
        self,
        worker: WorkerBeat,
        now: float,
        ttl: float,
        finished: Mapping[int, Mapping[str, int]] | None = None,
    ) -> None:
        """Store the worker's beat and add its outcome counts, in one transaction."""
        rows = [
            (worker.queue, int(minute), outcome, n)
            for minute, by_outcome in (finished or {}).items()
            for outcome, n in by_outcome.items()
        ]
        await self._run(self._beat, worker, now, ttl, rows)

    def _beat(
        self, worker: WorkerBeat, now: float, ttl: float, rows: list[tuple[str, int, str, int]]
    ) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM dowork_workers WHERE expires_at <= ?", (now,))
            if ttl > 0:
                conn.execute(
                    "INSERT OR REPLACE INTO dowork_workers (id, expires_at, beat) VALUES (?, ?, ?)",
                    (worker.id, now + ttl, worker.to_json()),
                )
            else:
                conn.execute("DELETE FROM dowork_workers WHERE id = ?", (worker.id,))
            if rows:
                conn.executemany(
                    "INSERT INTO dowork_stats (queue, minute, outcome, n) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (queue, minute, outcome) DO UPDATE SET n = n + excluded.n",
                    rows,
                )
                conn.execute(
                    "DELETE FROM dowork_stats WHERE queue = ? AND minute < ?",
                    (worker.queue, minute_of(now) - STATS_MINUTES * 60),
                )

    async def workers(self, now: float) -> list[WorkerBeat]:
        """The workers whose beat has not expired."""
        return await self._run(self._workers, now)

    def _workers(self, now: float) -> list[WorkerBeat]:
        conn = self._conn
        assert conn is not None
        rows = conn.execute(
            "SELECT beat FROM dowork_workers WHERE expires_at > ? ORDER BY id", (now,)
        ).fetchall()
        return [WorkerBeat.from_json(row[0]) for row in rows]

    async def stats(self, queue: str, since: float) -> dict[int, dict[str, int]]:
        """Per-minute outcome counts of the queue from ``since`` on."""
        return await self._run(self._stats, queue, minute_of(since))

    def _stats(self, queue: str, first: int) -> dict[int, dict[str, int]]:
        conn = self._conn
        assert conn is not None
        out: dict[int, dict[str, int]] = {}
        for minute, outcome, n in conn.execute(
            "SELECT minute, outcome, n FROM dowork_stats WHERE queue = ? AND minute >= ?"
            " ORDER BY minute",
            (queue, first),
        ):
            out.setdefault(int(minute), {})[outcome] = int(n)
        return out

    def _list(
        self,
        queue: str,
        wanted: tuple[str, ...] | None,
        limit: int,
        offset: int,
        newest_first: bool,
    ) -> list[Record]:
        conn = self._conn
        assert conn is not None
        where = ""
        if wanted is not None:
            where = f" AND status IN ({','.join('?' * len(wanted))})"
        order = "DESC" if newest_first else "ASC"
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM dowork_tasks WHERE queue = ?{where}"
            f" ORDER BY created_at {order}, rowid {order} LIMIT ? OFFSET ?",
            (queue, *(wanted or ()), limit, offset),
        ).fetchall()
        return [_record(row) for row in rows]

    # ``list`` comes last: a method of that name hides the builtin in annotations below it.
    async def list(
        self,
        queue: str,
        statuses: Sequence[str] | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[Record]:
        """One page of the queue's records by ``created_at``, read through an index."""
        check_page(limit, offset)
        wanted = status_filter(statuses)
        if limit == 0 or wanted == ():
            return []
        return await self._run(self._list, queue, wanted, limit, offset, newest_first)
