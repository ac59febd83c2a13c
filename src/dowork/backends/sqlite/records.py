"""Rows of ``dowork_tasks`` turned into ``Record``s, the protocol's view of a task.

``COLUMNS`` and ``record`` read a whole row (lookups, listings); ``CLAIMED_COLUMNS`` and
``claimed`` read what a claim's ``RETURNING`` gives back, fewer columns since the claim has
just set the others; ``LEASED_COLUMNS`` and ``leased`` fewer still, for a record on its first
attempt, whose other columns hold their defaults (``LEASED_COLUMNS`` ends with a flag saying
whether they do not: ``claimed`` reads that record again). The orders must match their column
lists, so they live side by side. A history is read back as sent (``_history.shown_history``:
a worker's lines are kept short).
"""

from __future__ import annotations

from typing import Any

from .._history import shown_history
from .._protocol import Record

__all__ = [
    "CLAIMED_COLUMNS",
    "COLUMNS",
    "LEASED_COLUMNS",
    "LEVEL_COLUMNS",
    "OTHERS",
    "claimed",
    "leased",
    "level_leased",
    "record",
]

COLUMNS = (
    "id, queue, name, payload, run_at, created_at, status, options, attempts, lease_until, "
    "owner, crashes, cancel_requested, error, reason, result, updated_at, finished_at, progress,"
    " history, priority, slot, concurrency_key, started, lost, charged"
)


def record(row: tuple[Any, ...]) -> Record:
    """A record from a row of ``COLUMNS``."""
    return Record(
        id=row[0],
        queue=row[1],
        name=row[2],
        payload=bytes(row[3]),
        run_at=row[4],
        created_at=row[5],
        status=row[6],
        options=row[7],
        attempts=row[8],
        lease_until=row[9],
        owner=row[10],
        crashes=row[11],
        cancel_requested=bool(row[12]),
        error=row[13],
        reason=row[14],
        result=None if row[15] is None else bytes(row[15]),
        updated_at=row[16],
        finished_at=row[17],
        progress=row[18],
        history=shown_history(row[19]),
        priority=row[20],
        slot=row[21],
        concurrency_key=row[22],
        started=row[23],
        lost=row[24],
        charged=row[25],
    )


#: The columns a claim reads back: the others it has just set (or knows, as the queue).
CLAIMED_COLUMNS = (
    "id, name, payload, run_at, created_at, options, attempts, crashes, cancel_requested, error,"
    " reason, result, finished_at, progress, history, priority, concurrency_key, started, lost"
)


def claimed(row: tuple[Any, ...], queue: str, now: float, lease_until: float, owner: str) -> Record:
    """A record as a claim leaves it, from its ``CLAIMED_COLUMNS`` (fewer values to convert).

    Built with positional arguments, in ``Record``'s field order (a claim builds one per
    record: keywords cost a name lookup each). A row passed the claim's readability test, so
    the payload and result are bytes already.
    """
    return Record(
        row[0],  # id
        queue,
        row[1],  # name
        row[2],  # payload
        row[3],  # run_at
        row[4],  # created_at
        "reserved",  # status
        row[5],  # options
        row[6],  # attempts
        lease_until,
        owner,
        row[7],  # crashes
        bool(row[8]),  # cancel_requested
        row[9],  # error
        row[10],  # reason
        row[11],  # result
        now,  # updated_at
        row[12],  # finished_at
        None,  # keep
        row[13],  # progress
        None,  # idempotency_key
        None,  # idempotency_until
        shown_history(row[14]),  # history
        row[15],  # priority
        row[16],  # concurrency_key
        None,  # slot (the claim clears it)
        row[17],  # started
        row[18],  # lost
    )


#: What a claim reads back of a record whose other columns hold their defaults (a task's first
#: attempt: no crash, start, error, result, progress or history, no cancel asked): half the
#: columns of ``CLAIMED_COLUMNS``, then the rowid and whether any of those others is set
#: (``typeof``, never ``IS NULL``: see ``rows.row_ok_sql``), when ``claimed`` reads it again.
LEASED_COLUMNS = (
    "id, name, payload, run_at, created_at, options, attempts, priority, concurrency_key, rowid,"
    " (crashes OR cancel_requested OR started OR lost OR typeof(coalesce(error, reason, result,"
    " finished_at, progress, history)) != 'null')"
)


#: What a claim of the lane without a key at one level (``claims._take_level``) reads of a due
#: record before its lease, whose ``UPDATE`` then reads nothing back: ``LEASED_COLUMNS`` less
#: what the claim knows (no key, the level's priority), with ``attempts + 1`` (as the lease makes
#: it), ``crashes`` and whether another column is set folded into one integer: ``2 * crashes +
#: (another set)`` in its high bits (from ``OTHERS``), ``attempts + 1`` in the low 32 (CHECKs keep
#: both under 2^31), so that a record on its first attempt reads ``attempts + 1`` alone, and one
#: with ``crashes >= n`` is one of at least ``n << 33``. The sqlite3 module releases and takes
#: back the GIL for each value of a row it reads (Python 3.11), some 350 instructions a value: 8
#: values a record, not 12.
LEVEL_COLUMNS = (
    "id, name, payload, run_at, created_at, options, rowid, (((crashes << 1) | (cancel_requested"
    " OR started OR lost OR typeof(coalesce(error, reason, result, finished_at, progress,"
    " history)) != 'null')) << 32) | (attempts + 1)"
)
#: ``LEVEL_COLUMNS``'s last value from here on says a column of ``LEASED_COLUMNS``'s flag is set
#: (crashes among them).
OTHERS = 1 << 32


def level_leased(
    row: tuple[Any, ...], queue: str, now: float, lease_until: float, owner: str, priority: int
) -> Record | None:
    """A record as a claim leaves it, from its ``LEVEL_COLUMNS``; None if another column is set.

    Positional, in ``Record``'s field order, as ``claimed``. A record past its first attempt
    (None here) is read again whole (``CLAIMED_COLUMNS``).
    """
    attempts = row[7]
    if attempts >= OTHERS:
        return None
    return Record(
        row[0], queue, row[1], row[2], row[3], row[4], "reserved", row[5], attempts,
        lease_until, owner, 0, False, None, None, None, now, None, None, None, None, None,
        None, priority, None, None, 0, 0,
    )  # fmt: skip


def leased(row: tuple[Any, ...], queue: str, now: float, lease_until: float, owner: str) -> Record:
    """A record as a claim leaves it, from its ``LEASED_COLUMNS`` (its other columns unset).

    Positional, in ``Record``'s field order, as ``claimed``.
    """
    return Record(
        row[0],  # id
        queue,
        row[1],  # name
        row[2],  # payload
        row[3],  # run_at
        row[4],  # created_at
        "reserved",  # status
        row[5],  # options
        row[6],  # attempts
        lease_until,
        owner,
        0,  # crashes
        False,  # cancel_requested
        None,  # error
        None,  # reason
        None,  # result
        now,  # updated_at
        None,  # finished_at
        None,  # keep
        None,  # progress
        None,  # idempotency_key
        None,  # idempotency_until
        None,  # history
        row[7],  # priority
        row[8],  # concurrency_key
        None,  # slot (the claim clears it)
        0,  # started
        0,  # lost
    )
