"""The SQLite store's tables and indexes, and the upgrade of files made by an older dowork.

``SCHEMA`` creates the tables (``STRICT``, with ``CHECK``s that keep out values a worker
cannot read) and the indexes by creation and expiry; ``migrate`` adds the columns an older
file lacks and swaps the partial indexes (``INDEXES``: of the waiting, the leased and the
other rows, for claims, the reaper and listings) for their current shape. ``install`` does
both when a file is opened. The SQL fragments that name a status set or a lane
(``WAITING_SQL``, ``HELD_SQL``, ``UNHELD_SQL``, ``PLAIN``, ``KEYED``) live here too, since the
partial indexes are defined by them and a query must repeat them word for word for SQLite to
use the index. The status CHECK and ``WAITING_SQL`` are equalities joined by OR
(``waiting_sql`` says why); a file made before keeps its CHECK's IN list, which means the same.
"""

from __future__ import annotations

import contextlib
import sqlite3

__all__ = [
    "HELD_SQL",
    "INDEXES",
    "KEYED",
    "PLAIN",
    "SCHEMA",
    "UNHELD_SQL",
    "WAITING_SQL",
    "install",
    "migrate",
    "waiting_sql",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS dowork_tasks (
    id TEXT PRIMARY KEY NOT NULL CHECK (id != ''),
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    payload BLOB NOT NULL,
    options TEXT,
    status TEXT NOT NULL CHECK (status = 'pending' OR status = 'scheduled'
        OR status = 'retrying' OR status = 'reserved' OR status = 'running'
        OR status = 'succeeded' OR status = 'failed' OR status = 'cancelled' OR status = 'dead'),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts BETWEEN 0 AND 1000000000),
    run_at REAL NOT NULL CHECK (run_at BETWEEN -1e15 AND 1e15),
    lease_until REAL,
    owner TEXT,
    crashes INTEGER NOT NULL DEFAULT 0 CHECK (crashes BETWEEN 0 AND 1000000000),
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    error TEXT,
    reason TEXT,
    result BLOB,
    created_at REAL NOT NULL CHECK (created_at BETWEEN -1e15 AND 1e15),
    updated_at REAL NOT NULL,
    finished_at REAL,
    expires_at REAL,
    progress TEXT,
    history TEXT,
    priority INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN -9 AND 9),
    slot REAL,
    concurrency_key TEXT CHECK (concurrency_key != ''),
    started INTEGER NOT NULL DEFAULT 0 CHECK (started BETWEEN 0 AND 1000000000),
    lost INTEGER NOT NULL DEFAULT 0 CHECK (lost BETWEEN 0 AND 1000000000),
    charged TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS dowork_expiry ON dowork_tasks (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS dowork_created ON dowork_tasks (queue, created_at);
CREATE TABLE IF NOT EXISTS dowork_idempotency (
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    task_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (queue, key)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dowork_workers (
    id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    beat TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS dowork_stats (
    queue TEXT NOT NULL,
    minute INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (queue, minute, outcome)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dowork_rates (
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    starts TEXT NOT NULL,
    PRIMARY KEY (queue, key)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dowork_turns (
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    served INTEGER NOT NULL,
    PRIMARY KEY (queue, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dowork_turn_order ON dowork_turns (queue, served);
"""


#: The statuses of a waiting record (``WAITING`` of ``_protocol``).
_WAITING = ("pending", "scheduled", "retrying")


def waiting_sql(table: str = "") -> str:
    """The test that a row is waiting (pending, scheduled or retrying), of ``table``'s column.

    Equalities joined by OR, not ``status IN (...)``: SQLite builds a temporary b-tree for an
    IN list of more than two values, and in a partial index's WHERE (or a CHECK) it builds it
    again for every row a write touches, which cost a claim and a settlement about 60k
    instructions a record.
    """
    column = f"{table}.status" if table else "status"
    return "(" + " OR ".join(f"{column} = '{s}'" for s in _WAITING) + ")"


WAITING_SQL = waiting_sql()
#: Leased records: claimed and not started, or running (``LEASED``).
HELD_SQL = "status IN ('reserved', 'running')"
#: Every other record: waiting or finished (the listing index holds these only).
UNHELD_SQL = "status NOT IN ('reserved', 'running')"
#: The lane of the records without a concurrency key, and the others'.
PLAIN = "concurrency_key IS NULL"
KEYED = "concurrency_key IS NOT NULL"
#: The partial indexes (made by ``migrate``: they need columns an older file lacks, or had
#: another shape in it). Those a claim reads:
#: ``dowork_ready`` replaces ``dowork_due`` on ``(queue, run_at)``, which older versions made.
#: Each waiting row is in one of them, so a record without a key costs no more to write than
#: before keys (no other index on keys: each would cost every status change a little; running
#: records per key are counted through ``dowork_leases``, a few, and ``next_due`` of keyed
#: records probes each key's levels).
INDEXES = {
    # Leased records by lease end: the reaper's scan, and per-key counts of held records.
    "dowork_leases": "CREATE INDEX IF NOT EXISTS dowork_leases ON dowork_tasks"
    f" (queue, lease_until) WHERE {HELD_SQL}",
    "dowork_ready": "CREATE INDEX IF NOT EXISTS dowork_ready ON dowork_tasks"
    f" (queue, priority, run_at) WHERE {WAITING_SQL} AND {PLAIN}",
    # The key test first: for a row without a key, SQLite then skips the costlier status test.
    "dowork_lanes": "CREATE INDEX IF NOT EXISTS dowork_lanes ON dowork_tasks"
    f" (queue, concurrency_key, priority, run_at) WHERE {KEYED} AND {WAITING_SQL}",
    # Listings and counts by status. Not of the leased records (a few, in ``dowork_leases``):
    # a task's claim, start mark and outcome then change one entry or none, not two each.
    # Older versions made it of every record.
    "dowork_listing": "CREATE INDEX IF NOT EXISTS dowork_listing ON dowork_tasks"
    f" (queue, status, created_at) WHERE {UNHELD_SQL}",
}

#: Columns added after the first release, created in files made by an older dowork.
_ADDED_COLUMNS = {
    "progress": "TEXT",
    "history": "TEXT",
    "priority": "INTEGER NOT NULL DEFAULT 0",
    "slot": "REAL",
    "concurrency_key": "TEXT",
    "started": "INTEGER NOT NULL DEFAULT 0",
    "lost": "INTEGER NOT NULL DEFAULT 0",
    "charged": "TEXT",
}


def install(conn: sqlite3.Connection) -> None:
    """Create the tables and indexes a file lacks, and upgrade one made by an older dowork."""
    with contextlib.suppress(sqlite3.OperationalError):  # another process made it first
        conn.executescript(SCHEMA)
    migrate(conn)


def _stale_indexes(conn: sqlite3.Connection) -> tuple[list[str], bool]:
    """The claim indexes to drop (``dowork_due``, or of an older shape), and whether to create."""
    names = ", ".join(f"'{name}'" for name in ("dowork_due", *INDEXES))
    have = dict(
        conn.execute(
            f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name IN ({names})"
        )
    )
    want = {name: sql.replace(" IF NOT EXISTS", "", 1) for name, sql in INDEXES.items()}
    drop = [name for name, sql in have.items() if want.get(name) != sql]
    return drop, bool(drop) or have.keys() != want.keys()


def migrate(conn: sqlite3.Connection) -> None:
    """Add the columns an older file lacks (each ``ADD COLUMN`` is cheap: no table rewrite).

    Then swap the old due index (or an index of an older shape) for the current ones, in one
    transaction so that no claim ever runs without either.
    """
    have = {row[1] for row in conn.execute("PRAGMA table_info(dowork_tasks)")}
    for column, kind in _ADDED_COLUMNS.items():
        if column not in have:
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it
                conn.execute(f"ALTER TABLE dowork_tasks ADD COLUMN {column} {kind}")
                if column == "started":  # before marks, every claim counted as a start
                    conn.execute("UPDATE dowork_tasks SET started = attempts")
    if not _stale_indexes(conn)[1]:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        drop, _ = _stale_indexes(conn)  # again: another process may have just done it
        for name in drop:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
        for sql in INDEXES.values():
            conn.execute(sql)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # (a COMMIT refused as busy leaves it open)
            conn.execute("ROLLBACK")
        raise
