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
import functools
import heapq
import json
import math
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

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
    rank,
    rate_key,
    retention,
    status_filter,
    take_slot,
    uncharge,
)
from . import records, schema
from .rows import BAD_VALUE, CLAIMED_OK, TIME_LIMIT, UNREADABLE, Unreadable, bury, claim_test
from .schema import HELD_SQL, KEYED, PLAIN, WAITING_SQL

__all__ = ["SQLiteBackend"]

T = TypeVar("T")


def _levels_sql(lane: str) -> str:
    """The distinct priorities of a lane's waiting records (queue ``?1``), lowest first.

    A loose index scan, one probe per level.
    """
    return (
        "WITH RECURSIVE levels(p) AS ("
        f" SELECT MIN(priority) FROM dowork_tasks WHERE queue = ?1 AND {WAITING_SQL} AND {lane}"
        " UNION ALL SELECT (SELECT MIN(priority) FROM dowork_tasks"
        f" WHERE queue = ?1 AND {WAITING_SQL} AND {lane} AND priority > levels.p)"
        " FROM levels WHERE levels.p IS NOT NULL"
        ") SELECT p FROM levels WHERE p IS NOT NULL"
    )


_LEVELS_SQL = _levels_sql(PLAIN)
_KEY_LEVELS_SQL = _levels_sql("concurrency_key = ?2")
#: Whether the queue (``?1``) has a waiting record without a key: one index probe. (Without
#: ``INDEXED BY`` SQLite may prefer ``dowork_listing`` and read every waiting record.)
_PLAIN_WAITING_SQL = (
    "SELECT 1 FROM dowork_tasks INDEXED BY dowork_ready"
    f" WHERE queue = ?1 AND {WAITING_SQL} AND {PLAIN}"
)
#: Whether the queue (``?1``) has waiting records with a key, remembers the turns of keys,
#: and remembers the turn of the records without one: three index probes.
_TURNS_STATE_SQL = (
    "SELECT (SELECT 1 FROM dowork_tasks INDEXED BY dowork_lanes"
    f" WHERE queue = ?1 AND {WAITING_SQL} AND {KEYED}),"
    " (SELECT 1 FROM dowork_turns WHERE queue = ?1 AND key > ''),"
    " (SELECT 1 FROM dowork_turns WHERE queue = ?1 AND key = '')"
)


def _key_levels_cte(chosen: str) -> str:
    """The CTEs ``keys(k)``, ``chosen(k)`` and ``levels(k, p)`` of a queue (``?1``).

    ``keys``: the keys with waiting records (a loose index scan, one probe per key, then a
    NULL); ``chosen``: those the query ``chosen`` picks from ``keys``; ``levels``: the priority
    levels of each chosen key's waiting records (a loose index scan each).
    """
    return (
        "WITH RECURSIVE keys(k) AS ("
        f" SELECT MIN(concurrency_key) FROM dowork_tasks WHERE queue = ?1 AND {WAITING_SQL}"
        f" AND {KEYED}"
        " UNION ALL SELECT (SELECT MIN(concurrency_key) FROM dowork_tasks WHERE queue = ?1"
        f" AND {WAITING_SQL} AND concurrency_key > keys.k) FROM keys WHERE keys.k IS NOT NULL"
        f"), chosen(k) AS ({chosen}"
        "), levels(k, p) AS ("
        " SELECT k, (SELECT MIN(priority) FROM dowork_tasks WHERE queue = ?1 AND"
        f" {WAITING_SQL} AND concurrency_key = chosen.k) FROM chosen"
        " UNION ALL SELECT k, (SELECT MIN(priority) FROM dowork_tasks WHERE queue = ?1 AND"
        f" {WAITING_SQL} AND concurrency_key = levels.k AND priority > levels.p)"
        " FROM levels WHERE levels.p IS NOT NULL)"
    )


#: The keys with waiting records that were never served (no turn remembered), with the most
#: urgent due record (``?2``: now) of each of their levels: one probe per key and level.
_NEW_KEYS_SQL = (
    _key_levels_cte(
        "SELECT k FROM keys WHERE k IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM dowork_turns WHERE queue = ?1 AND key = keys.k)"
    )
    + " SELECT levels.k, t.id, t.crashes, t.name, t.slot, t.run_at, t.priority, t.rowid"
    " FROM levels JOIN dowork_tasks t ON t.rowid = (SELECT rowid FROM dowork_tasks"
    f" WHERE queue = ?1 AND {WAITING_SQL} AND concurrency_key = levels.k"
    " AND priority = levels.p AND run_at <= ?2 ORDER BY run_at, rowid LIMIT 1)"
    " WHERE levels.p IS NOT NULL"
)
#: The earliest ``run_at`` of the queue's waiting records: of each level without a key, and
#: of each key's levels.
_NEXT_DUE_SQL = (
    _key_levels_cte("SELECT k FROM keys WHERE k IS NOT NULL")
    + " SELECT (SELECT MIN((SELECT MIN(run_at) FROM dowork_tasks WHERE queue = ?1"
    f" AND {WAITING_SQL} AND {PLAIN} AND priority = plain.p))"
    f" FROM ({_LEVELS_SQL}) AS plain),"
    " (SELECT MIN((SELECT MIN(run_at) FROM dowork_tasks WHERE queue = ?1"
    f" AND {WAITING_SQL} AND concurrency_key = levels.k AND priority = levels.p))"
    " FROM levels WHERE levels.p IS NOT NULL)"
)
#: Waiting records of the queue (``?1``) that are never due: a ``run_at`` past
#: ``TIME_LIMIT`` or not a number (text sorts after every number). One index range per
#: priority level without a key, and per key and level.
_NEVER_DUE_SQL = (
    f"SELECT rowid FROM dowork_tasks WHERE queue = ?1 AND {WAITING_SQL} AND {PLAIN}"
    f" AND priority IN ({_LEVELS_SQL}) AND run_at > {TIME_LIMIT:.0e}"
)
_NEVER_DUE_KEYED_SQL = (
    _key_levels_cte("SELECT k FROM keys WHERE k IS NOT NULL")
    + " SELECT t.rowid FROM levels JOIN dowork_tasks t ON t.queue = ?1"
    " AND t.status IN ('pending', 'scheduled', 'retrying') AND t.concurrency_key = levels.k"
    f" AND t.priority = levels.p AND t.run_at > {TIME_LIMIT:.0e}"
    " WHERE levels.p IS NOT NULL"
)
#: Forget the turns of the keys that have no waiting record left (``Backend.claim``).
_FORGET_SQL = (
    "DELETE FROM dowork_turns WHERE queue = ?1 AND key > '' AND NOT EXISTS (SELECT 1"
    f" FROM dowork_tasks t WHERE queue = ?1 AND {WAITING_SQL}"
    " AND t.concurrency_key = dowork_turns.key)"
)
_FORGET_PLAIN_SQL = (
    f"DELETE FROM dowork_turns WHERE queue = ?1 AND key = '' AND NOT EXISTS ({_PLAIN_WAITING_SQL})"
)
_FINAL = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.FAILED: "failed",
    Outcome.CANCELLED: "cancelled",
    Outcome.DEAD: "dead",
}


#: A due record as a claim reads it: ``(id, crashes, name, slot, ...)``.
_Due = tuple[str, int, str, float | None, *tuple[Any, ...]]
#: A due record as a key's turn reads it: ``(id, crashes, name, slot, run_at, priority, seq)``,
#: ``seq`` (the rowid) being push order.
_Row = tuple[str, int, str, float | None, float, int, int]
#: The columns ``_due`` reads (then ``seq``, if ``wide``): a claim without keys needs four.
_DUE_COLUMNS = {False: "id, crashes, name, slot", True: "id, crashes, name, slot, run_at, priority"}
#: The lane a ``_due`` query reads: the records without a key, or those of key ``?5``.
_LANES = {True: PLAIN, False: "concurrency_key = ?5"}
_ONE_LEVEL_SQL = {
    (plain, wide): f"SELECT {_DUE_COLUMNS[wide]}{', rowid' * wide} FROM dowork_tasks"
    f" WHERE queue = ?1 AND {WAITING_SQL} AND {lane} AND priority = ?6 AND run_at <= ?2"
    " ORDER BY run_at, rowid LIMIT ?3"
    for plain, lane in _LANES.items()
    for wide in (False, True)
}


def _due(
    conn: sqlite3.Connection,
    queue: str,
    now: float,
    count: int,
    aging: float,
    key: str | None = None,
    wide: bool = False,
) -> list[Any]:
    """The ``count`` most urgent due records of a lane: those without a key, or of ``key``.

    The top ``count`` of each priority level in use, by ``(run_at, rowid)`` (an index range
    each), merged by ``(rank, rowid)``: the order ``MemoryBackend.claim`` sorts a lane in.
    The merge runs in SQLite (same float arithmetic as ``rank``), so Python only sees the
    ``count`` it needs; a single level is already in order. Rows are ``_Row``s if ``wide``,
    else their first four columns.
    """
    if key is None:
        levels = [row[0] for row in conn.execute(_LEVELS_SQL, (queue,))]
    else:
        levels = [row[0] for row in conn.execute(_KEY_LEVELS_SQL, (queue, key))]
    args = (queue, now, count, float(aging), key, *levels)
    if len(levels) == 1:
        return conn.execute(_ONE_LEVEL_SQL[key is None, wide], args).fetchall()
    if not levels:
        return []
    union = " UNION ALL ".join(
        "SELECT * FROM (SELECT id, crashes, name, slot, run_at, priority, rowid AS seq"
        " FROM dowork_tasks"
        f" WHERE queue = ?1 AND {WAITING_SQL} AND {_LANES[key is None]} AND priority = ?{i}"
        " AND run_at <= ?2 ORDER BY run_at, rowid LIMIT ?3)"
        for i in range(6, 6 + len(levels))
    )
    return conn.execute(
        f"SELECT {_DUE_COLUMNS[wide]}{', seq' * wide} FROM ({union})"
        " ORDER BY run_at - priority * ?4, seq LIMIT ?3",
        args,
    ).fetchall()


def _lane(
    conn: sqlite3.Connection, queue: str, now: float, count: int, aging: float, key: str
) -> list[_Row]:
    """The ``count`` most urgent due records of key ``key`` (``""``: of those without one)."""
    rows: list[_Row] = _due(conn, queue, now, count, aging, key or None, wide=True)
    return rows


class _Starts:
    """The start times a queue's rate limits gave out, read and written in a claim's transaction.

    One ``dowork_rates`` row per limit holds its last ``n`` start times (a JSON list,
    ascending): enough for ``take_slot``, and what every worker on the file shares.
    """

    def __init__(
        self, conn: sqlite3.Connection, queue: str, rates: Mapping[str, tuple[int, float]]
    ) -> None:
        self._conn = conn
        self._queue = queue
        self._rates = rates
        self._starts: dict[str, list[float]] = {}

    def take(self, key: str, now: float) -> float:
        """Give out the next start time of limit ``key`` (see ``Backend.claim``)."""
        starts = self._starts.get(key)
        if starts is None:
            row = self._conn.execute(
                "SELECT starts FROM dowork_rates WHERE queue = ? AND key = ?", (self._queue, key)
            ).fetchone()
            starts = self._starts[key] = [] if row is None else json.loads(row[0])
        n, per = self._rates[key]
        return take_slot(starts, n, per, now)

    def save(self) -> None:
        """Write back the start times of the limits ``take`` gave out from."""
        if self._starts:
            self._conn.executemany(
                "INSERT OR REPLACE INTO dowork_rates (queue, key, starts) VALUES (?, ?, ?)",
                [
                    (self._queue, key, json.dumps(starts, separators=(",", ":")))
                    for key, starts in self._starts.items()
                ],
            )


class _Pacer:
    """Asks a claim's rate limits for starts, as ``MemoryBackend.claim`` does.

    A record refused a start now is delayed to the start time it was given (``run_at`` and
    ``slot``); ``save`` writes the delays and the limits' start times, in the claim's
    transaction.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        queue: str,
        now: float,
        rates: Mapping[str, tuple[int, float]] | None,
    ) -> None:
        self._conn = conn
        self._now = now
        self._rates = rates or {}
        self._starts = _Starts(conn, queue, self._rates) if rates else None
        self._delayed: list[tuple[float, float, str]] = []

    def may_start(self, row: _Due) -> bool:
        """Whether the record may start now; if not, it waits for the slot it was given."""
        if self._starts is None or row[3] is not None:  # unlimited, or its slot has come
            return True
        key = rate_key(row[2], self._rates)
        if key is None:
            return True
        start = self._starts.take(key, self._now)
        if start <= self._now:
            return True
        self._delayed.append((start, start, row[0]))
        return False

    def save(self) -> None:
        """Write the start times given out and the delays."""
        if self._starts is not None:
            self._starts.save()
        if self._delayed:
            self._conn.executemany(
                "UPDATE dowork_tasks SET run_at = ?, slot = ? WHERE id = ?", self._delayed
            )


def _alone_or_rest(due: Sequence[_Due], alone_from: int | None) -> list[str]:
    """The ids to claim from ``due`` in claim order (see ``Backend.claim``).

    A repeat crasher (``crashes >= alone_from``) alone, or the records before the first one.
    """
    if alone_from is None:
        return [row[0] for row in due]
    if due and due[0][1] >= alone_from:
        return [due[0][0]]
    ids = []
    for row in due:
        if row[1] >= alone_from:
            break
        ids.append(row[0])
    return ids


def _pace(limit: int, alone_from: int | None, pacer: _Pacer, due: Sequence[_Due]) -> list[str]:
    """The ids to claim from ``due`` under the rate limits, as ``MemoryBackend.claim`` picks."""
    ids: list[str] = []
    for row in due:
        alone = alone_from is not None and row[1] >= alone_from
        if alone and ids:  # a repeat crasher is claimed alone (Backend.claim)
            break
        if not pacer.may_start(row):  # over the limit: waits for the start time it was given
            continue
        ids.append(row[0])
        if alone or len(ids) == limit:
            break
    return ids


def _remember_plain(
    conn: sqlite3.Connection,
    queue: str,
    served_now: bool,
    left: bool,
    keyed_turns: bool,
    plain_served: bool,
) -> None:
    """Keep the turns of a queue none of whose waiting records has a key, as a claim leaves them.

    The keys' turns are forgotten (none has a waiting record). The turn of the records without
    a key is remembered while some are waiting, if they were served by this claim (``served_now``:
    then theirs, the only turn, is the latest) or before (``plain_served``). ``left``: some are
    known to be waiting still (else it is asked). Nothing is written in the steady states.
    """
    if keyed_turns:
        conn.execute("DELETE FROM dowork_turns WHERE queue = ? AND key > ''", (queue,))
    if not (served_now or plain_served):
        return
    left = left or conn.execute(_PLAIN_WAITING_SQL, (queue,)).fetchone() is not None
    if left and not plain_served:
        conn.execute("INSERT INTO dowork_turns (queue, key, served) VALUES (?, '', 1)", (queue,))
    elif plain_served and not left:
        conn.execute("DELETE FROM dowork_turns WHERE queue = ? AND key = ''", (queue,))


def _crasher(record: Record, alone_from: int | None) -> bool:
    """Whether the record is claimed alone (``Backend.claim``)."""
    return alone_from is not None and record.crashes >= alone_from


class _Lane:
    """A key's due records in claim order, read a few at a time as its turns come."""

    __slots__ = ("_complete", "_fetch", "_pos", "_rows")

    def __init__(self, fetch: Callable[[int], list[_Row]], rows: list[_Row], complete: bool):
        self._fetch = fetch
        self._rows = rows
        self._pos = 0
        self._complete = complete

    def head(self) -> _Row | None:
        """The most urgent record not taken yet, or None."""
        if self._pos == len(self._rows) and not self._complete:
            # Nothing is written before the claim ends: reading the lane again from its
            # start gives the same records in the same order, and then more.
            count = 2 * len(self._rows) + 2
            self._rows = self._fetch(count)
            self._complete = len(self._rows) < count
        return self._rows[self._pos] if self._pos < len(self._rows) else None

    def pop(self) -> _Row:
        """Take the head."""
        row = self.head()
        assert row is not None
        self._pos += 1
        return row


class _Remembered:
    """The keys of a queue with a remembered turn, in the order they were served."""

    __slots__ = ("_after", "_conn", "_done", "_queue", "_rows")

    BATCH = 32

    def __init__(self, conn: sqlite3.Connection, queue: str) -> None:
        self._conn = conn
        self._queue = queue
        self._rows: list[tuple[str, int]] = []  # reversed, to pop
        self._after = 0
        self._done = False

    def peek(self) -> tuple[str, int] | None:
        """The next ``(key, turn)``, or None."""
        if not self._rows and not self._done:
            rows = self._conn.execute(
                "SELECT key, served FROM dowork_turns WHERE queue = ? AND served > ?"
                " ORDER BY served LIMIT ?",
                (self._queue, self._after, self.BATCH),
            ).fetchall()
            self._done = len(rows) < self.BATCH
            if rows:
                self._after = rows[-1][1]
            self._rows = rows[::-1]
        return self._rows[-1] if self._rows else None

    def pop(self) -> tuple[str, int]:
        """Take the next ``(key, turn)``."""
        return self._rows.pop()


class _Turns:
    """One claim of a queue whose records have concurrency keys: key by key, in turn.

    The same walk as ``MemoryBackend.claim``: a heap of ``(turn, rank, seq, key)``, one entry
    per key with a due record (``""``: the records without a key). It is filled lazily, so
    that a claim reads little more than it may take: the keys never served first (with the
    head of each), then the remembered ones in the order they were served, each read only
    when its turn may come before the heap's first. A key's records are read a few at a time
    (``_Lane``), so a big backlog costs a claim no more than a small one.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        queue: str,
        now: float,
        limit: int,
        aging: float,
        per_key: int | None,
    ) -> None:
        self._conn = conn
        self._queue = queue
        self._now = now
        self._aging = aging
        self._per_key = per_key
        self._cap = 2 * limit  # records looked at, at most
        self._heap: list[tuple[int, float, int, str]] = []
        self._lanes: dict[str, _Lane] = {}
        self._remembered = _Remembered(conn, queue)
        self._held: dict[str, int] | None = None  # key -> its running records (per_key)
        self._top: int | None = None  # the last turn given
        #: The turn each key served by this claim was given, to remember.
        self.served: dict[str, int] = {}

    def _fetch(self, key: str, count: int) -> list[_Row]:
        return _lane(self._conn, self._queue, self._now, min(count, self._cap), self._aging, key)

    def _push(self, turn: int, key: str) -> None:
        """Queue the key's next turn, if it has a due record left."""
        row = self._lanes[key].head()
        if row is not None:
            entry = (turn, rank(row[4], row[5], self._aging), row[6], key)
            heapq.heappush(self._heap, entry)

    def _add(self, key: str, turn: int, rows: list[_Row] | None = None) -> None:
        """Take in a key's lane (read now unless its head is known) at its turn."""
        if rows is None:
            rows = self._fetch(key, 2)
            complete = len(rows) < 2
        else:
            complete = False
        self._lanes[key] = _Lane(functools.partial(self._fetch, key), rows, complete)
        self._push(turn, key)

    def add_new(self, plain_served: bool) -> None:
        """Take in the keys never served (or forgotten): their turn is 0."""
        aging = self._aging
        heads: dict[str, tuple[float, int, _Row]] = {}
        for key, *rest in self._conn.execute(_NEW_KEYS_SQL, (self._queue, self._now)):
            row = cast(_Row, tuple(rest))
            urgency = (rank(row[4], row[5], aging), row[6], row)
            if key not in heads or urgency < heads[key]:
                heads[key] = urgency
        for key, (_, _, row) in heads.items():
            self._add(key, 0, [row])
        if not plain_served:
            self._add("", 0)

    def _bring_in(self) -> None:
        """Take in the remembered keys whose turn comes before the heap's first."""
        heap = self._heap
        while not heap or heap[0][0] > 0:  # never served (0) go before every remembered
            nxt = self._remembered.peek()
            if nxt is None or (heap and heap[0][0] < nxt[1]):
                return
            key, turn = self._remembered.pop()
            self._add(key, turn)

    def _has_share(self, key: str) -> bool:
        """Whether the key already has ``per_key`` records running (across every worker)."""
        if not key or self._per_key is None:
            return False
        if self._held is None:  # the queue's running records: as many as its workers run
            self._held = dict(
                self._conn.execute(
                    "SELECT concurrency_key, COUNT(*) FROM dowork_tasks INDEXED BY dowork_leases"
                    f" WHERE queue = ? AND {HELD_SQL} AND {KEYED}"
                    " GROUP BY concurrency_key",
                    (self._queue,),
                )
            )
        return self._held.get(key, 0) >= self._per_key

    def _next_turn(self) -> int:
        if self._top is None:
            (last,) = self._conn.execute(
                "SELECT MAX(served) FROM dowork_turns WHERE queue = ?", (self._queue,)
            ).fetchone()
            self._top = last or 0
        self._top += 1
        return self._top

    def take(self, limit: int, alone_from: int | None, pacer: _Pacer) -> list[str]:
        """The ids to claim in claim order; ``served`` then holds the turns given."""
        ids: list[str] = []
        looked = 0
        while looked < self._cap and len(ids) < limit:
            self._bring_in()
            if not self._heap:
                break
            turn, _, _, key = heapq.heappop(self._heap)
            if self._has_share(key):
                continue  # the key has its share running: its turn waits
            row = self._lanes[key].pop()
            looked += 1
            alone = alone_from is not None and row[1] >= alone_from
            if alone and ids:  # a repeat crasher is claimed alone (Backend.claim)
                break
            if not pacer.may_start(row):  # delayed by a rate limit: the key keeps its turn
                if looked < self._cap:
                    self._push(turn, key)
                continue
            ids.append(row[0])
            if alone:
                break
            if self._held is not None and key:
                self._held[key] = self._held.get(key, 0) + 1
            turn = self.served[key] = self._next_turn()
            if looked < self._cap and len(ids) < limit:
                self._push(turn, key)
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
        return await self._run(
            self._claim,
            queue, now, limit, lease, owner, max_running, alone_from, aging, rates, per_key,
        )  # fmt: skip

    def _claim(self, queue: str, now: float, *args: Any) -> list[Record]:
        """Claim; if a row cannot be read, dead-letter the unreadable rows and claim again.

        Each round buries at least one row (else the error is raised), so this ends.
        """
        while True:
            try:
                return self._claim_once(queue, now, *args)
            except UNREADABLE as exc:
                if isinstance(exc, sqlite3.OperationalError) and "decode" not in str(exc):
                    raise
                with self._tx() as conn:
                    buried = bury(
                        conn,
                        f"queue = ? AND {WAITING_SQL} AND run_at <= ?",
                        (queue, now),
                        now,
                        self._retention(Outcome.DEAD, None),
                    )
                if not buried:
                    raise

    def _claim_once(
        self,
        queue: str,
        now: float,
        limit: int,
        lease: float,
        owner: str,
        max_running: int | None,
        alone_from: int | None,
        aging: float,
        rates: Mapping[str, tuple[int, float]] | None,
        per_key: int | None,
    ) -> list[Record]:
        with self._tx() as conn:
            if max_running is not None:
                (running,) = conn.execute(
                    f"SELECT COUNT(*) FROM dowork_tasks WHERE queue = ? AND {HELD_SQL}",
                    (queue,),
                ).fetchone()
                limit = min(limit, max_running - running)
                if limit <= 0:
                    return []
            keyed, keyed_turns, plain_served = conn.execute(_TURNS_STATE_SQL, (queue,)).fetchone()
            pacer = _Pacer(conn, queue, now, rates)
            served: dict[str, int] = {}
            due: list[_Due] = []
            if keyed:
                turns = _Turns(conn, queue, now, limit, aging, per_key)
                turns.add_new(plain_served)
                ids = turns.take(limit, alone_from, pacer)
                served = turns.served
            elif not rates:  # every record looked at is claimed, up to a repeat crasher
                due = _due(conn, queue, now, limit + 1, aging)  # one more: is any left?
                ids = _alone_or_rest(due[:limit], alone_from)
            else:
                due = _due(conn, queue, now, 2 * limit, aging)
                ids = _pace(limit, alone_from, pacer, due)
            pacer.save()
            until = now + lease
            rows = []
            if ids:
                rows = conn.execute(
                    f"UPDATE dowork_tasks SET status = 'reserved', attempts = attempts + 1,"
                    f" lease_until = ?, owner = ?, updated_at = ?, slot = NULL"
                    f" WHERE id IN ({','.join('?' * len(ids))})"
                    f" RETURNING {records.CLAIMED_COLUMNS}, {self._ok_sql}",
                    (until, owner, now, *ids),
                ).fetchall()
                if len(rows) != len(ids) or not all(row[-1] for row in rows):
                    raise Unreadable(f"claim of {queue!r}: a record cannot be read")
            claimed = {row[0]: records.claimed(row, queue, now, until, owner) for row in rows}
            if keyed:
                if served:
                    conn.executemany(
                        "INSERT OR REPLACE INTO dowork_turns (queue, key, served) VALUES (?, ?, ?)",
                        [(queue, key, turn) for key, turn in served.items()],
                    )
                conn.execute(_FORGET_SQL, (queue,))
                conn.execute(_FORGET_PLAIN_SQL, (queue,))
            else:
                served_now = bool(ids) and not _crasher(claimed[ids[0]], alone_from)
                left = len(due) > len(ids)  # one looked at is still waiting
                _remember_plain(conn, queue, served_now, left, keyed_turns, plain_served)
        return [claimed[task_id] for task_id in ids]

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
        found = [row[0] for row in conn.execute(_NEVER_DUE_SQL, (queue,))]
        found += [row[0] for row in conn.execute(_NEVER_DUE_KEYED_SQL, (queue,))]
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
        plain, keyed = conn.execute(_NEXT_DUE_SQL, (queue,)).fetchone()
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
