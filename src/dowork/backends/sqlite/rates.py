"""Rate limits inside a claim's transaction: the start times every worker on the file shares.

Each limit of a queue keeps its last ``n`` start times in one ``dowork_rates`` row; a claim's
``FilePacer`` (a ``flow.Pacer``) reads those of the limits its due records fall under
(``Starts``) as it gives out a start per record, and its ``save`` writes back, in the same
transaction, the start times given out and the new ``run_at`` and ``slot`` of the records it
had to delay. The pacing is ``flow``'s, as ``MemoryBackend.claim``'s is.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from operator import itemgetter

from ..flow import Pacer
from .lanes import Due

__all__ = ["FilePacer", "Starts"]


class Starts:
    """The start times a queue's rate limits gave out, read and written in a claim's transaction.

    One ``dowork_rates`` row per limit holds its last ``n`` start times (a JSON list,
    ascending): enough for ``take_slot``, and what every worker on the file shares.
    """

    __slots__ = ("_conn", "_queue", "starts")

    def __init__(self, conn: sqlite3.Connection, queue: str) -> None:
        self._conn = conn
        self._queue = queue
        self.starts: dict[str, list[float]] = {}

    def __call__(self, key: str) -> list[float]:
        """The start times limit ``key`` gave out (read once a claim)."""
        starts = self.starts.get(key)
        if starts is None:
            row = self._conn.execute(
                "SELECT starts FROM dowork_rates WHERE queue = ? AND key = ?", (self._queue, key)
            ).fetchone()
            starts = self.starts[key] = [] if row is None else json.loads(row[0])
        return starts

    def save(self) -> None:
        """Write back the start times of the limits read."""
        if self.starts:
            self._conn.executemany(
                "INSERT OR REPLACE INTO dowork_rates (queue, key, starts) VALUES (?, ?, ?)",
                [
                    (self._queue, key, json.dumps(starts, separators=(",", ":")))
                    for key, starts in self.starts.items()
                ],
            )


class FilePacer(Pacer[Due]):
    """A claim's ``flow.Pacer`` whose start times are the file's; ``save`` writes its work."""

    __slots__ = ("_conn", "_file")

    def __init__(
        self,
        conn: sqlite3.Connection,
        queue: str,
        now: float,
        rates: Mapping[str, tuple[int, float]] | None,
    ) -> None:
        self._conn = conn
        self._file = Starts(conn, queue)
        super().__init__(now, rates, self._file, itemgetter(0, 2, 3))  # id, name, slot

    def save(self) -> None:
        """Write the start times given out and the records delayed (``run_at``, ``slot``)."""
        self._file.save()
        if self.delayed:
            self._conn.executemany(
                "UPDATE dowork_tasks SET run_at = ?1, slot = ?1 WHERE id = ?2", self.delayed
            )
