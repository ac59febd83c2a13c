"""Reading a queue's waiting records lane by lane and priority level by level, in SQL.

A lane is the records without a concurrency key, or those of one key; each lane's waiting
rows sit in a partial index ordered by ``(priority, run_at)``, so the most urgent due rows of
a level are one index range. ``due`` reads the ``count`` most urgent of a lane across its
levels, merged by ``rank`` in SQLite; the SQL here also finds a queue's keys and levels with
loose index scans (one probe each), its next due time (``NEXT_DUE_SQL``) and its records that
are never due (``NEVER_DUE_SQL``, ``NEVER_DUE_KEYED_SQL``: a malformed ``run_at``), so that no
query reads a row it does not need however big the backlog.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .rows import TIME_LIMIT
from .schema import KEYED, PLAIN, WAITING_SQL, waiting_sql

__all__ = [
    "LEVELS_SQL",
    "NEVER_DUE_KEYED_SQL",
    "NEVER_DUE_SQL",
    "NEXT_DUE_SQL",
    "PLAIN_LEVEL_SQL",
    "PLAIN_RANGE_SQL",
    "Due",
    "Row",
    "due",
    "key_levels_cte",
    "lane",
]

#: A due record as a claim reads it: ``(id, crashes, name, slot, rowid)``.
Due = tuple[str, int, str, float | None, *tuple[Any, ...]]
#: A due record as a key's turn reads it: ``(id, crashes, name, slot, run_at, priority, seq)``,
#: ``seq`` (the rowid) being push order.
Row = tuple[str, int, str, float | None, float, int, int]


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


LEVELS_SQL = _levels_sql(PLAIN)
_KEY_LEVELS_SQL = _levels_sql("concurrency_key = ?2")
#: The lowest and the highest priority of the queue's (``?1``) waiting records without a key,
#: as two columns (an index probe each): a claim reads them with the state of the turns, and
#: when they are equal ``due`` is told the lane's one level rather than walk the levels with
#: ``LEVELS_SQL`` (about 35k instructions a claim less).
PLAIN_RANGE_SQL = ", ".join(
    f"(SELECT {end}(priority) FROM dowork_tasks INDEXED BY dowork_ready"
    f" WHERE queue = ?1 AND {WAITING_SQL} AND {PLAIN})"
    for end in ("MIN", "MAX")
)


def key_levels_cte(chosen: str) -> str:
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


#: The earliest ``run_at`` of the queue's waiting records: of each level without a key, and
#: of each key's levels.
NEXT_DUE_SQL = (
    key_levels_cte("SELECT k FROM keys WHERE k IS NOT NULL")
    + " SELECT (SELECT MIN((SELECT MIN(run_at) FROM dowork_tasks WHERE queue = ?1"
    f" AND {WAITING_SQL} AND {PLAIN} AND priority = plain.p))"
    f" FROM ({LEVELS_SQL}) AS plain),"
    " (SELECT MIN((SELECT MIN(run_at) FROM dowork_tasks WHERE queue = ?1"
    f" AND {WAITING_SQL} AND concurrency_key = levels.k AND priority = levels.p))"
    " FROM levels WHERE levels.p IS NOT NULL)"
)
#: Waiting records of the queue (``?1``) that are never due: a ``run_at`` past
#: ``TIME_LIMIT`` or not a number (text sorts after every number). One index range per
#: priority level without a key, and per key and level.
NEVER_DUE_SQL = (
    f"SELECT rowid FROM dowork_tasks WHERE queue = ?1 AND {WAITING_SQL} AND {PLAIN}"
    f" AND priority IN ({LEVELS_SQL}) AND run_at > {TIME_LIMIT:.0e}"
)
NEVER_DUE_KEYED_SQL = (
    key_levels_cte("SELECT k FROM keys WHERE k IS NOT NULL")
    + " SELECT t.rowid FROM levels JOIN dowork_tasks t ON t.queue = ?1"
    f" AND {waiting_sql('t')} AND t.concurrency_key = levels.k"
    f" AND t.priority = levels.p AND t.run_at > {TIME_LIMIT:.0e}"
    " WHERE levels.p IS NOT NULL"
)

#: The columns ``due`` reads by its ``wide``, ``{seq}`` being the rowid (push order): a claim
#: without keys needs five under rate limits (``Due``, then the rowid), two without (the rowid
#: and ``crashes``: each column read costs the sqlite3 module about 1k instructions a row).
_DUE_COLUMNS = {
    None: "{seq}, crashes",
    False: "id, crashes, name, slot, {seq}",
    True: "id, crashes, name, slot, run_at, priority, {seq}",
}
#: The lane a ``due`` query reads: the records without a key, or those of key ``?5``.
_LANES = {True: PLAIN, False: "concurrency_key = ?5"}


def _one_level_sql(lane: str, columns: str) -> str:
    """The due records of a lane at one priority level (``?6``), most urgent first."""
    return (
        f"SELECT {columns} FROM dowork_tasks WHERE queue = ?1 AND {WAITING_SQL} AND {lane}"
        " AND priority = ?6 AND run_at <= ?2 ORDER BY run_at, rowid LIMIT ?3"
    )


_ONE_LEVEL_SQL = {
    (plain, wide): _one_level_sql(lane, _DUE_COLUMNS[wide].format(seq="rowid"))
    for plain, lane in _LANES.items()
    for wide in (None, False, True)
}
#: ``due``'s read of the lane without a key at one level, reading the columns ``{0}``.
PLAIN_LEVEL_SQL = _one_level_sql(PLAIN, "{0}")


def due(
    conn: sqlite3.Connection,
    queue: str,
    now: float,
    count: int,
    aging: float,
    key: str | None = None,
    wide: bool | None = False,
    levels: list[int] | None = None,
) -> list[Any]:
    """The ``count`` most urgent due records of a lane: those without a key, or of ``key``.

    The top ``count`` of each priority level in use, by ``(run_at, rowid)`` (an index range
    each), merged by ``(rank, rowid)``: the order ``flow.Turns`` takes a lane in.
    The merge runs in SQLite (same float arithmetic as ``flow.rank``), so Python only sees the
    ``count`` it needs; a single level is already in order. Rows are ``Row``s if ``wide``,
    else their first four columns (``Due``), or two if ``wide`` is None. ``levels``: the
    lane's priority levels in use, lowest first, if the caller knows them (else they are read).
    """
    if levels is None and key is None:
        levels = [row[0] for row in conn.execute(LEVELS_SQL, (queue,))]
    elif levels is None:
        levels = [row[0] for row in conn.execute(_KEY_LEVELS_SQL, (queue, key))]
    # (no key: "", unused, since the sqlite3 module binds None only after an adapter lookup)
    args = (queue, now, count, float(aging), "" if key is None else key, *levels)
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
        f"SELECT {_DUE_COLUMNS[wide].format(seq='seq')} FROM ({union})"
        " ORDER BY run_at - priority * ?4, seq LIMIT ?3",
        args,
    ).fetchall()


def lane(
    conn: sqlite3.Connection, queue: str, now: float, count: int, aging: float, key: str
) -> list[Row]:
    """The ``count`` most urgent due records of key ``key`` (``""``: of those without one)."""
    rows: list[Row] = due(conn, queue, now, count, aging, key or None, wide=True)
    return rows
