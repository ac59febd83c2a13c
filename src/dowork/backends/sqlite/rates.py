"""Rate limits inside a claim's transaction: the start times every worker on the file shares.

Each limit of a queue keeps its last ``n`` start times in one ``dowork_rates`` row; a claim
reads those of the limits its due records fall under (``Starts``), asks ``take_slot`` for a
start per record (``Pacer``) and writes back, in the same transaction, the start times it gave
out and the new ``run_at`` and ``slot`` of the records it had to delay. The arithmetic is the
shared ``take_slot``, so the SQLite store paces exactly as ``MemoryBackend.claim`` does.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping

from .._protocol import rate_key, take_slot
from .lanes import Due

__all__ = ["Pacer"]


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
        """Give out the next start time of limit ``key`` (see ``Store.claim``)."""
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


class Pacer:
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

    def may_start(self, row: Due) -> bool:
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
