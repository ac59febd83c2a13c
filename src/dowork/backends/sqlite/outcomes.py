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

from .._protocol import Outcome, Settlement, late_applies, retention, uncharge
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


class Keep(NamedTuple):
    """How long finished records are kept: the backend's ``keep_finished`` and ``keep_dead``."""

    finished: float
    dead: float | None

    def of(self, outcome: Outcome | None, keep: float | None) -> float:
        """Seconds to keep a record finished with ``outcome`` (see ``retention``)."""
        return retention(outcome, keep, self.finished, self.dead)


def settle(conn: sqlite3.Connection, settlements: Sequence[Settlement], keep: Keep) -> list[str]:
    """Write outcomes in one transaction; return the ids of those refused (lease lost)."""
    refused: list[str] = []
    with transaction(conn):
        for s in settlements:
            try:
                written = _settle_one(conn, s, keep)
            except BAD_VALUE:
                written = _settle_malformed(conn, s, keep)  # the rest of the batch settles
            if not written:
                refused.append(s.id)
    return refused


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
    line = None if s.attempt is None else s.attempt + "\n"
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
