"""A record's history as a store keeps it: a worker's attempt lines in a short form, read back.

A worker sends ``took`` for an attempt that did not raise (most attempts); a store keeps the
line ``attempt_line`` would write from it in ``TOOK_FORM`` ("@n <start>u <took>n outcome"):
two integers cost a fraction of the two float reprs of that JSON line. Any other line is kept
as it was sent, but for one "@" more in front of a line that begins with one, so that no line
sent reads as a short one. ``shown_history`` reads a history back as the record shows it: each
line as it was sent, a short one as ``attempt_line``'s JSON line (the start to the microsecond).

The same form Redis keeps (``redis/history.py``, whose other short form, "@n start took
outcome", of a worker's JSON line sent whole, reads here too). A history stored before this
form (JSON lines, "{...}", every line a worker wrote) reads as it is; only a line that began
with "@" would not, and none did: a worker's lines are JSON objects.
"""

from __future__ import annotations

import re

from ._protocol import Settlement, attempt_line

__all__ = ["TOOK_FORM", "kept_line", "shown_history", "took_parts"]

#: The line kept of a settlement's ``took``: its token, start in whole microseconds (``u``),
#: duration in whole nanoseconds (``n``) and outcome.
TOOK_FORM = "@%d %du %dn %s"
_TOOK_LINE = TOOK_FORM + "\n"
_INF = float("inf")
_SHORT = re.compile(
    r"^@(?:(@.*)|([0-9]+) ([-+.0-9eE]+) ([-+.0-9eE]+) ([a-z]+)"
    r"|([0-9]+) (-?[0-9]+)u (-?[0-9]+)n ([a-z]+))$",
    re.M,
)


def took_parts(s: Settlement) -> tuple[float, int] | None:
    """What ``TOOK_FORM`` keeps of ``s.took``: (start in microseconds, whole nanoseconds).

    None when the form cannot keep it exactly: no ``took``, one not in whole nanoseconds as a
    worker measures, ``inf``, ``nan``, a time too large. Both stores write by this one rule.
    """
    took = s.took
    if took is None:
        return None
    start, ns = (s.now - took) * 1e6, took * 1e9
    if -_INF < start < _INF and -_INF < ns < _INF:
        whole = round(ns)
        if whole / 1e9 == took:
            return start, whole
    return None


def kept_line(s: Settlement) -> str | None:
    """The line a store appends to the record's history for ``s``, newline included, or None.

    ``TOOK_FORM``'s of its ``took`` when that keeps it exactly (a whole number of nanoseconds,
    as a worker measures, and finite times), else the line ``attempt_line`` gives (``inf``,
    ``nan``, a duration of a caller's), with one "@" more in front if it begins with one.
    """
    parts = took_parts(s)
    if parts is not None:
        return _TOOK_LINE % (s.token, *parts, s.outcome._value_)
    line = attempt_line(s)
    if line is None:
        return None
    return ("@" + line if line.startswith("@") else line) + "\n"


def _long(m: re.Match[str]) -> str:
    if m[1] is not None:
        return m[1]
    if m[6] is not None:  # (TOOK_FORM)
        start, took = int(m[7]) / 1e6, int(m[8]) / 1e9
        return f'{{"n":{m[6]},"start":{start!r},"took":{took!r},"outcome":"{m[9]}"}}'
    return f'{{"n":{m[2]},"start":{m[3]},"took":{m[4]},"outcome":"{m[5]}"}}'


def shown_history(value: str | None) -> str | None:
    """A stored history as the record shows it: its lines as sent (None or "" for none: None)."""
    if not value:
        return None
    if "@" in value:
        return _SHORT.sub(_long, value)
    return value
