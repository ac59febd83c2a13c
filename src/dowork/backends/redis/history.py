"""A record's history as a task hash keeps it: a worker's attempt lines in a short form.

``history_arg`` writes a settlement's attempt line as ``settle.lua`` appends it to the record's
``history`` field, ``shown_history`` reads the field back as the record shows it.
"""

from __future__ import annotations

import re

from .._history import TOOK_FORM
from .._history import shown_history as _shown

__all__ = ["TOOK_LINE", "history_arg", "shown_history"]

#: A worker's history line of an attempt that did not raise (see ``durable/flush.py``), and the
#: shorter form the task hash keeps it in: "@n start took outcome". A record's history is its
#: attempts' lines, each ended by a newline; the JSON line of a worker's attempt is about 90
#: bytes, over Redis's hash-max-listpack-value (64), and one such value turns the task hash
#: from a listpack into a hashtable (about 16k instructions, and slower ever after); the
#: short form (at most about 55 bytes) keeps it a listpack. Other lines (an attempt that
#: raised; every line stored before) are kept as they are, but for one "@" more in front of a
#: line that begins with one. Reading gives every line back as it was sent. (A worker now
#: sends ``took`` instead of that line, kept in ``TOOK_LINE``'s form below; this one is for
#: lines sent whole, by workers before it and by callers of ``settle``.)
_ATTEMPT = re.compile(
    r'\{"n":([0-9]+),"start":([-+.0-9eE]+),"took":([-+.0-9eE]+),"outcome":"([a-z]+)"\}'
)
#: The ``settle.lua`` argument of the line ``attempt_line`` writes from a settlement's ``took``
#: (a worker's attempt that did not raise), written without that line: "@n start took outcome"
#: with the start in whole microseconds and the duration in whole nanoseconds (``u`` and ``n``
#: after them mark this form). Two integers cost a quarter of the two float reprs the line
#: would take; ``shown_history`` reads it back as that JSON line, the start to the microsecond.
TOOK_LINE = b"=" + TOOK_FORM.encode()


def history_arg(attempt: str) -> bytes:
    """The ``settle.lua`` argument of an attempt's history line: ``=``, then the line to keep."""
    m = _ATTEMPT.fullmatch(attempt)
    if m is not None:
        n, start, took, outcome = m.groups()
        return f"=@{n} {start} {took} {outcome}".encode()
    line = attempt.encode("utf-8", "surrogatepass")
    return b"=@" + line if line.startswith(b"@") else b"=" + line


def shown_history(value: bytes | None, errors: str = "surrogatepass") -> str | None:
    """A stored history as the record shows it: its lines as sent (``_history.shown_history``)."""
    if value is None:
        return None
    text = value.decode("utf-8", errors)
    return _shown(text) if text else text
