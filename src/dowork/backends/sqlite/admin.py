"""The operator side of ``SQLiteBackend``: what the CLI, the dashboard and worker beats use.

``SQLiteAdmin`` lists the queues (a loose index scan, one probe per queue) and a queue's
records page by page (through the ``(queue, status, created_at)`` and ``(queue, created_at)``
indexes), sends finished records back to pending (``requeue``), deletes a queue's records
(``purge``), and keeps the workers' beats and per-minute outcome counts (``beat``,
``workers``, ``stats``). Each method runs one function over the connection on the store's
thread, as the worker side does (``store``).
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Mapping, Sequence

from .._protocol import (
    REQUEUABLE,
    STATS_MINUTES,
    Record,
    Wakeups,
    WorkerBeat,
    check_page,
    minute_of,
    status_filter,
)
from .connection import SQLiteFile, transaction
from .records import COLUMNS, record
from .schema import HELD_SQL

__all__ = ["SQLiteAdmin"]


class SQLiteAdmin:
    """The operator-side methods of ``SQLiteBackend`` (see ``Backend``), over its ``_file``."""

    _file: SQLiteFile
    _wakeups: Wakeups

    async def queues(self) -> builtins.list[str]:
        """Names of the queues with records, sorted (one index probe per queue)."""
        return await self._file.call(_queues)

    async def requeue(self, ids: Sequence[str], now: float) -> builtins.list[str]:
        """Send failed, cancelled and dead records back to pending in one transaction."""
        if not ids:
            return []
        requeued, queues = await self._file.call(_requeue, builtins.list(dict.fromkeys(ids)), now)
        self._wakeups.notify(queues)
        return requeued

    async def purge(self, queue: str, statuses: Sequence[str] | None = None) -> int:
        """Delete the queue's records in ``statuses`` (all but running ones for None)."""
        wanted = status_filter(statuses)
        if wanted == ():
            return 0
        return await self._file.call(_purge_queue, queue, wanted)

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
        await self._file.call(_beat, worker, now, ttl, rows)

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
    args: tuple[str, ...] = ()
    if wanted is None:
        where = f"NOT {HELD_SQL}"
    else:
        where, args = f"status IN ({','.join('?' * len(wanted))})", wanted
    with transaction(conn):
        deleted = conn.execute(
            f"DELETE FROM dowork_tasks WHERE queue = ? AND {where}", (queue, *args)
        ).rowcount
    if deleted:
        conn.execute("PRAGMA incremental_vacuum")
    return deleted


def _beat(
    conn: sqlite3.Connection,
    worker: WorkerBeat,
    now: float,
    ttl: float,
    rows: list[tuple[str, int, str, int]],
) -> None:
    with transaction(conn):
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
    where = ""
    if wanted is not None:
        where = f" AND status IN ({','.join('?' * len(wanted))})"
    order = "DESC" if newest_first else "ASC"
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM dowork_tasks WHERE queue = ?{where}"
        f" ORDER BY created_at {order}, rowid {order} LIMIT ? OFFSET ?",
        (queue, *(wanted or ()), limit, offset),
    ).fetchall()
    return [record(row) for row in rows]
