"""Task records as the scripts store them, and the arguments the scripts take.

Both directions of the wire format in one place: ``decode_record`` and ``show_record`` read a
task hash (strictly, or leniently for display; ``claim.split_claimed`` reads a claim's answer);
``push_args``, ``keyed_args`` and ``rate_args`` build the arguments of ``push.lua``,
``push_keyed.lua`` and ``claim.lua``, and ``inbox_entry``/``from_inbox`` write and read an
entry of a queue's inbox (see ``inbox.lua``). Times travel as exact ``repr`` decimals
(``num``), text as UTF-8 with lone surrogates kept (``utf8``), an optional value as ``opt``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...errors import DuplicateTask
from .._protocol import LEASED, WHILE_UNFINISHED, Record
from .history import shown_history

__all__ = [
    "PURGE_BATCH",
    "check_push",
    "decode_record",
    "from_inbox",
    "head_score",
    "inbox_entry",
    "keyed_args",
    "named",
    "num",
    "opt",
    "push_args",
    "rate_args",
    "show_record",
    "utf8",
]

#: Records a purge deletes per script call, so that a large purge never blocks Redis long.
PURGE_BATCH = 500
#: Redis TTL of a unique key (held while its task waits or runs): only clears keys of tasks
#: that were purged or wiped; a task waiting longer than this loses its uniqueness.
_UNIQUE_TTL_MS = 30 * 24 * 3600 * 1000


def num(value: float) -> str:
    """An exact decimal form of a time: ``repr`` round-trips every float."""
    return repr(float(value))


def opt(value: str | bytes | None) -> bytes:
    """An optional string argument: empty for None, ``=`` then the value otherwise."""
    if value is None:
        return b""
    return b"=" + (value if isinstance(value, bytes) else utf8(value))


def utf8(value: str) -> bytes:
    """Text as the store keeps it: UTF-8, lone surrogates (undecodable bytes) kept."""
    return value.encode("utf-8", "surrogatepass")


def _str(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "surrogatepass")


def _float(value: bytes | None) -> float | None:
    return None if value is None else float(value)


#: The fields of a task hash as ``push.lua`` and the inbox write a plain task (``seq`` is the
#: store's own), with and without options, and the id field every hash read has (see
#: ``named``): ``decode_record`` builds such a record at once.
_PUSHED = frozenset([b"id", b"queue", b"name", b"payload", b"run_at", b"created_at", b"status",
                     b"seq"])  # fmt: skip
_PUSHED_OPTIONS = _PUSHED | {b"options"}


def decode_record(flat: Sequence[bytes] | dict[bytes, bytes]) -> Record:
    """Build a record from a task hash (an HGETALL dict, or the flat list a script returns).

    ``lease_until`` and ``owner`` count only while the task is leased (settling leaves them),
    an absent ``attempts`` is 0 and an absent ``updated_at`` is ``created_at``. An absent
    ``started`` is ``attempts``: a record written before starts were counted, whose every
    claim counted as one.
    """
    h = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
    if h.keys() in (_PUSHED, _PUSHED_OPTIONS):
        return _as_pushed(h)
    status = h[b"status"].decode()
    running = status in LEASED
    created_at = float(h[b"created_at"])
    updated = h.get(b"updated_at")
    updated_at = created_at if updated is None else float(updated)
    attempts = int(h.get(b"attempts", b"0"))
    started = h.get(b"started")
    return Record(
        id=h[b"id"].decode("utf-8", "surrogatepass"),
        queue=h[b"queue"].decode("utf-8", "surrogatepass"),
        name=h[b"name"].decode("utf-8", "surrogatepass"),
        payload=h[b"payload"],
        run_at=float(h[b"run_at"]),
        created_at=created_at,
        status=status,
        options=_str(h.get(b"options")),
        attempts=attempts,
        lease_until=_float(h.get(b"lease_until")) if running else None,
        owner=_str(h.get(b"owner")) if running else None,
        crashes=int(h.get(b"crashes", b"0")),
        started=attempts if started is None else int(started),
        lost=int(h.get(b"lost", b"0")),
        charged=_str(h.get(b"charged")),
        cancel_requested=h.get(b"cancel_requested") == b"1",
        error=_str(h.get(b"error")),
        reason=_str(h.get(b"reason")),
        result=h.get(b"result"),
        updated_at=updated_at,
        finished_at=_finished(h.get(b"finished_at"), h, updated_at),
        progress=_str(h.get(b"progress")),
        history=shown_history(h.get(b"history")),
        priority=int(h.get(b"priority", 0)),
        concurrency_key=_str(h.get(b"concurrency_key")),
        slot=_float(h.get(b"slot")),
    )


def _finished(stored: bytes | None, h: Mapping[bytes, bytes], updated: float) -> float | None:
    """A record's ``finished_at``: as an earlier version stored it, else ``updated_at`` if finished.

    Finished means it has an ``expires_at``: every way to a finished status writes it with
    ``updated_at``, nothing writes either after that, and a requeue or a revival removes it.
    """
    if stored is not None:
        return float(stored)
    return updated if b"expires_at" in h else None


def _as_pushed(h: dict[bytes, bytes]) -> Record:
    """``decode_record`` of a hash as pushed: every field it lacks at its default."""
    created_at = float(h[b"created_at"])
    return Record(
        id=h[b"id"].decode("utf-8", "surrogatepass"),
        queue=h[b"queue"].decode("utf-8", "surrogatepass"),
        name=h[b"name"].decode("utf-8", "surrogatepass"),
        payload=h[b"payload"],
        run_at=float(h[b"run_at"]),
        created_at=created_at,
        status=h[b"status"].decode(),
        options=_str(h.get(b"options")),
        updated_at=created_at,
    )


def named(flat: Sequence[bytes] | dict[bytes, bytes], task_id: str) -> dict[bytes, bytes]:
    """A task hash (HGETALL) with its id field: the key's, unless an earlier version stored one.

    The scripts write no id field (the key holds it); those that return hashes add it.
    """
    h = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
    h.setdefault(b"id", utf8(task_id))
    return h


def show_record(flat: Sequence[bytes] | dict[bytes, bytes]) -> Record:
    """``decode_record`` for reading (``get``, ``list``): it never fails.

    A record that ``decode_record`` cannot read (written by hand, dead-lettered as malformed) is
    shown with its text decoded leniently and its unreadable numbers as 0 (times) or None.
    """
    try:
        record = decode_record(flat)
    except (KeyError, ValueError):
        pass
    else:
        if all(map(math.isfinite, (record.run_at, record.created_at, record.updated_at))):
            return record
    return _leniently(
        flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
    )


def _leniently(h: dict[bytes, bytes]) -> Record:
    """A record hash read with its text decoded leniently, unreadable numbers as None."""

    def text(name: bytes) -> str | None:
        raw = h.get(name)
        return None if raw is None else bytes(raw).decode("utf-8", "backslashreplace")

    def number(name: bytes, kind: Callable[[str], Any] = float) -> Any:
        try:
            value = kind(text(name) or "")
            return value if math.isfinite(value) else None
        except (ValueError, OverflowError):
            return None

    status = text(b"status") or "dead"
    created_at = number(b"created_at") or 0.0
    updated_at = number(b"updated_at") or created_at
    finished_at = number(b"finished_at")
    if b"finished_at" not in h and b"expires_at" in h:  # (see _finished)
        finished_at = updated_at
    return Record(
        id=text(b"id") or "",
        queue=text(b"queue") or "",
        name=text(b"name") or "",
        payload=h.get(b"payload", b""),
        run_at=number(b"run_at") or 0.0,
        created_at=created_at,
        status=status,
        options=text(b"options"),
        attempts=number(b"attempts", int) or 0,
        lease_until=number(b"lease_until") if status in LEASED else None,
        owner=text(b"owner") if status in LEASED else None,
        crashes=number(b"crashes", int) or 0,
        started=number(b"started", int) or 0,
        lost=number(b"lost", int) or 0,
        charged=text(b"charged"),
        cancel_requested=h.get(b"cancel_requested") == b"1",
        error=text(b"error"),
        reason=text(b"reason"),
        result=h.get(b"result"),
        updated_at=updated_at,
        finished_at=finished_at,
        progress=text(b"progress"),
        history=shown_history(h.get(b"history"), "backslashreplace"),  # (lenient)
        priority=number(b"priority", int) or 0,
        concurrency_key=text(b"concurrency_key"),
        slot=number(b"slot"),
    )


def keyed_args(records: Sequence[Record]) -> list[str | bytes | int]:
    """The ``push_keyed.lua`` arguments after the prefix (see that script)."""
    args: list[str | bytes | int] = [len(records)]
    for r in records:
        args += [
            utf8(r.id), utf8(r.queue), utf8(r.name), r.payload, num(r.run_at),
            num(r.created_at), r.status, opt(r.options), r.attempts, r.priority,
            opt(None if r.slot is None else num(r.slot)), opt(r.concurrency_key),
        ]  # fmt: skip
    tail: list[str | bytes | int] = []
    for index, r in enumerate(records):
        if r.idempotency_key is not None:
            name = f"{len(r.queue)}:{r.queue}:{r.idempotency_key}"
            until = r.idempotency_until or r.created_at
            if until == WHILE_UNFINISHED:  # a unique key; the TTL only clears forgotten ones
                tail += [index, utf8(name), "u", _UNIQUE_TTL_MS]
                continue
            ttl = max(1, int((until - r.created_at) * 1000) + 60_000)  # GC only: a minute spare
            tail += [index, utf8(name), num(until), ttl]
    return [*args, len(tail) // 4, *tail]


#: A time as the scripts take one (see ``decimal`` in ``checks.lua``): what ``repr`` writes.
_DECIMAL = re.compile(rb"-?[0-9]+\.?[0-9]*(?:[eE][-+]?[0-9]+)?")


def head_score(head: Sequence[Any]) -> float:
    """The score in a raw ``ZRANGE ... WITHSCORES`` answer of one member.

    RESP2 gives ``[member, score]``, RESP3 (redis-py 8.1's default) ``[[member, score]]``.
    """
    first = head[0]
    return float(first[1] if isinstance(first, list) else head[1])


def rate_args(rates: Mapping[str, tuple[int, float]] | None) -> list[str | bytes | int]:
    """The ``claim.lua`` arguments of the rate limits: (name, n, per) each."""
    if not rates:
        return []
    args: list[str | bytes | int] = []
    for name, (n, per) in rates.items():
        args += [utf8(name), int(n), num(per)]
    return args


#: The fields a run of ``push.lua`` records shares: queue, name, run_at, created_at, status,
#: options, attempts, priority, slot, concurrency_key.
_Header = tuple[str, str, float, float, str, str | None, int, int, float | None, str | None]


def push_args(records: Sequence[Record], check: bytes) -> list[bytes | str | int]:
    """The ``push.lua`` arguments after the prefix.

    Runs of records that share every field but id and payload (a ``map()`` is one run) are
    sent as one header followed by (id, payload) pairs.
    """
    if len(records) == 1:
        r = records[0]
        return [
            check, utf8(r.queue), utf8(r.name), num(r.run_at), num(r.created_at), r.status,
            opt(r.options), r.attempts, r.priority,
            b"" if r.slot is None else b"=" + num(r.slot).encode(), opt(r.concurrency_key), 1,
            utf8(r.id), r.payload,
        ]  # fmt: skip
    args: list[bytes | str | int] = [check]
    header: _Header | None = None
    count_at = 0
    for r in records:
        key = (
            r.queue, r.name, r.run_at, r.created_at, r.status, r.options, r.attempts,
            r.priority, r.slot, r.concurrency_key,
        )  # fmt: skip
        if key != header:
            if header is not None:
                args[count_at] = (len(args) - count_at - 1) // 2
            header = key
            args += [
                utf8(r.queue), utf8(r.name), num(r.run_at), num(r.created_at), r.status,
                opt(r.options), r.attempts, r.priority,
                b"" if r.slot is None else b"=" + num(r.slot).encode(),
                opt(r.concurrency_key), 0,
            ]  # fmt: skip
            count_at = len(args) - 1
        args.append(utf8(r.id))
        args.append(r.payload)
    if header is not None:
        args[count_at] = (len(args) - count_at - 1) // 2
    return args


def inbox_entry(r: Record) -> bytes | None:
    """The inbox entry of a record (see ``inbox.lua``), or None if it must go through ``push.lua``.

    The inbox takes plain tasks due now: pending, priority 0, no concurrency key, no
    reserved start, never attempted, and no NUL in the id or name that separate the fields.
    """
    if (
        r.status != "pending"
        or r.priority
        or r.concurrency_key is not None
        or r.slot is not None
        or r.attempts
        or r.run_at != r.created_at
        or "\0" in r.id
        or "\0" in r.name
    ):
        return None
    options = b"" if r.options is None else b"=" + utf8(r.options)
    return b"r%s\0%s\0%s\0%s\0%s" % (
        utf8(r.id),
        utf8(r.name),
        num(r.created_at).encode(),
        options,
        r.payload,
    )


def from_inbox(entry: bytes, queue: str) -> Record | None:
    """The record of an inbox entry (see ``inbox_entry``), or None if it is not one."""
    if not entry.startswith(b"r"):
        return None
    parts = entry[1:].split(b"\0", 4)
    if len(parts) != 5 or not parts[0]:
        return None
    task_id, name, at, options, payload = parts
    if len(at) > 40 or not _DECIMAL.fullmatch(at):  # (as decimal() in checks.lua)
        return None
    try:
        created = float(at)
        if not math.isfinite(created):
            return None
        record = Record(
            id=task_id.decode("utf-8", "surrogatepass"),
            queue=queue,
            name=name.decode("utf-8", "surrogatepass"),
            payload=payload,
            run_at=created,
            created_at=created,
            options=options[1:].decode("utf-8", "surrogatepass") if options else None,
        )
    except ValueError:  # (UnicodeDecodeError is one)
        return None
    return record


def check_push(answer: Any) -> None:
    """Raise ``DuplicateTask`` if a push was refused (a ``push.lua`` list or a ``check.lua`` id)."""
    if isinstance(answer, list):
        if answer[0] == b"ok":
            return
        taken = answer[1]
    elif not answer:
        return
    else:
        taken = answer
    task_id = bytes(taken).decode("utf-8", "surrogatepass")
    raise DuplicateTask(f"a task with id {task_id!r} already exists (nothing written)")
