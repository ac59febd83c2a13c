"""Fair claims across concurrency keys: each key (and the records without one) in turn.

A queue whose records have concurrency keys is claimed key by key, as ``flow.Turns`` walks
it (and ``MemoryBackend.claim`` with it): the key served longest ago first, keys never served
before all others, each key's most urgent record at a time, and no key past its ``per_key``
running share. The turn each key was last served in is kept in ``dowork_turns`` (``''`` for
the records without a key), so the rotation goes on across claims and workers. ``Turns``
walks one claim lazily (a heap of the keys whose turn may come, each lane read a few rows at
a time); ``remember_keyed`` and ``remember_plain`` write the turns a claim leaves, and forget
those of keys with nothing left.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping
from operator import itemgetter
from typing import cast

from .. import flow
from ..flow import rank
from .lanes import Row, key_levels_cte, lane
from .schema import HELD_SQL, KEYED, PLAIN, WAITING_SQL

__all__ = ["TURNS_STATE_SQL", "Turns", "remember_keyed", "remember_plain"]

#: Whether the queue (``?1``) has a waiting record without a key: one index probe. (Without
#: ``INDEXED BY`` SQLite may prefer ``dowork_listing`` and read every waiting record.)
_PLAIN_WAITING_SQL = (
    "SELECT 1 FROM dowork_tasks INDEXED BY dowork_ready"
    f" WHERE queue = ?1 AND {WAITING_SQL} AND {PLAIN}"
)
#: Whether the queue (``?1``) has waiting records with a key, remembers the turns of keys,
#: and remembers the turn of the records without one: three index probes.
TURNS_STATE_SQL = (
    "SELECT (SELECT 1 FROM dowork_tasks INDEXED BY dowork_lanes"
    f" WHERE queue = ?1 AND {WAITING_SQL} AND {KEYED}),"
    " (SELECT 1 FROM dowork_turns WHERE queue = ?1 AND key > ''),"
    " (SELECT 1 FROM dowork_turns WHERE queue = ?1 AND key = '')"
)
#: The keys with waiting records that were never served (no turn remembered), with the most
#: urgent due record (``?2``: now) of each of their levels: one probe per key and level.
_NEW_KEYS_SQL = (
    key_levels_cte(
        "SELECT k FROM keys WHERE k IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM dowork_turns WHERE queue = ?1 AND key = keys.k)"
    )
    + " SELECT levels.k, t.id, t.crashes, t.name, t.slot, t.run_at, t.priority, t.rowid"
    " FROM levels JOIN dowork_tasks t ON t.rowid = (SELECT rowid FROM dowork_tasks"
    f" WHERE queue = ?1 AND {WAITING_SQL} AND concurrency_key = levels.k"
    " AND priority = levels.p AND run_at <= ?2 ORDER BY run_at, rowid LIMIT 1)"
    " WHERE levels.p IS NOT NULL"
)
#: Forget the turns of the keys that have no waiting record left (``Store.claim``).
_FORGET_SQL = (
    "DELETE FROM dowork_turns WHERE queue = ?1 AND key > '' AND NOT EXISTS (SELECT 1"
    f" FROM dowork_tasks t WHERE queue = ?1 AND {WAITING_SQL}"
    " AND t.concurrency_key = dowork_turns.key)"
)
_FORGET_PLAIN_SQL = (
    f"DELETE FROM dowork_turns WHERE queue = ?1 AND key = '' AND NOT EXISTS ({_PLAIN_WAITING_SQL})"
)


def remember_keyed(conn: sqlite3.Connection, queue: str, served: Mapping[str, int]) -> None:
    """Keep the turns a claim of a queue with keys gave; forget those of keys with none left."""
    if served:
        conn.executemany(
            "INSERT OR REPLACE INTO dowork_turns (queue, key, served) VALUES (?, ?, ?)",
            [(queue, key, turn) for key, turn in served.items()],
        )
    conn.execute(_FORGET_SQL, (queue,))
    conn.execute(_FORGET_PLAIN_SQL, (queue,))


def remember_plain(
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


class Turns(flow.Turns[Row]):
    """One claim of a queue whose records have concurrency keys: ``flow.Turns`` on the file.

    Its heap is filled lazily, so that a claim reads little more than it may take: the keys
    never served first (with the head of each), then the remembered ones in the order they
    were served, each read only when its turn may come before the heap's first. A key's
    records are read a few at a time (``flow.Lane``), so a big backlog costs a claim no more
    than a small one.
    """

    lazy = True

    def __init__(
        self,
        conn: sqlite3.Connection,
        queue: str,
        now: float,
        limit: int,
        aging: float,
        per_key: int | None,
    ) -> None:
        super().__init__(limit, per_key, itemgetter(1))
        self._conn = conn
        self._queue = queue
        self._now = now
        self._aging = aging
        self._remembered = _Remembered(conn, queue)

    def urgency(self, row: Row) -> tuple[float, int]:
        """``(rank, rowid)``."""
        return rank(row[4], row[5], self._aging), row[6]

    def running(self) -> dict[str, int]:
        """The queue's running records per key: as many as its workers run."""
        return dict(
            self._conn.execute(
                "SELECT concurrency_key, COUNT(*) FROM dowork_tasks INDEXED BY dowork_leases"
                f" WHERE queue = ? AND {HELD_SQL} AND {KEYED}"
                " GROUP BY concurrency_key",
                (self._queue,),
            )
        )

    def last_turn(self) -> int:
        """The latest turn remembered for the queue (0: none)."""
        (last,) = self._conn.execute(
            "SELECT MAX(served) FROM dowork_turns WHERE queue = ?", (self._queue,)
        ).fetchone()
        return int(last or 0)

    def _fetch(self, key: str, count: int) -> list[Row]:
        return lane(self._conn, self._queue, self._now, min(count, self.cap), self._aging, key)

    def _add(self, key: str, turn: int, rows: list[Row] | None = None) -> None:
        """Take in a key's lane (read now unless its head is known) at its turn."""
        fetch = functools.partial(self._fetch, key)
        if rows is None:
            rows = fetch(2)
            if len(rows) < 2:
                self.add(key, turn, flow.Lane(rows))
                return
        self.add(key, turn, flow.Lane(rows, fetch))

    def add_new(self, plain_served: bool) -> None:
        """Take in the keys never served (or forgotten): their turn is 0."""
        heads: dict[str, tuple[float, int, Row]] = {}
        for key, *rest in self._conn.execute(_NEW_KEYS_SQL, (self._queue, self._now)):
            row = cast(Row, tuple(rest))
            urgency = (*self.urgency(row), row)
            if key not in heads or urgency < heads[key]:
                heads[key] = urgency
        for key, (_, _, row) in heads.items():
            self._add(key, 0, [row])
        if not plain_served:
            self._add("", 0)

    def bring_in(self) -> None:
        """Take in the remembered keys whose turn comes before the heap's first."""
        heap = self.heap
        while not heap or heap[0][0] > 0:  # never served (0) go before every remembered
            nxt = self._remembered.peek()
            if nxt is None or (heap and heap[0][0] < nxt[1]):
                return
            key, turn = self._remembered.pop()
            self._add(key, turn)
