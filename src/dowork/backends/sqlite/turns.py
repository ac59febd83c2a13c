"""Fair claims across concurrency keys: each key (and the records without one) in turn.

A queue whose records have concurrency keys is claimed key by key, as ``MemoryBackend.claim``
walks it: the key served longest ago first, keys never served before all others, each key's
most urgent record at a time, and no key past its ``per_key`` running share. The turn each key
was last served in is kept in ``dowork_turns`` (``''`` for the records without a key), so the
rotation goes on across claims and workers. ``Turns`` walks one claim lazily (a heap of the
keys whose turn may come, each lane read a few rows at a time); ``remember_keyed`` and
``remember_plain`` write the turns a claim leaves, and forget those of keys with nothing left.
"""

from __future__ import annotations

import functools
import heapq
import sqlite3
from collections.abc import Callable, Mapping
from typing import cast

from .._protocol import rank
from .lanes import Row, key_levels_cte, lane
from .rates import Pacer
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


class _Lane:
    """A key's due records in claim order, read a few at a time as its turns come."""

    __slots__ = ("_complete", "_fetch", "_pos", "_rows")

    def __init__(self, fetch: Callable[[int], list[Row]], rows: list[Row], complete: bool):
        self._fetch = fetch
        self._rows = rows
        self._pos = 0
        self._complete = complete

    def head(self) -> Row | None:
        """The most urgent record not taken yet, or None."""
        if self._pos == len(self._rows) and not self._complete:
            # Nothing is written before the claim ends: reading the lane again from its
            # start gives the same records in the same order, and then more.
            count = 2 * len(self._rows) + 2
            self._rows = self._fetch(count)
            self._complete = len(self._rows) < count
        return self._rows[self._pos] if self._pos < len(self._rows) else None

    def pop(self) -> Row:
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


class Turns:
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

    def _fetch(self, key: str, count: int) -> list[Row]:
        return lane(self._conn, self._queue, self._now, min(count, self._cap), self._aging, key)

    def _push(self, turn: int, key: str) -> None:
        """Queue the key's next turn, if it has a due record left."""
        row = self._lanes[key].head()
        if row is not None:
            entry = (turn, rank(row[4], row[5], self._aging), row[6], key)
            heapq.heappush(self._heap, entry)

    def _add(self, key: str, turn: int, rows: list[Row] | None = None) -> None:
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
        heads: dict[str, tuple[float, int, Row]] = {}
        for key, *rest in self._conn.execute(_NEW_KEYS_SQL, (self._queue, self._now)):
            row = cast(Row, tuple(rest))
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

    def take(self, limit: int, alone_from: int | None, pacer: Pacer) -> list[str]:
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
            if alone and ids:  # a repeat crasher is claimed alone (Store.claim)
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
