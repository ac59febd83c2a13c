"""Flow control as every store's claim applies it, in pure Python: no I/O, no store.

``Store.claim`` orders due records by ``rank`` (priority with aging), paces them by rate
limits (``rate_key``, ``take_slot``, ``Pacer``), claims a repeat crasher alone (``alone``),
keeps within ``max_running`` (``room``) and serves concurrency keys in turn, none past its
``per_key`` share (``Turns``, walking each key's ``Lane``). ``MemoryBackend`` and the SQLite
planner both claim through these; the engine's ready line ranks with ``rank`` and its own
rate limits take their slots with ``take_slot``. Redis does the same in Lua, its own language.

Records are whatever a store reads (``MemoryBackend``'s ``Record``, a SQLite row): a store
tells ``Turns`` how to rank one and how often it crashed, and asks ``Pacer`` by id, name and
slot. ``pace`` and ``alone_count`` are a single lane's walk, done without turns.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

__all__ = [
    "Lane",
    "Pacer",
    "Turns",
    "alone",
    "alone_count",
    "pace",
    "rank",
    "rate_key",
    "room",
    "take_slot",
]

R = TypeVar("R")


def rank(run_at: float, priority: int, aging: float) -> float:
    """The claim order of a due record (lower first): see ``Store.claim``."""
    return run_at - priority * aging


def rate_key(name: str, rates: Mapping[str, tuple[int, float]]) -> str | None:
    """The limit a record of task ``name`` counts against: its own, the queue's ``""``, or None."""
    if name in rates:
        return name
    return "" if "" in rates else None


def take_slot(starts: list[float], n: int, per: float, now: float) -> float:
    """Give out the first start time from ``now`` on that keeps at most ``n`` in any ``per``.

    ``starts`` are the start times already given out, ascending: the new one comes ``per``
    after the ``n``-th latest of them, and is added to them (only the last ``n`` are kept).
    """
    start = now if len(starts) < n else max(now, starts[-n] + per)
    starts.append(start)
    del starts[:-n]
    return start


def room(limit: int, max_running: int | None, running: int) -> int:
    """How many records a claim may take: ``limit``, fewer under ``max_running``."""
    return limit if max_running is None else min(limit, max_running - running)


def alone(crashes: int, alone_from: int | None) -> bool:
    """Whether a record that crashed workers ``crashes`` times is claimed alone."""
    return alone_from is not None and crashes >= alone_from


def alone_count(rows: Sequence[R], alone_from: int | None, crashes: Callable[[R], int]) -> int:
    """How many of ``rows`` (in claim order, none rate limited) one claim takes.

    A repeat crasher first: it alone; else the rows before the first repeat crasher.
    """
    if alone_from is None:
        return len(rows)
    for count, row in enumerate(rows):
        if crashes(row) >= alone_from:
            return count or 1
    return len(rows)


class Pacer(Generic[R]):
    """A claim's rate limits: asks each record's limit for a start time (``take_slot``).

    ``starts(key)`` gives the start times limit ``key`` gave out (ascending, the list
    ``take_slot`` extends): the store keeps them, and writes them back after the claim.
    ``fields(record)`` reads a record's ``(id, task name, slot)``. A record refused a start
    now waits for the start time it was given: ``delayed`` lists ``(start, id)`` for the
    store to set as its ``run_at`` and ``slot``.
    """

    __slots__ = ("_fields", "_now", "_rates", "_starts", "delayed")

    def __init__(
        self,
        now: float,
        rates: Mapping[str, tuple[int, float]] | None,
        starts: Callable[[str], list[float]],
        fields: Callable[[R], tuple[str, str, float | None]],
    ) -> None:
        self._now = now
        self._rates = rates or {}
        self._starts = starts
        self._fields = fields
        self.delayed: list[tuple[float, str]] = []

    def may_start(self, record: R) -> bool:
        """Whether the record may start now (unlimited, or its slot came); else delay it."""
        task_id, name, slot = self._fields(record)
        if slot is not None or not self._rates:
            return True
        key = rate_key(name, self._rates)
        if key is None:
            return True
        n, per = self._rates[key]
        start = take_slot(self._starts(key), n, per, self._now)
        if start <= self._now:
            return True
        self.delayed.append((start, task_id))
        return False


def pace(
    rows: Sequence[R],
    limit: int,
    alone_from: int | None,
    crashes: Callable[[R], int],
    may_start: Callable[[R], bool],
) -> list[R]:
    """The rows of one lane (in claim order) a claim takes under rate limits.

    ``Turns.take`` of a single lane: up to ``limit``, a repeat crasher alone, a row refused
    by ``may_start`` (a ``Pacer``'s, which delays it) passed over.
    """
    taken: list[R] = []
    for row in rows:
        single = alone_from is not None and crashes(row) >= alone_from  # alone()
        if single and taken:
            break
        if not may_start(row):
            continue
        taken.append(row)
        if single or len(taken) == limit:
            break
    return taken


class Lane(Generic[R]):
    """A key's due records in claim order, read more of (``fetch(count)``) as its turns come.

    ``fetch`` gives the lane's first ``count`` records in the same order (nothing is written
    during a claim); a lane without one holds all its records.
    """

    __slots__ = ("_fetch", "_pos", "_rows")

    def __init__(self, rows: list[R], fetch: Callable[[int], list[R]] | None = None) -> None:
        self._rows = rows
        self._pos = 0
        self._fetch = fetch

    def head(self) -> R | None:
        """The most urgent record not taken yet, or None."""
        if self._pos == len(self._rows) and self._fetch is not None:
            count = 2 * len(self._rows) + 2
            self._rows = self._fetch(count)
            if len(self._rows) < count:
                self._fetch = None
        return self._rows[self._pos] if self._pos < len(self._rows) else None

    def pop(self) -> R:
        """Take the head."""
        if self._pos == len(self._rows) and self.head() is None:
            raise IndexError("pop from an empty lane")
        row = self._rows[self._pos]
        self._pos += 1
        return row


class Turns(Generic[R]):
    """One claim across concurrency keys: each key (``""``: the records without one) in turn.

    A heap of ``(turn, rank, seq, key)``, one entry per key with a due record: the key served
    longest ago first (turn 0: never served), ties by its most urgent record. Each step takes
    that key's most urgent record, unless the key has its ``per_key`` share running; a record
    delayed by a rate limit does not use up its key's turn. At most ``2 * limit`` records
    are looked at. A store subclasses it to say how to rank its records, how many run per
    key and which turn it gave last; it may bring keys in lazily (``bring_in``). ``crashes``
    reads how many times a record crashed workers.
    """

    def __init__(self, limit: int, per_key: int | None, crashes: Callable[[R], int]) -> None:
        self.cap = 2 * limit  #: records looked at, at most
        self.per_key = per_key
        self.crashes = crashes
        self.heap: list[tuple[int, float, int, str]] = []
        self.lanes: dict[str, Lane[R]] = {}
        #: The turn each key served by this claim was given, for the store to remember.
        self.served: dict[str, int] = {}
        self._held: dict[str, int] | None = None  # key -> its running records (per_key)
        self._top: int | None = None  # the last turn given

    def urgency(self, row: R) -> tuple[float, int]:
        """A record's order within its key: ``(rank, push order)``."""
        raise NotImplementedError

    def running(self) -> dict[str, int]:
        """The queue's running records per concurrency key (asked once, if ``per_key``)."""
        raise NotImplementedError

    def last_turn(self) -> int:
        """The last turn the queue gave (0: none), asked once, when a key is served."""
        raise NotImplementedError

    #: Whether the store adds keys as their turn may come (``bring_in``), not all first.
    lazy = False

    def bring_in(self) -> None:
        """Add the keys whose turn may come before the heap's first (if ``lazy``)."""

    def add(self, key: str, turn: int, lane: Lane[R]) -> None:
        """Take in a key's lane at the turn it was last served in."""
        self.lanes[key] = lane
        self._push(turn, key)

    def _push(self, turn: int, key: str) -> None:
        """Queue the key's next turn, if it has a due record left."""
        row = self.lanes[key].head()
        if row is not None:
            heapq.heappush(self.heap, (turn, *self.urgency(row), key))

    def _serve(self, key: str) -> int:
        """Count a record taken against its key's share; give the key the next turn."""
        if self._held is not None and key:
            self._held[key] = self._held.get(key, 0) + 1
        if self._top is None:  # the last turn given, asked once
            self._top = self.last_turn()
        self._top += 1
        self.served[key] = self._top
        return self._top

    def take(
        self, limit: int, alone_from: int | None, may_start: Callable[[R], bool] | None
    ) -> list[R]:
        """The records to claim, in claim order; ``served`` then holds the turns given.

        ``may_start`` (a ``Pacer``'s) asks a record's rate limit; None: there are none.
        """
        taken: list[R] = []
        looked = 0
        heap, lanes, crashes, per_key = self.heap, self.lanes, self.crashes, self.per_key
        while looked < self.cap and len(taken) < limit:
            if self.lazy:
                self.bring_in()
            if not heap:
                break
            turn, _, _, key = heapq.heappop(heap)
            if key and per_key is not None:
                if self._held is None:  # the running records per key, asked once
                    self._held = self.running()
                if self._held.get(key, 0) >= per_key:
                    continue  # the key has its share running: its turn waits
            row = lanes[key].pop()
            looked += 1
            single = alone_from is not None and crashes(row) >= alone_from  # alone()
            if single and taken:  # a repeat crasher is claimed alone (Store.claim)
                break
            if may_start is not None and not may_start(row):  # delayed: keeps the key's turn
                if looked < self.cap:
                    self._push(turn, key)
                continue
            taken.append(row)
            if single:
                break
            turn = self._serve(key)
            if looked < self.cap and len(taken) < limit:
                self._push(turn, key)
        return taken
