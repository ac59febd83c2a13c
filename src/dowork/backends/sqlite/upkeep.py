"""Maintenance in SQL: lapsed leases, records that can never run, and finished records past keeping.

``reap`` is the reaping step of ``Store.upkeep`` on the store's thread: a lapsed lease on a
record that never started puts it back in line (lost, not a crash); one on a running record
charges a crash to its attempt, and past the crash budget dead-letters it
(``crashed_worker``). It also buries the waiting records whose ``run_at`` is never due
(malformed), which no claim would read. ``purge_finished``, the purging step, deletes
finished records and idempotency keys past their retention and gives the freed pages back to
the file system.
"""

from __future__ import annotations

import sqlite3

from .._protocol import WHILE_UNFINISHED, charge
from .connection import transaction
from .lanes import NEVER_DUE_KEYED_SQL, NEVER_DUE_SQL
from .rows import bury
from .schema import HELD_SQL, waiting_sql

__all__ = ["purge_finished", "reap"]


def reap(
    conn: sqlite3.Connection, queue: str, now: float, crash_budget: int, keep_dead: float
) -> tuple[int, int, list[str]]:
    """Requeue expired leases, dead-letter repeat crashers: ``(requeued, dead, buried)``.

    ``buried``: the ids of the records never due, dead-lettered ``malformed``.
    """
    with transaction(conn):
        found = _bury_never_due(conn, queue, now, keep_dead)
        # A lapsed lease on a task that never started is not a crash: lost, back in line
        # (run_at kept: back to its place at the head of the queue).
        requeued = conn.execute(
            "UPDATE dowork_tasks SET status = 'pending', lost = lost + 1,"
            " lease_until = NULL, owner = NULL, updated_at = ?"
            f" WHERE queue = ? AND {HELD_SQL} AND status = 'reserved' AND lease_until < ?",
            (now, queue, now),
        ).rowcount
        crashed = conn.execute(
            "SELECT id, attempts, crashes, charged FROM dowork_tasks"
            f" WHERE queue = ? AND {HELD_SQL} AND status = 'running' AND lease_until < ?",
            (queue, now),
        ).fetchall()
        dead = 0
        until = now + keep_dead
        for task_id, attempts, crashes, charged in crashed:
            crashes += 1
            charged = charge(charged, attempts)
            if crashes >= crash_budget:
                dead += 1
                conn.execute(
                    "UPDATE dowork_tasks SET status = 'dead', reason = 'crashed_worker',"
                    " error = ?, crashes = ?, charged = ?, lease_until = NULL, owner = NULL,"
                    " updated_at = ?, finished_at = ?, expires_at = ? WHERE id = ?",
                    (
                        f"the worker running it stopped renewing its lease {crashes} times",
                        crashes, charged, now, now, until, task_id,
                    ),
                )  # fmt: skip
            else:
                requeued += 1
                conn.execute(
                    "UPDATE dowork_tasks SET status = 'retrying', crashes = ?, charged = ?,"
                    " lease_until = NULL, owner = NULL, updated_at = ? WHERE id = ?",
                    (crashes, charged, now, task_id),
                )
    return requeued, dead, found


def _bury_never_due(
    conn: sqlite3.Connection, queue: str, now: float, keep_dead: float
) -> list[str]:
    """Dead-letter the queue's waiting records whose ``run_at`` is never due (malformed).

    A claim never reads them, so maintenance looks for them: a few index probes. Returns
    the ids buried.
    """
    found = [row[0] for row in conn.execute(NEVER_DUE_SQL, (queue,))]
    found += [row[0] for row in conn.execute(NEVER_DUE_KEYED_SQL, (queue,))]
    if not found:
        return []
    where = f"rowid IN ({','.join('?' * len(found))})"
    return bury(conn, where, found, now, keep_dead)


def purge_finished(conn: sqlite3.Connection, now: float) -> int:
    """Delete finished records past their retention and return freed pages to the OS."""
    with transaction(conn):
        deleted = conn.execute(
            "DELETE FROM dowork_tasks WHERE expires_at IS NOT NULL AND expires_at < ?", (now,)
        ).rowcount
        conn.execute("DELETE FROM dowork_idempotency WHERE expires_at < ?", (now,))
        conn.execute(  # unique keys whose task finished (or is gone)
            "DELETE FROM dowork_idempotency WHERE expires_at = ? AND NOT EXISTS (SELECT 1"
            " FROM dowork_tasks t WHERE t.id = dowork_idempotency.task_id"
            f" AND ({waiting_sql('t')} OR t.{HELD_SQL}))",
            (WHILE_UNFINISHED,),
        )
    if deleted:
        conn.execute("PRAGMA incremental_vacuum")
    return deleted
