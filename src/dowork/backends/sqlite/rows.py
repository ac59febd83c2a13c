"""Rows of ``dowork_tasks`` that a worker cannot read, found and dead-lettered ``malformed``.

A file made by an older dowork (no ``STRICT`` table, no ``CHECK``) or written by hand may hold
a row whose fields have the wrong type (a TEXT payload, a NULL id, text in ``crashes``), an
impossible value (infinite ``run_at``, a priority of 1000), or text that is not UTF-8. A
claim checks each row it takes with ``row_ok_sql`` (in SQL, a few ``typeof`` calls per row);
when a row fails, or reading one raises, the claim is rolled back, ``bury`` moves the
unreadable rows to the dead letters with reason ``malformed`` (their raw fields described,
printably, in ``error``; the fields themselves replaced by values every reader accepts), and
the claim runs again. Healthy rows are never touched. A file whose task table is ``STRICT``
with dowork's ``CHECK``s holds no such row, so its claims skip the test (``claim_test``).
``UNREADABLE`` and ``BAD_VALUE`` are what SQLite or Python raise on reading such a row, or on
writing a value the table refuses.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

__all__ = [
    "BAD_VALUE",
    "CLAIMED_OK",
    "FIELDS",
    "TIME_LIMIT",
    "UNREADABLE",
    "Unreadable",
    "bury",
    "claim_test",
    "row_ok_sql",
]

log = logging.getLogger("dowork")

#: Largest time (seconds) a stored ``run_at`` or ``created_at`` may hold, either side of 0:
#: about 30 million years, far past any real date; beyond it a record is ``malformed``.
TIME_LIMIT = 1e15
#: Largest ``attempts`` or ``crashes`` a record may hold.
COUNT_LIMIT = 1_000_000_000
_TEXT = ("text",)
_NULL_TEXT = ("null", "text")
_NUMBER = ("integer", "real")
#: The fields a worker reads, with the SQLite types each may hold.
FIELDS: dict[str, tuple[str, ...]] = {
    "id": _TEXT,
    "name": _TEXT,
    "payload": ("blob",),
    "run_at": _NUMBER,
    "created_at": _NUMBER,
    "options": _NULL_TEXT,
    "attempts": ("integer",),
    "crashes": ("integer",),
    "cancel_requested": ("integer",),
    "error": _NULL_TEXT,
    "reason": _NULL_TEXT,
    "result": ("null", "blob"),
    "finished_at": ("null", *_NUMBER),
    "progress": _NULL_TEXT,
    "history": _NULL_TEXT,
    "priority": ("integer",),
    "slot": ("null", *_NUMBER),
    "concurrency_key": _NULL_TEXT,
    "started": ("integer",),
    "lost": ("integer",),
}


def row_ok_sql(claimed: bool) -> str:
    """An SQL test that a row's fields have the types and ranges a worker reads.

    ``claimed``: test the row as a claim's ``RETURNING`` sees it (``attempts`` one more). A
    row that passes before its claim passes after it, so a claim never refuses a row that
    ``bury`` would leave alone. Uses ``typeof``, never ``IS NULL`` (SQLite 3.40 evaluates
    ``IS NULL`` wrongly inside ``RETURNING`` on tables with ``CHECK`` constraints).
    """
    tests = [f"typeof({field}) IN ({_quoted(kinds)})" for field, kinds in FIELDS.items()]
    low, high = (1, COUNT_LIMIT) if claimed else (0, COUNT_LIMIT - 1)
    tests += [
        "id != ''",
        f"run_at BETWEEN {-TIME_LIMIT:.0e} AND {TIME_LIMIT:.0e}",
        f"created_at BETWEEN {-TIME_LIMIT:.0e} AND {TIME_LIMIT:.0e}",
        f"attempts BETWEEN {low} AND {high}",
        f"crashes BETWEEN 0 AND {COUNT_LIMIT - 1}",
        f"started BETWEEN 0 AND {COUNT_LIMIT - 1}",
        f"lost BETWEEN 0 AND {COUNT_LIMIT - 1}",
        "cancel_requested IN (0, 1)",
        "priority BETWEEN -9 AND 9",
        "(typeof(concurrency_key) = 'null' OR concurrency_key != '')",
    ]
    return "(" + " AND ".join(tests) + ")"


def _quoted(kinds: Sequence[str]) -> str:
    return ", ".join(f"'{kind}'" for kind in kinds)


#: A claimed row's fields are all readable: the last column a claim returns. A STRICT table
#: with dowork's CHECKs holds nothing else, so its claims skip the test (about 2.5 us a row):
#: only text that is not UTF-8 gets in, and reading it raises.
CLAIMED_OK = row_ok_sql(claimed=True)
#: What the task table's SQL holds when it was made STRICT with dowork's CHECKs.
_STRICT_MARKS = ("CHECK (priority BETWEEN -9 AND 9)", "CHECK (run_at BETWEEN -1e15 AND 1e15)")


def claim_test(conn: sqlite3.Connection) -> str:
    """The claim's readability test for this file: none for a STRICT table with CHECKs."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'dowork_tasks'").fetchone()
    sql = row[0] if row else ""
    strict = sql.rstrip().endswith("STRICT") and all(mark in sql for mark in _STRICT_MARKS)
    return "1" if strict else CLAIMED_OK


class Unreadable(Exception):
    """A claim met a row it cannot read: the claim is rolled back and the row buried."""


#: What reading an unreadable row raises during a claim (a text that is not UTF-8 raises
#: ``OperationalError``; a value of the wrong type, in Python, one of the others).
UNREADABLE = (
    Unreadable,
    sqlite3.OperationalError,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    sqlite3.IntegrityError,  # a STRICT table: attempts + 1 past its CHECK
    OverflowError,
    AssertionError,  # a key of "" (the lane of records without one) confuses the turns
)

#: What SQLite raises for a value it cannot store (a CHECK, a str that is not valid Unicode,
#: an int over 64 bits, a type it does not bind).
BAD_VALUE = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    ValueError,
    TypeError,
    OverflowError,
)


#: The columns ``bury`` reads: rowid, then the type and raw value of each field.
_RAW = "rowid, " + ", ".join(f"typeof({f}), {f}" for f in FIELDS)


def bury(
    conn: sqlite3.Connection, where: str, args: Sequence[Any], now: float, keep: float
) -> list[str]:
    """Dead-letter the rows matching ``where`` that a worker cannot read; return their ids.

    Runs in the caller's transaction. Text is read as bytes here, so a row whose text is not
    UTF-8 is found rather than failing the read. Each buried row gets status ``dead``, reason
    ``malformed``, an ``error`` naming every bad field with its raw value (escaped, cut to a
    few hundred characters), and readable values in those fields (a NULL or unreadable id
    becomes ``malformed-<rowid>-<random>``), so that ``dowork inspect`` shows it.
    """
    factory = conn.text_factory
    conn.text_factory = bytes
    try:
        found = []
        for row in conn.execute(f"SELECT {_RAW} FROM dowork_tasks WHERE {where}", args):
            fixed, problems = _check(row, now)
            if problems:
                found.append((row[0], fixed, problems))
    finally:
        conn.text_factory = factory
    ids = []
    for rowid, fixed, problems in found:
        fixed.update(
            status="dead",
            reason="malformed",
            error=_describe(problems),
            lease_until=None,
            owner=None,
            updated_at=now,
            finished_at=now,
            expires_at=now + keep,
        )
        columns = ", ".join(f"{column} = ?" for column in fixed)
        conn.execute(f"UPDATE dowork_tasks SET {columns} WHERE rowid = ?", (*fixed.values(), rowid))
        ids.append(str(fixed["id"]))
        log.error("task %s dead-lettered (malformed): %s", fixed["id"], fixed["error"])
    return ids


def _describe(problems: list[str]) -> str:
    return "malformed record (written by another program?): " + "; ".join(problems)


def _check(row: Sequence[Any], now: float) -> tuple[dict[str, Any], list[str]]:
    """The readable values of a raw row, and what was wrong with it (nothing: healthy)."""
    fixed: dict[str, Any] = {}
    problems: list[str] = []
    for i, (field, kinds) in enumerate(FIELDS.items()):
        kind, raw = row[1 + 2 * i].decode(), row[2 + 2 * i]  # text is read as bytes here
        value, why = _field(field, kind, raw, kinds)
        if why:
            problems.append(f"{field} {why}: {_printable(kind, raw)}")
            value = _replacement(field, kind, raw, row[0], now)
        fixed[field] = value
    return fixed, problems


def _field(field: str, kind: str, raw: Any, kinds: Sequence[str]) -> tuple[Any, str]:
    """A field's value as a worker reads it, or why it cannot be read."""
    if kind not in kinds:
        return None, f"is {kind.upper()}, not {' or '.join(k.upper() for k in kinds)}"
    if kind == "text":
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "is not UTF-8 text"
        if raw == "" and field in ("id", "concurrency_key"):
            return None, "is empty"
    return raw, _out_of_range(field, raw)


def _out_of_range(field: str, value: Any) -> str:
    if value is None or isinstance(value, str | bytes):
        return ""
    if field in ("run_at", "created_at") and not (
        math.isfinite(value) and abs(value) <= TIME_LIMIT
    ):
        return f"is out of range (beyond +-{TIME_LIMIT:.0e})"
    if field in ("attempts", "crashes", "started", "lost") and not 0 <= value < COUNT_LIMIT:
        return f"is out of range (0 to {COUNT_LIMIT - 1})"
    if field == "cancel_requested" and value not in (0, 1):
        return "is not 0 or 1"
    if field == "priority" and not -9 <= value <= 9:
        return "is out of range (-9 to 9)"
    return ""


def _replacement(field: str, kind: str, raw: Any, rowid: int, now: float) -> Any:
    """A readable value for a field that was not (its raw value is described in ``error``)."""
    if field == "id":
        return f"malformed-{rowid}-{uuid.uuid4().hex[:8]}"
    if field == "name":
        return _printable(kind, raw)[:200]
    if field == "payload":
        return raw if isinstance(raw, bytes) else str(raw).encode()
    if field in ("run_at", "created_at"):
        return now
    if field in ("attempts", "crashes", "cancel_requested", "priority", "started", "lost"):
        return 0
    return None


def _printable(kind: str, raw: Any, limit: int = 300) -> str:
    """A raw value as ASCII text: type, then the escaped value, cut to ``limit`` characters."""
    if raw is None:
        return "NULL"
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", "backslashreplace") if kind == "text" else raw.hex()
        shown = ascii(text) if kind == "text" else f"x'{text}'"
    else:
        shown = repr(raw)
    return shown if len(shown) <= limit else shown[:limit] + "..."
