"""One claim, in one ``BEGIN IMMEDIATE`` transaction: pick the most urgent due records, lease them.

``claim`` is ``Store.claim`` on the store's thread, given its ``ClaimRequest``. It caps the
claim by ``max_running``, then picks records: a queue without concurrency keys reads its due
records in rank order (``lanes.due``) and takes them up to a repeat crasher (claimed alone:
``flow.alone_count``) or, under rate limits, those a ``flow.Pacer`` lets start (``flow.pace``);
a queue with keys is walked key by key (``turns.Turns``, a ``flow.Turns``). The picked rows
are leased with one ``UPDATE ... RETURNING``, which also tests that each is readable
(``rows.claim_test``); a row that is not rolls the claim back, ``rows.bury`` dead-letters
the unreadable rows and the claim runs again. The turns are then written for the next claim.
"""

from __future__ import annotations

import sqlite3
from operator import itemgetter
from typing import Any, cast

from .._protocol import Record
from ..flow import Pacer, alone, alone_count, pace, room
from ..store import ClaimRequest
from . import rates, records
from .connection import transaction
from .lanes import PLAIN_LEVEL_SQL, PLAIN_RANGE_SQL, Due, due
from .rows import UNREADABLE, Unreadable, bury
from .schema import HELD_SQL, WAITING_SQL
from .turns import TURNS_STATE_SQL, Turns, remember_keyed, remember_plain

__all__ = ["claim"]

#: The state of the turns (``turns.TURNS_STATE_SQL``), then the lowest and the highest
#: priority waiting without a key (``lanes.PLAIN_RANGE_SQL``): one statement.
_STATE_SQL = f"{TURNS_STATE_SQL}, {PLAIN_RANGE_SQL}"
#: A due row's ``crashes`` (``lanes.Due``), and a ``records.LEVEL_COLUMNS`` row's last value (at
#: least ``n << 33`` when ``crashes >= n``).
_crashes = itemgetter(1)
_packed = itemgetter(7)


def claim(conn: sqlite3.Connection, c: ClaimRequest, ok_sql: str, keep_dead: float) -> list[Record]:
    """Claim; if a row cannot be read, dead-letter the unreadable rows and claim again.

    ``ok_sql`` is the file's readability test (``rows.claim_test``), ``keep_dead`` how long a
    buried row is kept; the ids buried go to ``c.buried`` as each round commits. Each round
    buries at least one row (else the error is raised), so this ends.
    """
    while True:
        try:
            return _claim_once(conn, c, ok_sql)
        except UNREADABLE as exc:
            if isinstance(exc, sqlite3.OperationalError) and "decode" not in str(exc):
                raise
            with transaction(conn):
                buried = bury(
                    conn,
                    f"queue = ? AND {WAITING_SQL} AND run_at <= ?",
                    (c.queue, c.now),
                    c.now,
                    keep_dead,
                )
            if not buried:
                raise
            if c.buried is not None:
                c.buried.extend((task_id, "malformed") for task_id in buried)


def _claim_once(conn: sqlite3.Connection, c: ClaimRequest, ok_sql: str) -> list[Record]:
    with transaction(conn):
        limit = _room(conn, c)
        if limit <= 0:
            return []
        state = conn.execute(_STATE_SQL, (c.queue,)).fetchone()
        keyed, keyed_turns, plain_served, low, high = state
        turns: Turns | None = None
        left = False
        if keyed:
            turns = Turns(conn, c.queue, c.now, limit, c.aging, c.per_key)
            turns.add_new(plain_served)
            claimed = _take(conn, c, limit, ok_sql, turns)
        elif not c.rates and low == high and ok_sql == "1":  # the common claim
            left, claimed = _take_level(conn, c, limit, low)
        else:
            levels = None if low != high else [] if low is None else [low]
            left, claimed = _take_plain(conn, c, limit, ok_sql, levels)
        if turns is not None:
            remember_keyed(conn, c.queue, turns.served)
        else:
            served_now = bool(claimed) and not alone(claimed[0].crashes, c.alone_from)
            remember_plain(conn, c.queue, served_now, left, keyed_turns, plain_served)
    return claimed


def _take(
    conn: sqlite3.Connection, c: ClaimRequest, limit: int, ok_sql: str, turns: Turns
) -> list[Record]:
    """Lease the records a walk of the keys in turn picks (``turns.Turns``)."""
    pacer = rates.FilePacer(conn, c.queue, c.now, c.rates) if c.rates else None
    asking = None if pacer is None else pacer.may_start
    picked = [row[6] for row in turns.take(limit, c.alone_from, asking)]
    if pacer is not None:
        pacer.save()
    return _lease(conn, c, picked, ok_sql)


def _take_plain(
    conn: sqlite3.Connection, c: ClaimRequest, limit: int, ok_sql: str, levels: list[int] | None
) -> tuple[bool, list[Record]]:
    """Whether a due record looked at is left waiting, and the records leased (no keys)."""
    pacer = rates.FilePacer(conn, c.queue, c.now, c.rates) if c.rates else None
    left, picked = _pick(conn, c, limit, pacer, levels)
    if pacer is not None:
        pacer.save()
    return left, _lease(conn, c, picked, ok_sql)


def _take_level(
    conn: sqlite3.Connection, c: ClaimRequest, limit: int, level: int | None
) -> tuple[bool, list[Record]]:
    """``_take_plain`` of a STRICT file's lane without a key at one level, no rate limit.

    The read of the due records takes what ``records.level_leased`` needs (``LEVEL_COLUMNS``),
    so the ``UPDATE`` that leases them reads nothing back: a ``RETURNING`` costs SQLite a
    temporary table and the sqlite3 module the same values again (about 8k instructions a
    record less).
    """
    if level is None:
        return False, []
    args = (c.queue, c.now, limit + 1, 0, "", level)
    looked = conn.execute(_LEVEL_READ_SQL, args).fetchall()
    alone_from = None if c.alone_from is None else c.alone_from << 33  # (see LEVEL_COLUMNS)
    count = alone_count(looked[:limit], alone_from, _packed)
    rows = looked[:count]
    if not rows:
        return len(looked) > count, []
    until = c.now + c.lease
    lease = _LEASES.get(count) or _lease_sql(count)
    if conn.execute(lease, (until, c.owner, c.now, *[row[6] for row in rows])).rowcount != count:
        raise Unreadable(f"claim of {c.queue!r}: a record cannot be read")
    queue, now, owner = c.queue, c.now, c.owner
    got = [records.level_leased(row, queue, now, until, owner, level) for row in rows]
    if None in got:  # (past its first attempt: read again whole, as ``_leased`` does)
        again = [row[6] for row, record in zip(rows, got, strict=True) if record is None]
        whole = _whole(conn, c, again, until)
        got = [whole[row[6]] if r is None else r for row, r in zip(rows, got, strict=True)]
    return len(looked) > count, cast(list[Record], got)


def _room(conn: sqlite3.Connection, c: ClaimRequest) -> int:
    """How many records the claim may take: ``limit``, less under ``max_running``."""
    if c.max_running is None:
        return c.limit
    running: int = conn.execute(
        f"SELECT COUNT(*) FROM dowork_tasks WHERE queue = ? AND {HELD_SQL}", (c.queue,)
    ).fetchone()[0]
    return room(c.limit, c.max_running, running)


def _pick(
    conn: sqlite3.Connection,
    c: ClaimRequest,
    limit: int,
    pacer: Pacer[Due] | None,
    levels: list[int] | None,
) -> tuple[bool, list[int]]:
    """Whether a due record looked at is left waiting, and the rowids to claim (no keys).

    ``levels``: the priority levels of the lane, if known (see ``lanes.PLAIN_RANGE_SQL``).
    """
    if pacer is None:  # no rate limit: every record looked at is claimed, up to a repeat crasher
        # (rowid, crashes) only, and one more: is any left?
        looked: list[tuple[int, int]] = due(
            conn, c.queue, c.now, limit + 1, c.aging, wide=None, levels=levels
        )
        count = alone_count(looked[:limit], c.alone_from, _crashes)
        return len(looked) > count, [row[0] for row in looked[:count]]
    seen: list[Due] = due(conn, c.queue, c.now, 2 * limit, c.aging, levels=levels)
    taken = pace(seen, limit, c.alone_from, _crashes, pacer.may_start)
    return len(seen) > len(taken), [row[4] for row in taken]


def _lease(
    conn: sqlite3.Connection, c: ClaimRequest, picked: list[int], ok_sql: str
) -> list[Record]:
    """Lease the picked records, in order; raise ``Unreadable`` if one cannot be read.

    By rowid (no lookup of the id index). On a file whose rows are all readable (``ok_sql``
    is ``"1"``: STRICT, with dowork's CHECKs) the ``UPDATE`` reads back ``LEASED_COLUMNS``
    (see ``_leased``); on another, the whole ``CLAIMED_COLUMNS`` and the readability test.
    """
    if not picked:
        return []
    until = c.now + c.lease
    marks = ",".join("?" * len(picked))
    args = (until, c.owner, c.now, *picked)
    if ok_sql == "1":
        returning = f" RETURNING {records.LEASED_COLUMNS}"
        rows = conn.execute(_LEASE_SQL.format(marks, returning), args).fetchall()
        if len(rows) != len(picked):
            raise Unreadable(f"claim of {c.queue!r}: a record cannot be read")
        return _leased(conn, c, rows, picked, until)
    returning = f" RETURNING {records.CLAIMED_COLUMNS}, rowid, {ok_sql}"
    rows = conn.execute(_LEASE_SQL.format(marks, returning), args).fetchall()
    if len(rows) != len(picked) or not all(row[-1] for row in rows):
        raise Unreadable(f"claim of {c.queue!r}: a record cannot be read")
    leased = {row[19]: records.claimed(row, c.queue, c.now, until, c.owner) for row in rows}
    return [leased[rowid] for rowid in picked]


def _leased(
    conn: sqlite3.Connection,
    c: ClaimRequest,
    rows: list[Any],
    picked: list[int],
    until: float,
) -> list[Record]:
    """The records of leased rows of ``LEASED_COLUMNS``, in ``picked`` order.

    Those past their first attempt (a retry, a crash, a cancel asked: the last column is
    set) are read again whole, ``CLAIMED_COLUMNS``: about 10k instructions a record less for
    the others.
    """
    leased: dict[int, Record] = {}
    again = []
    for row in rows:
        if row[10]:
            again.append(row[9])
        else:
            leased[row[9]] = records.leased(row, c.queue, c.now, until, c.owner)
    if again:
        leased.update(_whole(conn, c, again, until))
    return [leased[rowid] for rowid in picked]


def _whole(
    conn: sqlite3.Connection, c: ClaimRequest, rowids: list[int], until: float
) -> dict[int, Record]:
    """The leased records of these rowids by rowid, read whole (``CLAIMED_COLUMNS``)."""
    rows = conn.execute(
        f"SELECT {records.CLAIMED_COLUMNS}, rowid FROM dowork_tasks"
        f" WHERE rowid IN ({','.join('?' * len(rowids))})",
        rowids,
    ).fetchall()
    return {row[19]: records.claimed(row, c.queue, c.now, until, c.owner) for row in rows}


#: The lease of the picked records (``{0}``: their rowids' marks), then ``{1}`` (a RETURNING).
_LEASE_SQL = (
    "UPDATE dowork_tasks SET status = 'reserved', attempts = attempts + 1,"
    " lease_until = ?, owner = ?, updated_at = ?, slot = NULL"
    " WHERE rowid IN ({0}){1}"
)
#: ``_take_level``'s read of the due records (``?6``: the level), with what leasing needs.
_LEVEL_READ_SQL = PLAIN_LEVEL_SQL.format(records.LEVEL_COLUMNS)
#: ``_LEASE_SQL`` without a RETURNING, by the count of records leased (up to 1024): written once.
_LEASES: dict[int, str] = {}


def _lease_sql(count: int) -> str:
    """``_LEASE_SQL`` of ``count`` records without a RETURNING, kept in ``_LEASES``."""
    sql = _LEASE_SQL.format(",".join("?" * count), "")
    if count <= 1024:
        _LEASES[count] = sql
    return sql
