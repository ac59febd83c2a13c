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

from .._protocol import Record
from ..flow import Pacer, alone, alone_count, pace, room
from ..store import ClaimRequest
from . import rates, records
from .connection import transaction
from .lanes import Due, due
from .rows import UNREADABLE, Unreadable, bury
from .schema import HELD_SQL, WAITING_SQL
from .turns import TURNS_STATE_SQL, Turns, remember_keyed, remember_plain

__all__ = ["claim"]

#: A due row's ``crashes`` (``lanes.Due``).
_crashes = itemgetter(1)


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
        keyed, keyed_turns, plain_served = conn.execute(TURNS_STATE_SQL, (c.queue,)).fetchone()
        pacer = rates.FilePacer(conn, c.queue, c.now, c.rates) if c.rates else None
        turns: Turns | None = None
        left = False
        if keyed:
            turns = Turns(conn, c.queue, c.now, limit, c.aging, c.per_key)
            turns.add_new(plain_served)
            asking = None if pacer is None else pacer.may_start
            picked = [row[6] for row in turns.take(limit, c.alone_from, asking)]
        else:
            left, picked = _pick(conn, c, limit, pacer)
        if pacer is not None:
            pacer.save()
        claimed = _lease(conn, c, picked, ok_sql)
        if turns is not None:
            remember_keyed(conn, c.queue, turns.served)
        else:
            served_now = bool(claimed) and not alone(claimed[0].crashes, c.alone_from)
            remember_plain(conn, c.queue, served_now, left, keyed_turns, plain_served)
    return claimed


def _room(conn: sqlite3.Connection, c: ClaimRequest) -> int:
    """How many records the claim may take: ``limit``, less under ``max_running``."""
    if c.max_running is None:
        return c.limit
    running: int = conn.execute(
        f"SELECT COUNT(*) FROM dowork_tasks WHERE queue = ? AND {HELD_SQL}", (c.queue,)
    ).fetchone()[0]
    return room(c.limit, c.max_running, running)


def _pick(
    conn: sqlite3.Connection, c: ClaimRequest, limit: int, pacer: Pacer[Due] | None
) -> tuple[bool, list[int]]:
    """Whether a due record looked at is left waiting, and the rowids to claim (no keys)."""
    if pacer is None:  # no rate limit: every record looked at is claimed, up to a repeat crasher
        # (rowid, crashes) only, and one more: is any left?
        looked: list[tuple[int, int]] = due(conn, c.queue, c.now, limit + 1, c.aging, wide=None)
        count = alone_count(looked[:limit], c.alone_from, _crashes)
        return len(looked) > count, [row[0] for row in looked[:count]]
    seen: list[Due] = due(conn, c.queue, c.now, 2 * limit, c.aging)
    taken = pace(seen, limit, c.alone_from, _crashes, pacer.may_start)
    return len(seen) > len(taken), [row[4] for row in taken]


def _lease(
    conn: sqlite3.Connection, c: ClaimRequest, picked: list[int], ok_sql: str
) -> list[Record]:
    """Lease the picked records, in order; raise ``Unreadable`` if one cannot be read.

    By rowid (no lookup of the id index). On a file whose rows are all readable (``ok_sql``
    is ``"1"``: STRICT, with dowork's CHECKs) the ``UPDATE`` reads back ``LEASED_COLUMNS``,
    and reads the whole ``CLAIMED_COLUMNS`` again only of the records past their first
    attempt (a retry, a crash, a cancel asked): about 10k instructions a record less.
    """
    if not picked:
        return []
    until = c.now + c.lease
    marks = ",".join("?" * len(picked))
    args = (until, c.owner, c.now, *picked)
    leased: dict[int, Record] = {}
    if ok_sql != "1":
        returning = f"{records.CLAIMED_COLUMNS}, rowid, {ok_sql}"
        rows = conn.execute(_LEASE_SQL.format(marks, returning), args).fetchall()
        if len(rows) != len(picked) or not all(row[-1] for row in rows):
            raise Unreadable(f"claim of {c.queue!r}: a record cannot be read")
    else:
        rows = conn.execute(_LEASE_SQL.format(marks, records.LEASED_COLUMNS), args).fetchall()
        if len(rows) != len(picked):
            raise Unreadable(f"claim of {c.queue!r}: a record cannot be read")
        for row in rows:
            if not row[10]:
                leased[row[9]] = records.leased(row, c.queue, c.now, until, c.owner)
        again = [row[9] for row in rows if row[10]]  # past their first attempt: read them whole
        rows = []
        if again:
            rows = conn.execute(
                f"SELECT {records.CLAIMED_COLUMNS}, rowid FROM dowork_tasks"
                f" WHERE rowid IN ({','.join('?' * len(again))})",
                again,
            ).fetchall()
    for row in rows:
        leased[row[19]] = records.claimed(row, c.queue, c.now, until, c.owner)
    return [leased[rowid] for rowid in picked]


#: The lease of the picked records (``{0}``: their rowids' marks), reading back ``{1}``.
_LEASE_SQL = (
    "UPDATE dowork_tasks SET status = 'reserved', attempts = attempts + 1,"
    " lease_until = ?, owner = ?, updated_at = ?, slot = NULL"
    " WHERE rowid IN ({0}) RETURNING {1}"
)
