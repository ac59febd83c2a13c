"""SQLite backend: the embedded durable store (stdlib ``sqlite3``, WAL, no server).

Several processes on one machine can share one file: every claim runs in a ``BEGIN
IMMEDIATE`` transaction (one writer at a time, readers never blocked), a busy timeout rides
out short lock waits, and partial indexes of waiting rows keep a claim O(log n) however many
finished rows the file holds: ``(queue, priority, run_at)`` of the rows without a concurrency
key (an index range per priority level in use), ``(queue, concurrency_key, priority, run_at)``
of those with one (a range per key and level, so a key's turn reads only its most urgent rows
however big its backlog), with the turn each key was last served in kept in a small table.
Indexes on ``(queue, created_at)`` and ``(queue, status, created_at)`` serve ``queues()``,
``list()`` and ``counts()``. Finished rows are deleted when their retention passes, and the
file is created with ``auto_vacuum=INCREMENTAL`` so freed pages go back to the file system.
Every call runs on one dedicated thread holding the connection. A new file is created with
mode 0600 whatever the umask (SQLite gives its ``-wal`` and ``-shm`` files the database
file's mode), since task arguments and results may hold personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ...errors import (
    BackendBusy,
    BackendError,
    BackendFull,
    BackendUnavailable,
    DuplicateTask,
    StoreLost,
)
from .._protocol import (
    LEASED,
    PRIORITY_AGING,
    REQUEUABLE,
    STATS_MINUTES,
    WHILE_UNFINISHED,
    Outcome,
    Record,
    Settlement,
    Wakeups,
    WorkerBeat,
    charge,
    check_page,
    late_applies,
    minute_of,
    retention,
    status_filter,
    uncharge,
)
from . import claims, records, schema
from .connection import transaction
from .lanes import NEVER_DUE_KEYED_SQL, NEVER_DUE_SQL, NEXT_DUE_SQL
from .rows import BAD_VALUE, CLAIMED_OK, bury, claim_test
from .schema import HELD_SQL, WAITING_SQL

__all__ = ["SQLiteBackend"]

T = TypeVar("T")


_FINAL = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.FAILED: "failed",
    Outcome.CANCELLED: "cancelled",
    Outcome.DEAD: "dead",
}


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
        create: create the file and dowork's tables when missing; ``False`` (tools that only
            look, such as ``dowork status``) raises ``BackendUnavailable`` instead, so a
            mistyped path creates nothing.

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
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = os.fspath(path)
        self.keep_finished = keep_finished
        self.keep_dead = keep_dead
        self.busy_timeout = busy_timeout
        self.poll_interval = poll_interval
        self.synchronous = synchronous.upper()
        self.create = create
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._open_lock = threading.Lock()
        self._wakeups = Wakeups()
        #: The opened file's (st_dev, st_ino), to notice it deleted or replaced (check_store).
        self._identity: tuple[int, int] | None = None
        self._ok_sql = CLAIMED_OK  # the claim's readability test (see _claimed_ok)
        self._where = os.path.abspath(self.path)  # the path, whatever the cwd becomes

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
            if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                raise DuplicateTask(f"{self.path}: {exc}") from exc
            raise BackendError(f"{self.path}: a value the table refuses ({exc})") from exc
        except sqlite3.DatabaseError as exc:  # a corrupt or full file
            raise BackendError(f"{self.path}: {exc}") from exc

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        conn = self._conn
        assert conn is not None
        return transaction(conn)

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
        memory = self.path == ":memory:" or self.path.startswith("file:")
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
            if (
                not (self.create or memory)
                and not conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dowork_tasks'"
                ).fetchone()
            ):
                raise BackendUnavailable(
                    f"{self.path} holds no dowork tasks (no dowork_tasks table): check the path"
                )
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            schema.install(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._ok_sql = claim_test(conn)
        self._identity = self._file_identity()

    def _file_identity(self) -> tuple[int, int] | None:
        """The (device, inode) of the file at the path, or None (in memory, or missing)."""
        if self.path == ":memory:" or self.path.startswith("file:"):
            return None
        try:
            st = os.stat(self._where)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    async def check_store(self) -> None:
        """Raise ``StoreLost`` if the file at the path is not the one this backend opened.

        A worker calls it at every maintenance step: a file deleted (or replaced, e.g. by a
        restore or a ``mv``) under a running worker leaves its connection on the old file,
        which no producer writes to any more, so new work would be stranded in silence.
        """
        opened = self._identity
        if opened is None or self._executor is None:
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

    async def open(self) -> None:
        """Open the file, switch it to WAL and create the table and indexes if missing.

        Raises:
            BackendUnavailable: the file cannot be opened (its directory is missing, it is
                read-only, or it does not exist and ``create`` is off).
            BackendError: it is not a SQLite database, or SQLite failed otherwise.
        """
        with self._open_lock:
            if self._executor is not None:
                return
            executor = ThreadPoolExecutor(1, thread_name_prefix="dowork-sqlite")
            try:
                executor.submit(self._connect).result()
            except BaseException as exc:
                executor.shutdown(wait=False)
                if isinstance(exc, sqlite3.Error):
                    raise self._open_error(exc) from exc
                raise
            self._executor = executor

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

    async def push(self, records: Sequence[Record], *, fresh: bool = False) -> dict[str, str]:
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
                    r.created_at, r.created_at, r.priority, r.slot, r.concurrency_key or None,
                )
                for r in records
            ]  # fmt: skip
            conn.executemany(
                "INSERT INTO dowork_tasks (id, queue, name, payload, options, status, attempts,"
                " run_at, created_at, updated_at, priority, slot, concurrency_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    f" AND (t.{WAITING_SQL} OR t.{HELD_SQL})))",
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
        *,
        aging: float = PRIORITY_AGING,
        rates: Mapping[str, tuple[int, float]] | None = None,
        per_key: int | None = None,
    ) -> list[Record]:
        """Lease up to ``limit`` of the most urgent due records in one transaction."""
        if limit <= 0:
            return []
        request = claims.Claim(
            queue, now, limit, lease, owner, max_running, alone_from, aging, rates, per_key
        )
        return await self._run(self._claim, request)

    def _claim(self, request: claims.Claim) -> list[Record]:
        assert self._conn is not None
        keep = self._retention(Outcome.DEAD, None)
        return claims.claim(self._conn, request, self._ok_sql, keep)

    async def settle(self, settlements: Sequence[Settlement]) -> list[str]:
        """Write outcomes in one transaction; refuse those whose lease token is stale."""
        if not settlements:
            return []
        return await self._run(self._settle, settlements)

    def _settle(self, settlements: Sequence[Settlement]) -> list[str]:
        refused: list[str] = []
        with self._tx() as conn:
            for s in settlements:
                try:
                    written = self._settle_one(conn, s)
                except BAD_VALUE:
                    written = self._settle_malformed(conn, s)  # the rest of the batch settles
                if not written:
                    refused.append(s.id)
        return refused

    def _settle_one(self, conn: sqlite3.Connection, s: Settlement, late: bool = True) -> bool:
        """Apply one settlement to its leased record; False if refused (see ``Backend.settle``)."""
        ran = int(s.ran)
        # A reserved record's outcome counts the start when the function ran (its mark unsent).
        started = "started = started + (CASE WHEN status = 'reserved' THEN ? ELSE 0 END)"
        held = f"WHERE id = ? AND {HELD_SQL} AND attempts = ?"
        if s.outcome is Outcome.STARTED:
            cur = conn.execute(
                f"UPDATE dowork_tasks SET {started}, status = 'running' {held}",
                (ran, s.id, s.token),
            )
            return cur.rowcount > 0
        line = None if s.attempt is None else s.attempt + "\n"
        if s.outcome is Outcome.RETRY:
            cur = conn.execute(
                f"UPDATE dowork_tasks SET {started}, status = 'retrying', run_at = ?, error = ?,"
                " lease_until = NULL, owner = NULL, updated_at = ?,"
                " payload = COALESCE(?, payload),"
                f" history = COALESCE(history || ?, ?, history) {held}",
                (ran, s.run_at, s.error, s.now, s.payload, line, line, s.id, s.token),
            )
        else:
            keep = self._retention(s.outcome, s.keep)
            if keep <= 0:
                cur = conn.execute(f"DELETE FROM dowork_tasks {held}", (s.id, s.token))
            else:
                cur = conn.execute(
                    f"UPDATE dowork_tasks SET {started}, status = ?, result = ?, error = ?,"
                    " reason = ?, lease_until = NULL, owner = NULL, updated_at = ?,"
                    " finished_at = ?, expires_at = ?,"
                    f" history = COALESCE(history || ?, ?, history) {held}",
                    (
                        ran, _FINAL[s.outcome], s.result, s.error, s.reason, s.now, s.now,
                        s.now + keep, line, line, s.id, s.token,
                    ),
                )  # fmt: skip
        if cur.rowcount > 0:
            return True
        return late and self._late(conn, s) and self._settle_one(conn, s, late=False)

    @staticmethod
    def _late(conn: sqlite3.Connection, s: Settlement) -> bool:
        """A settlement after its lease lapsed: take back a crash charge; maybe revive it.

        Returns whether the record was made running again for the outcome to apply.
        """
        row = conn.execute(
            "SELECT status, attempts, reason, charged FROM dowork_tasks WHERE id = ?", (s.id,)
        ).fetchone()
        if row is None:
            return False
        status, attempts, reason, charged = row
        found, rest = uncharge(charged, s.token)
        if not found:
            return False
        conn.execute(
            "UPDATE dowork_tasks SET crashes = crashes - 1, lost = lost + 1, charged = ?"
            " WHERE id = ?",
            (rest, s.id),
        )
        if not late_applies(status, reason, attempts, s.token):
            return False
        conn.execute(
            "UPDATE dowork_tasks SET status = 'running', reason = NULL, error = NULL,"
            " finished_at = NULL, expires_at = NULL WHERE id = ?",
            (s.id,),
        )
        return True

    def _settle_malformed(self, conn: sqlite3.Connection, s: Settlement) -> bool:
        """Settle an outcome that cannot be stored as it is: its task is dead-lettered.

        E.g. text that is not valid Unicode in its error, or a time the table refuses. The
        reason is ``malformed``, the error says why (escaped); other outcomes of the batch
        are written as usual. False if even that cannot be written, or the lease is lost.
        """
        why = (
            f"its outcome ({s.outcome}) could not be stored: "
            + ascii(f"{s.error or ''} {s.reason or ''}")[:2000]
        )
        now = s.now if isinstance(s.now, float | int) and math.isfinite(s.now) else 0.0
        try:
            cur = conn.execute(
                "UPDATE dowork_tasks SET status = 'dead', reason = 'malformed', error = ?,"
                " result = NULL, lease_until = NULL, owner = NULL, updated_at = ?,"
                " finished_at = ?, expires_at = ?"
                f" WHERE id = ? AND {HELD_SQL} AND attempts = ?",
                (why, now, now, now + self._retention(Outcome.DEAD, None), s.id, s.token),
            )
        except BAD_VALUE:
            return False
        return cur.rowcount > 0

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
                    "UPDATE dowork_tasks SET lease_until = ?"
                    f" WHERE id = ? AND {HELD_SQL} AND attempts = ? RETURNING cancel_requested",
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
                    f" WHERE id = ? AND {WAITING_SQL} AND run_at > ? RETURNING queue",
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
            self._bury_never_due(conn, queue, now)
            # A lapsed lease on a task that never started is not a crash: lost, back in line
            # (run_at kept: back to its place at the head of the queue).
            requeued = conn.execute(
                "UPDATE dowork_tasks SET status = 'pending', lost = lost + 1,"
                " lease_until = NULL, owner = NULL, updated_at = ?"
                " WHERE queue = ? AND status = 'reserved' AND lease_until < ?",
                (now, queue, now),
            ).rowcount
            crashed = conn.execute(
                "SELECT id, attempts, crashes, charged FROM dowork_tasks"
                " WHERE queue = ? AND status = 'running' AND lease_until < ?",
                (queue, now),
            ).fetchall()
            dead = 0
            until = now + self._retention(Outcome.DEAD, None)
            for task_id, attempts, crashes, charged in crashed:
                crashes += 1
                charged = charge(charged, attempts)
                if crashes >= crash_budget:
                    dead += 1
                    conn.execute(
                        "UPDATE dowork_tasks SET status = 'dead', reason = 'crashed_worker',"
                        " error = ?, crashes = ?, charged = ?, lease_until = NULL, owner = NULL,"
                        " updated_at = ?, finished_at = ?, expires_at = ? WHERE id = ?",
                        (
                            f"the worker running it stopped renewing its lease {crashes} times",
                            crashes, charged, now, now, until, task_id,
                        ),
                    )  # fmt: skip
                else:
                    requeued += 1
                    conn.execute(
                        "UPDATE dowork_tasks SET status = 'retrying', crashes = ?, charged = ?,"
                        " lease_until = NULL, owner = NULL, updated_at = ? WHERE id = ?",
                        (crashes, charged, now, task_id),
                    )
        return requeued, dead

    def _bury_never_due(self, conn: sqlite3.Connection, queue: str, now: float) -> None:
        """Dead-letter the queue's waiting records whose ``run_at`` is never due (malformed).

        A claim never reads them, so maintenance looks for them: a few index probes.
        """
        found = [row[0] for row in conn.execute(NEVER_DUE_SQL, (queue,))]
        found += [row[0] for row in conn.execute(NEVER_DUE_KEYED_SQL, (queue,))]
        if found:
            where = f"rowid IN ({','.join('?' * len(found))})"
            keep = self._retention(Outcome.DEAD, None)
            bury(conn, where, found, now, keep)

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
                f"SELECT {records.COLUMNS} FROM dowork_tasks WHERE id IN ({marks})", chunk
            ).fetchall()
            found.extend(records.record(row) for row in rows)
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
            if status in LEASED:
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
        plain, keyed = conn.execute(NEXT_DUE_SQL, (queue,)).fetchone()
        # A run_at of the wrong type (text) is no time: maintenance buries its record.
        times = [float(t) for t in (plain, keyed) if isinstance(t, int | float)]
        return min(times) if times else None

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

    async def wake(self, queue: str, at: float) -> None:
        """A task of ``queue`` fell due at ``at``: wake this process's idle workers of it."""
        self._wakeups.notify({queue})

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
                f" AND (t.{WAITING_SQL} OR t.{HELD_SQL}))",
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
                    " error = NULL, reason = NULL, result = NULL, crashes = 0, charged = NULL,"
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
            where = f"NOT {HELD_SQL}"
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
            f"SELECT {records.COLUMNS} FROM dowork_tasks WHERE queue = ?{where}"
            f" ORDER BY created_at {order}, rowid {order} LIMIT ? OFFSET ?",
            (queue, *(wanted or ()), limit, offset),
        ).fetchall()
        return [records.record(row) for row in rows]

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
