"""The operator side of ``SQLiteBackend``: the ``StoreAdmin`` methods the CLI and dashboard use.

``SQLiteAdmin`` looks records up by id (``get``), cancels one (``cancel``), counts a queue's
records per status, lists the queues (a loose index scan, one probe per queue) and a queue's
records page by page (through the ``(queue, created_at)`` index, or by status through the
listing index and the leases index), sends finished records back to pending (``requeue``),
deletes a queue's records (``purge``), and reads the workers' beats and per-minute outcome
counts (``workers``, ``stats``; workers write them with ``beat``, in ``store``). Each method
runs one function over the connection on the store's thread, as the worker side does.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from typing import Any

from .._protocol import (
    LEASED,
    REQUEUABLE,
    Record,
    Wakeups,
    WorkerBeat,
    check_page,
    minute_of,
    status_filter,
)
from .connection import SQLiteFile, transaction
from .records import COLUMNS, record
from .schema import HELD_SQL, UNHELD_SQL
from .wake import WakeChannel

__all__ = ["SQLiteAdmin"]


class SQLiteAdmin:
    """``SQLiteBackend``'s methods of the ``StoreAdmin`` protocol, over its ``_file``."""

    _file: SQLiteFile
    _wakeups: Wakeups
    _wake: WakeChannel
    keep_finished: float

    async def get(self, ids: Sequence[str]) -> builtins.list[Record]:
        """Fetch records by id."""
        if not ids:
            return []
        return await self._file.call(_get, builtins.list(ids))

    async def cancel(self, task_id: str, now: float) -> str:
        """Cancel a waiting task, or flag a running one for its worker."""
        return await self._file.call(self._cancel, task_id, now)

    def _cancel(self, conn: sqlite3.Connection, task_id: str, now: float) -> str:
        return _cancel(conn, task_id, now, self.keep_finished)

    async def counts(self, queue: str) -> dict[str, int]:
        """Records per status."""
        return await self._file.call(_counts, queue)

    async def queues(self) -> builtins.list[str]:
        """Names of the queues with records, sorted (one index probe per queue)."""
        return await self._file.call(_queues)

    async def requeue(self, ids: Sequence[str], now: float) -> builtins.list[str]:
        """Send failed, cancelled and dead records back to pending in one transaction."""
        if not ids:
            return []
        requeued, queues = await self._file.call(_requeue, builtins.list(dict.fromkeys(ids)), now)
        self._wakeups.notify(queues)
        self._wake.send(queues)
        return requeued

    async def purge(self, queue: str, statuses: Sequence[str] | None = None) -> int:
        """Delete the queue's records in ``statuses`` (all but running ones for None)."""
        wanted = status_filter(statuses)
        if wanted == ():
            return 0
        return await self._file.call(_purge_queue, queue, wanted)

    async def workers(self, now: float) -> builtins.list[WorkerBeat]:
        """The workers whose beat has not expired."""
        return await self._file.call(_workers, now)

    async def stats(self, queue: str, since: float) -> dict[int, dict[str, int]]:
        """Per-minute outcome counts of the queue from ``since`` on."""
        return await self._file.call(_stats, queue, minute_of(since))

    async def list(
        self,
        queue: str,
        statuses: Sequence[str] | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> builtins.list[Record]:
        """One page of the queue's records by ``created_at``, read through an index."""
        check_page(limit, offset)
        wanted = status_filter(statuses)
        if limit == 0 or wanted == ():
            return []
        return await self._file.call(_list, queue, wanted, limit, offset, newest_first)


def _queues(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(  # a loose index scan: jump from one queue name to the next
        "WITH RECURSIVE names(queue) AS ("
        " SELECT MIN(queue) FROM dowork_tasks"
        " UNION ALL SELECT (SELECT MIN(queue) FROM dowork_tasks WHERE queue > names.queue)"
        " FROM names WHERE names.queue IS NOT NULL"
        ") SELECT queue FROM names WHERE queue IS NOT NULL"
    ).fetchall()
    return [row[0] for row in rows]


def _requeue(conn: sqlite3.Connection, ids: list[str], now: float) -> tuple[list[str], set[str]]:
    done: dict[str, str] = {}
    finished = ",".join(f"'{status}'" for status in REQUEUABLE)
    with transaction(conn):
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


def _purge_queue(conn: sqlite3.Connection, queue: str, wanted: tuple[str, ...] | None) -> int:
    deleted = 0
    with transaction(conn):
        for where, args in _by_index(queue, wanted):
            deleted += conn.execute(f"DELETE FROM dowork_tasks WHERE {where}", args).rowcount
    if deleted:
        conn.execute("PRAGMA incremental_vacuum")
    return deleted


def _by_index(queue: str, wanted: tuple[str, ...] | None) -> list[tuple[str, list[str]]]:
    """The test (and its arguments) of the queue's records in ``wanted``, one per index.

    The leased records are in ``dowork_leases``, the others in ``dowork_listing``: the test
    names the index's own WHERE for SQLite to read through it. None: every record but the
    leased ones (purge's default).
    """
    if wanted is None:
        return [(f"queue = ? AND {UNHELD_SQL}", [queue])]
    tests = []
    for statuses, where in (
        ([s for s in wanted if s not in LEASED], UNHELD_SQL),
        ([s for s in wanted if s in LEASED], HELD_SQL),
    ):
        if statuses:
            marks = ",".join("?" * len(statuses))
            tests.append((f"queue = ? AND {where} AND status IN ({marks})", [queue, *statuses]))
    return tests


def _workers(conn: sqlite3.Connection, now: float) -> list[WorkerBeat]:
    rows = conn.execute(
        "SELECT beat FROM dowork_workers WHERE expires_at > ? ORDER BY id", (now,)
    ).fetchall()
    return [WorkerBeat.from_json(row[0]) for row in rows]


def _stats(conn: sqlite3.Connection, queue: str, first: int) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for minute, outcome, n in conn.execute(
        "SELECT minute, outcome, n FROM dowork_stats WHERE queue = ? AND minute >= ?"
        " ORDER BY minute",
        (queue, first),
    ):
        out.setdefault(int(minute), {})[outcome] = int(n)
    return out


def _list(
    conn: sqlite3.Connection,
    queue: str,
    wanted: tuple[str, ...] | None,
    limit: int,
    offset: int,
    newest_first: bool,
) -> list[Record]:
    order = "DESC" if newest_first else "ASC"
    tests = [("queue = ?", [queue])] if wanted is None else _by_index(queue, wanted)
    parts, args = [], []
    for where, values in tests:  # (a few leased records: read through their index, sorted)
        index = " INDEXED BY dowork_leases" if HELD_SQL in where else ""
        parts.append(f"SELECT {COLUMNS}, rowid AS seq FROM dowork_tasks{index} WHERE {where}")
        args += values
    rows = _read(
        conn,
        " UNION ALL ".join(parts) + f" ORDER BY created_at {order}, seq {order} LIMIT ? OFFSET ?",
        (*args, limit, offset),
    )
    return [record(row) for row in rows]


def _read(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[Any]:
    """Rows of a query; text that is not UTF-8 (a row written by hand) is shown escaped.

    The plain read first (decoded in C); only if SQLite cannot decode some text is the query
    run again with a lenient decoder, so that one such row does not hide the others.
    """
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    factory = conn.text_factory
    conn.text_factory = _lenient
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.text_factory = factory


def _lenient(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _get(conn: sqlite3.Connection, ids: list[str]) -> list[Record]:
    found: list[Record] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = _read(conn, f"SELECT {COLUMNS} FROM dowork_tasks WHERE id IN ({marks})", chunk)
        found.extend(record(row) for row in rows)
    return found


def _cancel(conn: sqlite3.Connection, task_id: str, now: float, keep_finished: float) -> str:
    with transaction(conn):
        row = conn.execute("SELECT status FROM dowork_tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            return "unknown"
        status = row[0]
        if status in ("pending", "scheduled", "retrying"):
            conn.execute(
                "UPDATE dowork_tasks SET status = 'cancelled', error = 'cancelled',"
                " updated_at = ?, finished_at = ?, expires_at = ? WHERE id = ?",
                (now, now, now + keep_finished, task_id),
            )
            return "cancelled"
        if status in LEASED:
            conn.execute("UPDATE dowork_tasks SET cancel_requested = 1 WHERE id = ?", (task_id,))
            return "requested"
        return "finished"


def _counts(conn: sqlite3.Connection, queue: str) -> dict[str, int]:
    rows = conn.execute(  # the leased records and the others are in separate indexes
        f"SELECT status, COUNT(*) FROM dowork_tasks WHERE queue = ?1 AND {UNHELD_SQL}"
        f" GROUP BY status UNION ALL SELECT status, COUNT(*) FROM dowork_tasks"
        f" WHERE queue = ?1 AND {HELD_SQL} GROUP BY status",
        (queue,),
    ).fetchall()
    return {status: count for status, count in rows}
