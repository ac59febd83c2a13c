"""Writing settlements: the outcomes, retries and start marks workers send back, in SQL.

``settle`` is ``Store.settle`` on the store's thread: one transaction for a batch, each
settlement applied only to a record still leased under its token (the attempt number). A
settlement that arrives after its lease lapsed takes back the crash it was charged with and,
when its record has not moved on, still applies (``late_applies``). An outcome SQLite cannot
store (text that is not valid Unicode, a time the table refuses) dead-letters its task as
``malformed`` instead of failing the batch.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

from .._history import kept_line
from .._protocol import Outcome, Settlement, late_applies, retention, uncharge
from ..store import Burials
from .connection import transaction
from .rows import BAD_VALUE
from .schema import HELD_SQL

__all__ = ["Keep", "settle"]

_FINAL = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.FAILED: "failed",
    Outcome.CANCELLED: "cancelled",
    Outcome.DEAD: "dead",
}
#: ``_FINAL`` by the outcome's value: a member's own hash is a Python call (``Enum.__hash__``).
_FINAL_STATUS = {outcome.value: status for outcome, status in _FINAL.items()}
_DEAD = Outcome.DEAD.value


class Keep(NamedTuple):
    """How long finished records are kept: the backend's ``keep_finished`` and ``keep_dead``."""

    finished: float
    dead: float | None

    def of(self, outcome: Outcome | None, keep: float | None) -> float:
        """Seconds to keep a record finished with ``outcome`` (see ``retention``)."""
        return retention(outcome, keep, self.finished, self.dead)


def settle(
    conn: sqlite3.Connection,
    settlements: Sequence[Settlement],
    keep: Keep,
    buried: Burials | None = None,
) -> list[str]:
    """Write outcomes in one transaction; return the ids of those refused (lease lost).

    They are written in order; a run of finished outcomes of distinct records (the common
    batch), all kept or all forgotten, is written by one statement (``_settle_finished``),
    which is the same as writing them one by one since each touches only its own record.
    If such a statement does not write its whole run (a lease lapsed or lost, a value SQLite
    refuses), the transaction is rolled back and the batch written again one by one. The
    tasks dead-lettered because their outcome cannot be stored go to ``buried`` once the
    transaction is committed.
    """
    try:
        refused, found = _settle_batch(conn, settlements, keep, True)
    except _OneByOne:
        refused, found = _settle_batch(conn, settlements, keep, False)
    if found and buried is not None:
        buried.extend(found)
    return refused


class _OneByOne(Exception):
    """A run's statement did not write its whole run: write the batch one by one instead."""


def _settle_batch(
    conn: sqlite3.Connection, settlements: Sequence[Settlement], keep: Keep, runs: bool
) -> tuple[list[str], Burials]:
    """``settle``'s transaction, with runs in one statement each if ``runs``; the refused ids."""
    refused: list[str] = []
    found: Burials = []
    with transaction(conn):
        i = 0
        while i < len(settlements):
            size, values, forget = _finished_run(settlements, i, keep) if runs else (0, [], False)
            if size > 1:
                _settle_finished(conn, size, values, forget)
                i += size
                continue
            if not _settle_checked(conn, settlements[i], keep, found):
                refused.append(settlements[i].id)
            i += 1
    return refused, found


def _settle_checked(conn: sqlite3.Connection, s: Settlement, keep: Keep, found: Burials) -> bool:
    """``_settle_one``, or dead-letter the task if SQLite refuses its outcome's values.

    A task so dead-lettered is added to ``found``.
    """
    try:
        return _settle_one(conn, s, keep)
    except BAD_VALUE:
        written = _settle_malformed(conn, s, keep)  # the rest of the batch settles
    if written:
        found.append((s.id, "malformed"))
    return written


#: How many outcomes one statement finishes, at most 256. A run is padded to the next of these
#: sizes with rows that match no record, so that SQLite prepares nineteen statements, once. A
#: padding row costs about 7k instructions (its ten values bound, a row through the join): up
#: to 64 (a worker's batches) the sizes step by 4.
_RUN_SIZES = (2, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64, 128, 256)
#: The values of one finished outcome, in ``_FINISH_SQL``'s column order.
_FINISH_WIDTH = 10
#: A padding row: its id ('') matches no record (the table refuses an empty id); ints, since
#: sqlite3 binds ints, floats, str and bytearray at once, where a None or a bytes first looks
#: for an adapter (about 1 us a value: two attribute lookups that format an AttributeError).
_NO_ROW: tuple[object, ...] = ("",) + (0,) * (_FINISH_WIDTH - 1)
#: The outcome's result, error, reason and history line are bound as 0 for None (and a result
#: as a bytearray): ``NULLIF(x, 0)`` gives NULL back, and no blob or text equals 0.
_FINISH_SQL = (
    "UPDATE dowork_tasks SET"
    " started = started + (CASE WHEN status = 'reserved' THEN s.column3 ELSE 0 END),"
    " status = s.column4, result = NULLIF(s.column5, 0), error = NULLIF(s.column6, 0),"
    " reason = NULLIF(s.column7, 0), lease_until = NULL, owner = NULL, updated_at = s.column8,"
    " finished_at = s.column8, expires_at = s.column9,"
    " history = CASE s.column10 WHEN 0 THEN history ELSE COALESCE(history || s.column10,"
    " s.column10) END"
    " FROM (VALUES {values}) AS s"
    f" WHERE id = s.column1 AND {HELD_SQL} AND attempts = s.column2"
)
#: A run of finished outcomes kept 0 s: their records deleted, each only under its lease.
_FORGET_SQL = (
    "DELETE FROM dowork_tasks WHERE rowid IN (SELECT t.rowid FROM (VALUES {values}) AS s"
    f" JOIN dowork_tasks t ON t.id = s.column1 WHERE t.attempts = s.column2 AND t.{HELD_SQL})"
)

#: The statement size a run of each length is padded to (index: the length).
_RUN_SIZE = [next(n for n in _RUN_SIZES if n >= count) for count in range(_RUN_SIZES[-1] + 1)]
#: ``_FINISH_SQL`` and ``_FORGET_SQL`` of each size, written once: a statement's text built
#: again for each batch cost a few thousand instructions (and sqlite3 hashing it again).
_FINISHES = {
    n: _FINISH_SQL.format(values=",".join(["(" + ",".join("?" * _FINISH_WIDTH) + ")"] * n))
    for n in _RUN_SIZES
}
_FORGETS = {n: _FORGET_SQL.format(values=",".join(["(?,?)"] * n)) for n in _RUN_SIZES}


def _finished_run(
    settlements: Sequence[Settlement], start: int, keep: Keep
) -> tuple[int, list[object], bool]:
    """The finished outcomes of distinct records from ``start`` on: how many, and their values.

    All kept a while, or all forgotten (kept 0 s: deleted), as the first is (the bool). The
    values are ``_FINISH_SQL``'s (``_FORGET_SQL``'s for forgotten ones), in one pass over them.
    """
    count = 0
    values: list[object] = []
    ids: set[str] = set()
    forget: bool | None = None
    finished, dead = keep
    for s in settlements[start : start + _RUN_SIZES[-1]]:
        outcome = s.outcome._value_
        status = _FINAL_STATUS.get(outcome)
        task_id = s.id
        if status is None or task_id in ids:
            break
        seconds = s.keep  # (keep.of, inline: it runs for each outcome)
        if seconds is None:
            seconds = dead if outcome == _DEAD and dead is not None else finished
        gone = seconds <= 0
        if forget is None:
            forget = gone
        elif gone != forget:
            break
        count += 1
        ids.add(task_id)
        if gone:
            values += (task_id, s.token)
            continue
        error, reason, line, now = s.error, s.reason, kept_line(s), s.now
        result: object = s.result
        if type(result) is bytes:  # (anything else is bound as it is, and may be refused)
            result = bytearray(result)
        values += (
            task_id, s.token, int(s.ran), status, 0 if result is None else result,
            0 if error is None else error, 0 if reason is None else reason, now, now + seconds,
            0 if line is None else line,
        )  # fmt: skip
    return count, values, bool(forget)


def _settle_finished(
    conn: sqlite3.Connection, count: int, values: list[object], forget: bool
) -> None:
    """Write a run of ``count`` finished outcomes (``_finished_run``'s ``values``) at once.

    An ``UPDATE``, or a ``DELETE`` of a run kept 0 s (``forget``), which returns nothing: its
    count of rows written tells whether it wrote every one (no row to fetch per record). If
    not (a lease lapsed or lost), or if a value cannot be stored, it raises ``_OneByOne``, and
    ``settle`` rolls back and writes the batch again one by one (no savepoint here: two
    statements a batch less).
    """
    size = _RUN_SIZE[count]
    if forget:
        values += _NO_ROW[:2] * (size - count)
        sql = _FORGETS[size]
    else:
        values += _NO_ROW * (size - count)
        sql = _FINISHES[size]
    try:
        written = conn.execute(sql, values).rowcount
    except BAD_VALUE as exc:  # (the statement changed nothing)
        raise _OneByOne from exc
    if written != count:
        raise _OneByOne


def _settle_one(conn: sqlite3.Connection, s: Settlement, keep: Keep, late: bool = True) -> bool:
    """Apply one settlement to its leased record; False if refused (see ``Store.settle``)."""
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
    line = kept_line(s)
    if s.outcome is Outcome.RETRY:
        cur = conn.execute(
            f"UPDATE dowork_tasks SET {started}, status = 'retrying', run_at = ?, error = ?,"
            " lease_until = NULL, owner = NULL, updated_at = ?,"
            " payload = COALESCE(?, payload),"
            f" history = COALESCE(history || ?, ?, history) {held}",
            (ran, s.run_at, s.error, s.now, s.payload, line, line, s.id, s.token),
        )
    else:
        seconds = keep.of(s.outcome, s.keep)
        if seconds <= 0:
            cur = conn.execute(f"DELETE FROM dowork_tasks {held}", (s.id, s.token))
        else:
            cur = conn.execute(
                f"UPDATE dowork_tasks SET {started}, status = ?, result = ?, error = ?,"
                " reason = ?, lease_until = NULL, owner = NULL, updated_at = ?,"
                " finished_at = ?, expires_at = ?,"
                f" history = COALESCE(history || ?, ?, history) {held}",
                (
                    ran, _FINAL[s.outcome], s.result, s.error, s.reason, s.now, s.now,
                    s.now + seconds, line, line, s.id, s.token,
                ),
            )  # fmt: skip
    if cur.rowcount > 0:
        return True
    return late and _late(conn, s) and _settle_one(conn, s, keep, late=False)


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
        "UPDATE dowork_tasks SET crashes = crashes - 1, lost = lost + 1, charged = ? WHERE id = ?",
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


def _settle_malformed(conn: sqlite3.Connection, s: Settlement, keep: Keep) -> bool:
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
            (why, now, now, now + keep.of(Outcome.DEAD, None), s.id, s.token),
        )
    except BAD_VALUE:
        return False
    return cur.rowcount > 0
