"""``RedisBackend``: the task store in Redis (its key schema is in the package's docstring).

Every state change is one Lua script (see ``scripts``); this module builds their arguments,
sends them and reads the answers, on a connection pool per event loop and one for threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
import redis.asyncio
import redis.exceptions
import redis.retry
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript, Script

from ...errors import (
    BackendError,
    BackendFull,
    BackendUnavailable,
    DuplicateTask,
    EvictionPolicyError,
    OutcomeUnknown,
)
from .._protocol import (
    LEASED,
    PRIORITY_AGING,
    STATS_MINUTES,
    WHILE_UNFINISHED,
    Outcome,
    Record,
    Settlement,
    Wakeups,
    WorkerBeat,
    check_page,
    minute_of,
    retention,
    status_filter,
)
from .scripts import SCRIPTS

__all__ = ["RedisBackend"]

#: redis-py before 5.3 wants a command name for ``ConnectionPool.get_connection``; later
#: versions warn about it.
_CONNECTION_ARGS = (
    ()
    if inspect.signature(redis.asyncio.ConnectionPool.get_connection)
    .parameters["command_name"]
    .default
    is None
    else ("EVALSHA",)
)
_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis comes with dowork[redis]
    _pack = None


log = logging.getLogger("dowork")

_FINAL = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.FAILED: "failed",
    Outcome.CANCELLED: "cancelled",
    Outcome.DEAD: "dead",
}

_PURGE_BATCH = 500
#: The share of ``maxmemory`` from which the reaper purges finished records early.
_MEMORY_SHORT = 0.95
#: Seconds a finished record is kept, however short memory is.
_EARLY_AGE = 300.0
#: Redis TTL of a unique key (held while its task waits or runs): only clears keys of tasks
#: that were purged or wiped; a task waiting longer than this loses its uniqueness.
_UNIQUE_TTL_MS = 30 * 24 * 3600 * 1000
#: Records per script call of a large push (one transaction of several calls).
_PUSH_CHUNK = 1000
#: The scripts the blocking client runs (``push_sync``).
_SYNC = ("push", "check", "drain")


class _Unanswered(redis.exceptions.ConnectionError):
    """The connection failed after a request was (maybe partly) sent: it may have run.

    A ``ConnectionError``, so that reads report ``BackendUnavailable`` as before; pushes
    report ``OutcomeUnknown`` instead (see ``RedisBackend._pushing``).
    """


#: Seconds a worker trusts the ``maxmemory-policy`` it read (``CONFIG SET`` can change it at
#: run time): once a minute while it is safe, every few seconds while the worker refuses.
_POLICY_RECHECK = 60.0
_POLICY_RECHECK_REFUSED = 10.0
#: The URL query parameter that sets ``allow_eviction`` (``?allow_eviction=1``).
_ALLOW_EVICTION = "allow_eviction"

# -- encoding ----------------------------------------------------------------------------------


def _num(value: float) -> str:
    """An exact decimal form of a time: ``repr`` round-trips every float."""
    return repr(float(value))


def _opt(value: str | bytes | None) -> bytes:
    """An optional string argument: empty for None, ``=`` then the value otherwise."""
    if value is None:
        return b""
    return b"=" + (value if isinstance(value, bytes) else _text(value))


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _str(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "surrogatepass")


def _float(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def _record(flat: Sequence[bytes] | dict[bytes, bytes]) -> Record:
    """Build a record from a task hash (an HGETALL dict, or the flat list a script returns).

    ``lease_until`` and ``owner`` count only while the task is leased (settling leaves them),
    an absent ``attempts`` is 0 and an absent ``updated_at`` is ``created_at``. An absent
    ``started`` is ``attempts``: a record written before starts were counted, whose every
    claim counted as one.
    """
    h = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
    status = h[b"status"].decode()
    running = status in LEASED
    created_at = float(h[b"created_at"])
    updated = h.get(b"updated_at")
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
        updated_at=created_at if updated is None else float(updated),
        finished_at=_float(h.get(b"finished_at")),
        progress=_str(h.get(b"progress")),
        history=_str(h.get(b"history")),
        priority=int(h.get(b"priority", 0)),
        concurrency_key=_str(h.get(b"concurrency_key")),
        slot=_float(h.get(b"slot")),
    )


def _shown(flat: Sequence[bytes] | dict[bytes, bytes]) -> Record:
    """``_record`` for reading (``get``, ``list``): it never fails.

    A record that ``_record`` cannot read (written by hand, dead-lettered as malformed) is
    shown with its text decoded leniently and its unreadable numbers as 0 (times) or None.
    """
    try:
        record = _record(flat)
    except (KeyError, ValueError):
        pass
    else:
        if all(map(math.isfinite, (record.run_at, record.created_at, record.updated_at))):
            return record
    h = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))

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
        updated_at=number(b"updated_at") or created_at,
        finished_at=number(b"finished_at"),
        progress=text(b"progress"),
        history=text(b"history"),
        priority=number(b"priority", int) or 0,
        concurrency_key=text(b"concurrency_key"),
        slot=number(b"slot"),
    )


def _keyed_args(records: Sequence[Record]) -> list[str | bytes | int]:
    """The ``push_keyed.lua`` arguments after the prefix (see that script)."""
    args: list[str | bytes | int] = [len(records)]
    for r in records:
        args += [
            _text(r.id), _text(r.queue), _text(r.name), r.payload, _num(r.run_at),
            _num(r.created_at), r.status, _opt(r.options), r.attempts, r.priority,
            _opt(None if r.slot is None else _num(r.slot)), _opt(r.concurrency_key),
        ]  # fmt: skip
    tail: list[str | bytes | int] = []
    for index, r in enumerate(records):
        if r.idempotency_key is not None:
            name = f"{len(r.queue)}:{r.queue}:{r.idempotency_key}"
            until = r.idempotency_until or r.created_at
            if until == WHILE_UNFINISHED:  # a unique key; the TTL only clears forgotten ones
                tail += [index, _text(name), "u", _UNIQUE_TTL_MS]
                continue
            ttl = max(1, int((until - r.created_at) * 1000) + 60_000)  # GC only: a minute spare
            tail += [index, _text(name), _num(until), ttl]
    return [*args, len(tail) // 4, *tail]


#: A time as the scripts take one (see ``decimal`` in ``checks.lua``): what ``repr`` writes.
_DECIMAL = re.compile(rb"-?[0-9]+\.?[0-9]*(?:[eE][-+]?[0-9]+)?")

#: A claimed record Python cannot read, to be dead-lettered: raw id, lease token, why.
_Unfit = tuple[bytes, int, str]


def _claimed(rows: Sequence[Any], owner: str) -> tuple[list[Record], list[_Unfit]]:
    """The records of a ``claim.lua`` answer, and those Python cannot read (for ``bury``).

    The answer holds now and lease_until used, the records the script dead-lettered, then the
    claimed hashes; a hash ``_record`` cannot read (text that is not UTF-8: the checks Lua
    leaves to Python) goes to the second list. The payload and options are the worker's to
    check (it dead-letters what it cannot decode), as on every backend.
    """
    now, lease_until = float(rows[0]), float(rows[1])
    claimed = []
    unfit: list[_Unfit] = []
    for row in rows[3:]:
        try:
            record = _record(row)
        except (KeyError, ValueError) as exc:  # (UnicodeDecodeError is a ValueError)
            h = dict(zip(row[::2], row[1::2], strict=True))
            why = f"{type(exc).__name__}: {exc}"[:200]
            unfit.append((bytes(h[b"id"]), int(h.get(b"attempts", b"0")) + 1, why))
            continue
        record.status = "reserved"
        record.attempts += 1
        record.lease_until = lease_until
        record.owner = owner
        record.updated_at = now
        record.slot = None
        claimed.append(record)
    return claimed, unfit


def _score(head: Sequence[Any]) -> float:
    """The score in a raw ``ZRANGE ... WITHSCORES`` answer of one member.

    RESP2 gives ``[member, score]``, RESP3 (redis-py 8.1's default) ``[[member, score]]``.
    """
    first = head[0]
    return float(first[1] if isinstance(first, list) else head[1])


def _rate_args(rates: Mapping[str, tuple[int, float]] | None) -> list[str | bytes | int]:
    """The ``claim.lua`` arguments of the rate limits: (name, n, per) each."""
    if not rates:
        return []
    args: list[str | bytes | int] = []
    for name, (n, per) in rates.items():
        args += [_text(name), int(n), _num(per)]
    return args


#: The fields a run of ``push.lua`` records shares: queue, name, run_at, created_at, status,
#: options, attempts, priority, slot, concurrency_key.
_Header = tuple[str, str, float, float, str, str | None, int, int, float | None, str | None]


def _push_args(records: Sequence[Record], check: bytes) -> list[bytes | str | int]:
    """The ``push.lua`` arguments after the prefix.

    Runs of records that share every field but id and payload (a ``map()`` is one run) are
    sent as one header followed by (id, payload) pairs.
    """
    if len(records) == 1:
        r = records[0]
        return [
            check, _text(r.queue), _text(r.name), _num(r.run_at), _num(r.created_at), r.status,
            _opt(r.options), r.attempts, r.priority,
            b"" if r.slot is None else b"=" + _num(r.slot).encode(), _opt(r.concurrency_key), 1,
            _text(r.id), r.payload,
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
                _text(r.queue), _text(r.name), _num(r.run_at), _num(r.created_at), r.status,
                _opt(r.options), r.attempts, r.priority,
                b"" if r.slot is None else b"=" + _num(r.slot).encode(),
                _opt(r.concurrency_key), 0,
            ]  # fmt: skip
            count_at = len(args) - 1
        args.append(_text(r.id))
        args.append(r.payload)
    if header is not None:
        args[count_at] = (len(args) - count_at - 1) // 2
    return args


#: One Redis command and its arguments, as ``hiredis.pack_command`` takes them.
_Command = tuple[str | bytes, ...]


def _inbox_entry(r: Record) -> bytes | None:
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
    options = b"" if r.options is None else b"=" + _text(r.options)
    return b"r%s\0%s\0%s\0%s\0%s" % (
        _text(r.id),
        _text(r.name),
        _num(r.created_at).encode(),
        options,
        r.payload,
    )


def _from_inbox(entry: bytes, queue: str) -> Record | None:
    """The record of an inbox entry (see ``_inbox_entry``), or None if it is not one."""
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


def _commands_sync(client: redis.Redis, *commands: Sequence[str | bytes | int]) -> list[Any]:
    """Send commands in one write from a thread and read their answers (errors are raised).

    The commands are packed in C (hiredis) and go out on a pooled connection of a blocking
    client: the same round trip as a redis-py pipeline, without the layers of its command
    execution (a good part of a single push's cost in the caller's thread).
    """
    if _pack is None:
        with client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            return pipe.execute()
    pool = client.connection_pool
    conn = pool.get_connection(*_CONNECTION_ARGS)
    answers: list[Any] = []
    try:
        conn.send_packed_command(  # type: ignore[no-untyped-call]
            [_pack(tuple(c)) for c in commands], check_health=False
        )
        for _ in commands:
            answers.append(conn.read_response())
    except redis.exceptions.ResponseError:
        if len(answers) < len(commands) - 1:  # answers left unread: out of step
            conn.disconnect()  # type: ignore[no-untyped-call]
        raise
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        conn.disconnect()  # type: ignore[no-untyped-call]  # mid-answer: out of step
        raise _Unanswered(f"no reply to a request sent ({exc!r})") from exc
    except BaseException:
        conn.disconnect()  # type: ignore[no-untyped-call]  # mid-answer: out of step
        raise
    finally:
        pool.release(conn)
    return answers


def _evalsha_sync(client: redis.Redis, sha: str, args: Sequence[str | bytes | int]) -> Any:
    """``EVALSHA`` from a thread (see ``_commands_sync``)."""
    return _commands_sync(client, ("EVALSHA", sha, 0, *args))[0]


def _transaction_sync(
    client: redis.Redis,
    scripts: dict[str, Script],
    calls: Sequence[tuple[str, Sequence[str | bytes | int]]],
    flag: bytes,
) -> Any:
    """Run script calls in one ``MULTI``/``EXEC`` (then delete ``flag``); the first answer.

    Packed in C (hiredis) and read by hand: redis-py's pipeline encodes every argument in
    Python, a good part of a bulk push's cost.
    """
    if _pack is None:
        with client.pipeline(transaction=True) as pipe:
            for name, args in calls:
                scripts[name](args=args, client=pipe)
            if flag:
                pipe.delete(flag)
            return pipe.execute()[0]
    commands: list[tuple[Any, ...]] = [("MULTI",)]
    commands += [("EVALSHA", scripts[name].sha, 0, *args) for name, args in calls]
    if flag:
        commands.append(("DEL", flag))
    commands.append(("EXEC",))
    pool = client.connection_pool
    conn = pool.get_connection(*_CONNECTION_ARGS)
    try:
        conn.send_packed_command(  # type: ignore[no-untyped-call]
            [_pack(c) for c in commands], check_health=False
        )
        error: redis.exceptions.ResponseError | None = None
        for _ in commands[:-1]:  # +OK, then +QUEUED each (or an error: EXEC then aborts)
            try:
                conn.read_response()
            except redis.exceptions.ResponseError as exc:
                error = error or exc
        try:
            answers = conn.read_response()
        except redis.exceptions.ResponseError as exc:  # EXECABORT
            raise error or exc from None
    except redis.exceptions.ResponseError:
        raise  # every answer was read: the connection is fine
    except BaseException:
        conn.disconnect()  # type: ignore[no-untyped-call]  # mid-answer: out of step
        raise
    finally:
        pool.release(conn)
    first = answers[0]
    if isinstance(first, redis.exceptions.ResponseError):
        if str(first).startswith("NOSCRIPT"):
            raise redis.exceptions.NoScriptError(str(first))
        raise first
    return first


def _check_push(answer: Any) -> None:
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


def _policy_of(info: Any) -> str | None:
    """The ``maxmemory_policy`` of a raw ``INFO memory`` answer; None if INFO was refused."""
    if isinstance(info, Exception):
        return None
    if isinstance(info, dict):  # a client's parsed answer
        return str(info.get("maxmemory_policy", "noeviction"))
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "maxmemory_policy":
            return value.strip()
    return "noeviction"  # a server too old to say: it has no eviction policy to speak of


def _flag(value: str) -> bool:
    """A URL query flag: ``1``, ``true``, ``yes`` or ``on`` (any case) is true."""
    return value.strip().lower() in ("1", "true", "yes", "on")


def _without_flag(url: str) -> tuple[str, bool | None]:
    """``url`` without its ``allow_eviction`` query parameter, and that parameter's value."""
    parts = urlsplit(url)
    if _ALLOW_EVICTION not in parts.query:
        return url, None
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    found = [v for k, v in pairs if k == _ALLOW_EVICTION]
    if not found:
        return url, None
    rest = urlencode([(k, v) for k, v in pairs if k != _ALLOW_EVICTION])
    return parts._replace(query=rest).geturl(), _flag(found[-1])


def _redact(url: str) -> str:
    """Return ``url`` with its password (in the user part or the query) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if colon else netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs])
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return shown + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


# -- per-loop connections ----------------------------------------------------------------------


@dataclass(eq=False)
class _Link:
    """The backend's connections on one event loop (redis.asyncio clients are loop-bound)."""

    loop: asyncio.AbstractEventLoop
    client: redis.asyncio.Redis
    scripts: dict[str, AsyncScript]
    keeper: asyncio.Task[None] | None = None
    ready: bool = False
    released: bool = False
    #: Whether this link read the ``maxmemory-policy`` (its first round trip does, see _raw).
    policy_read: bool = False


class RedisBackend:
    """A task store in Redis, shared by worker processes on any number of hosts.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS, the
            server certificate is verified) or ``unix:///path.sock``; see redis-py's
            ``from_url`` for query options.
        prefix: the first part of every key, so several apps can share one Redis.
        keep_finished: default seconds a finished task's record (status, result, error) is
            kept for lookups by id; ``0`` deletes it at once.
        client: a ``redis.asyncio.Redis`` to use instead of connecting to ``url``; the caller
            keeps ownership (``close()`` leaves it open) and it serves one event loop only.
        socket_timeout: seconds to wait for a reply before the server counts as unreachable.
        connect_timeout: seconds to wait for a connection.
        ping_interval: longest single blocking read of an idle worker, so that a dead
            connection is noticed within about that time.
        keep_dead: seconds a dead-lettered record is kept (``None``: ``keep_finished``).
        max_connections: connections of each pool (one per event loop, one for threads):
            callers beyond it wait for a free one, so a burst of concurrent calls never
            opens more than this many (``?max_connections=`` in the URL wins).
        pool_timeout: seconds a caller waits for a free connection before
            ``BackendUnavailable``.
        allow_eviction: let a worker claim tasks even when Redis's ``maxmemory-policy`` may
            evict them (``allkeys-*``); also ``?allow_eviction=1`` in the URL. Without it a
            worker refuses (``EvictionPolicyError``, logged CRITICAL) and producers warn.

    Attributes:
        resets: how many times this process found the store wiped (its ``epoch`` key gone).
    """

    durable = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "dowork",
        keep_finished: float = 7 * 24 * 3600.0,
        keep_dead: float | None = None,
        client: redis.asyncio.Redis | None = None,
        socket_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        ping_interval: float = 5.0,
        max_connections: int = 50,
        pool_timeout: float = 30.0,
        allow_eviction: bool = False,
    ) -> None:
        url, allowed = _without_flag(url)
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"a Redis URL starts with redis://, rediss:// or unix://: {_redact(url)!r}"
            )
        if not prefix:
            raise ValueError("prefix must not be empty")
        if client is not None and client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the client must return bytes: create it with decode_responses=False")
        self.url = url
        self.prefix = prefix
        self.keep_finished = keep_finished
        self.keep_dead = keep_dead
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.pool_timeout = pool_timeout
        self.allow_eviction = allow_eviction or bool(allowed)
        #: The ``maxmemory-policy`` last read (None: not read, or INFO refused).
        self.policy: str | None = None
        self._policy_said: set[tuple[str | None, bool]] = set()
        self._gate_at = 0.0  # when check_worker reads the policy again (time.monotonic)
        self._refusal: str | None = None  # why a worker refuses, while it does
        self._sync_policy_read = False
        self._client = client
        self._keys = f"{prefix}:"
        self._links: dict[asyncio.AbstractEventLoop, _Link] = {}
        self._sync: tuple[redis.Redis, dict[str, Script]] | None = None
        self._links_lock = threading.Lock()
        self._wakeups = Wakeups()
        self._taking: dict[str, asyncio.Task[None]] = {}  # see _start_take
        self._epoch: bytes | None = None
        self.resets = 0

    def __repr__(self) -> str:
        where = "client=..." if self._client is not None else repr(_redact(self.url))
        return f"RedisBackend({where}, prefix={self.prefix!r})"

    # -- plumbing --------------------------------------------------------------------------

    def _retention(self, outcome: Outcome | None, keep: float | None) -> float:
        """Seconds to keep a finished record (see ``retention``)."""
        return retention(outcome, keep, self.keep_finished, self.keep_dead)

    def _new_client(self) -> redis.asyncio.Redis:
        """An asyncio client on a bounded pool: callers past ``max_connections`` wait."""
        try:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=self.pool_timeout,
                retry=Retry(NoBackoff(), 0),  # a lost reply must not run a script twice
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.connect_timeout,
            )
        except ValueError as exc:  # redis-py names the bad part of the URL
            raise ValueError(f"{_redact(self.url)}: {exc}") from None
        client = redis.asyncio.Redis(connection_pool=pool)
        client.auto_close_connection_pool = True  # closing the client closes its pool
        return client

    def _sync_client(self) -> tuple[redis.Redis, dict[str, Script]]:
        """The blocking client (thread-safe, shared by every thread) and its push scripts."""
        pair = self._sync
        if pair is None:
            with self._links_lock:
                pair = self._sync
                if pair is None:
                    try:
                        pool = redis.BlockingConnectionPool.from_url(
                            self.url,
                            max_connections=self.max_connections,
                            timeout=self.pool_timeout,
                            retry=redis.retry.Retry(NoBackoff(), 0),  # never run twice
                            socket_timeout=self.socket_timeout,
                            socket_connect_timeout=self.connect_timeout,
                        )
                    except ValueError as exc:
                        raise ValueError(f"{_redact(self.url)}: {exc}") from None
                    client = redis.Redis(connection_pool=pool)
                    client.auto_close_connection_pool = True
                    scripts = {n: client.register_script(SCRIPTS[n]) for n in _SYNC}
                    pair = self._sync = (client, scripts)
        return pair

    def _link(self) -> _Link:
        """The connections for the running event loop, created on first use."""
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is not None:
            return link
        with self._links_lock:
            for old in [old for old in self._links if old.is_closed()]:
                del self._links[old]  # a loop closed without cancelling our keeper
            client = self._client if self._client is not None else self._new_client()
            scripts = {name: client.register_script(s) for name, s in SCRIPTS.items()}
            link = _Link(loop, client, scripts)
            link.keeper = loop.create_task(self._keep(link), name="dowork-redis-keeper")
            self._links[loop] = link
        return link

    async def _keep(self, link: _Link) -> None:
        """Live as long as the loop: closing the loop cancels it, which closes the link."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await self._release(link)
            raise
        # A GeneratorExit (the loop was dropped without cancelling us) passes through:
        # with no loop left there is nothing to await, and the connections die with it.

    async def _release(self, link: _Link) -> None:
        if link.released:
            return
        link.released = True
        with self._links_lock:
            if self._links.get(link.loop) is link:
                del self._links[link.loop]
        if link.client is not self._client:
            with contextlib.suppress(Exception):
                await link.client.aclose()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn redis-py's exceptions into dowork's (never showing a password)."""
        try:
            yield
        except redis.exceptions.AuthenticationError as exc:
            raise BackendError(f"{_redact(self.url)}: {exc}") from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise BackendUnavailable(f"{_redact(self.url)}: {exc}") from exc
        except redis.exceptions.ResponseError as exc:
            if str(exc).startswith(("READONLY", "MASTERDOWN", "LOADING", "TRYAGAIN")):
                raise BackendUnavailable(f"{_redact(self.url)}: {exc}") from exc
            if isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM " in str(exc):
                raise BackendFull(f"{_redact(self.url)}: {exc} (maxmemory reached)") from exc
            raise BackendError(f"{_redact(self.url)}: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"{_redact(self.url)}: {exc}") from exc

    async def _script(self, name: str, *args: str | bytes | int) -> Any:
        link = self._link()
        script = link.scripts[name]
        command = ("EVALSHA", script.sha, 0, self._keys, *args)
        with self._errors():
            (answer,) = await self._raw(link, command)
            if isinstance(answer, redis.exceptions.NoScriptError):  # Redis restarted
                await link.client.script_load(script.script)
                (answer,) = await self._raw(link, command)
            if isinstance(answer, Exception):
                raise answer
            return answer

    async def _one(self, *command: str | bytes | int) -> Any:
        """The answer to one plain command (see ``_raw``), errors raised as dowork's."""
        with self._errors():
            (answer,) = await self._raw(self._link(), command)
            if isinstance(answer, Exception):
                raise answer
            return answer

    async def _raw(
        self, link: _Link, *commands: Sequence[str | bytes | int], probe: bool = True
    ) -> list[Any]:
        """Send ``commands`` in one write on a pooled connection and read their answers.

        The commands are packed in C (hiredis) when available: redis-py's asyncio client
        packs in Python, which for a batch of settlements costs more than the round trip.
        An error answer is returned (not raised), so the answers after it are still read.
        The link's first round trip also reads ``INFO memory``, so that every process that
        connects (producer, worker, command line) hears about an evicting Redis.
        """
        if probe and not link.policy_read:
            info, *rest = await self._raw(link, ("INFO", "memory"), *commands, probe=False)
            link.policy_read = True
            self._note_policy(_policy_of(info), worker=False)
            return rest
        pool = link.client.connection_pool
        conn = await pool.get_connection(*_CONNECTION_ARGS)  # type: ignore[no-untyped-call]
        try:
            if _pack is not None:
                packed: bytes | list[bytes] = b"".join(_pack(tuple(c)) for c in commands)
            else:
                packed = conn.pack_commands(commands)
            await conn.send_packed_command(packed, check_health=False)
            answers: list[Any] = []
            for _ in commands:
                try:
                    answers.append(await conn.read_response())
                except redis.exceptions.ResponseError as exc:
                    answers.append(exc)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            await conn.disconnect(nowait=True)  # mid-answer: the connection is out of step
            raise _Unanswered(f"no reply to a request sent ({exc!r})") from exc
        except BaseException:
            await conn.disconnect(nowait=True)  # mid-answer: the connection is out of step
            raise
        finally:
            await pool.release(conn)
        return answers

    # -- opening and closing ---------------------------------------------------------------

    async def open(self) -> None:
        """Connect (PING) and load the scripts; other calls connect lazily too."""
        link = self._link()
        if link.ready:
            return
        with self._errors():
            for answer in await self._raw(link, ("PING",)):  # (and the policy, see _raw)
                if isinstance(answer, Exception):
                    raise answer
            for script in link.scripts.values():
                script.sha = await link.client.script_load(script.script)
            await self._check_epoch(link.client)
        link.ready = True

    async def _check_epoch(self, client: redis.asyncio.Redis) -> None:
        """Write the epoch key if missing; say loudly when the one we saw before is gone.

        A different or missing epoch means Redis lost its data since we last looked (a restart
        without persistence, FLUSHALL, eviction): tasks stored before are gone.
        """
        key = _text(self._keys + "epoch")
        current: Any = await client.get(key)
        if current is None:  # a new or wiped store (at maxmemory: written at a later check)
            try:
                await client.set(key, uuid.uuid4().hex, nx=True)
            except redis.exceptions.OutOfMemoryError:
                return
            current = await client.get(key)
        if self._epoch is not None and current != self._epoch:
            self.resets += 1
            log.critical(
                "%r: backend data reset: the Redis data was wiped (restart without persistence, "
                "FLUSHALL or eviction); tasks stored before are lost. Working on.",
                self,
            )
        self._epoch = current

    def _note_policy(self, policy: str | None, *, worker: bool) -> str | None:
        """Say what Redis's ``maxmemory-policy`` means here; why a worker must refuse, if so.

        ``noeviction`` is safe. Under ``volatile-*`` Redis evicts only keys with a TTL: never a
        task record, but idempotency keys and rate-limit windows, so it is allowed with a
        warning. ``allkeys-*`` (or a policy this code does not know) may evict any task: a
        worker refuses it unless ``allow_eviction``; a producer or the CLI warns. Each
        warning is logged once per backend; a worker's refusal is CRITICAL every time.
        """
        self.policy = policy
        if policy == "noeviction":
            return None
        if policy is None:
            self._say_policy(
                policy, worker, "cannot read maxmemory-policy (INFO memory refused); make "
                "sure it is noeviction, or Redis may evict task records",
            )  # fmt: skip
            return None
        if policy.startswith("volatile-"):
            self._say_policy(
                policy, worker, f"maxmemory-policy is {policy}: task records are never "
                "evicted (they have no TTL), but idempotency keys and rate-limit windows may "
                "be; use noeviction to keep those guarantees",
            )  # fmt: skip
            return None
        problem = (
            f"maxmemory-policy is {policy}: Redis may evict task records, so stored tasks "
            "could vanish without a trace; set maxmemory-policy noeviction"
        )
        if not worker or self.allow_eviction:
            self._say_policy(policy, worker, problem)
            return None
        refusal = (
            f"{self!r}: {problem} (this worker refuses to claim tasks until then; "
            "allow_eviction=True, ?allow_eviction=1 or dowork worker --allow-eviction overrides)"
        )
        log.critical("%s", refusal)
        return refusal

    def _say_policy(self, policy: str | None, worker: bool, message: str) -> None:
        """Log a warning about the policy once per backend (and role)."""
        if (policy, worker) not in self._policy_said:
            self._policy_said.add((policy, worker))
            log.warning("%r: %s", self, message)

    async def check_worker(self) -> None:
        """Refuse to work on a Redis that may evict task records (see ``_note_policy``).

        Workers call it before every claim: it reads ``INFO memory`` at most once a minute
        (every few seconds while refusing), so a policy changed at run time is noticed.

        Raises:
            EvictionPolicyError: the policy is ``allkeys-*`` and ``allow_eviction`` is off.
            BackendUnavailable: Redis cannot be reached.
        """
        now = time.monotonic()
        if now >= self._gate_at:
            link = self._link()
            with self._errors():
                (info,) = await self._raw(link, ("INFO", "memory"), probe=False)
                if isinstance(info, Exception) and not isinstance(
                    info, redis.exceptions.NoPermissionError
                ):
                    raise info
            link.policy_read = True
            self._refusal = self._note_policy(_policy_of(info), worker=True)
            self._gate_at = now + (_POLICY_RECHECK_REFUSED if self._refusal else _POLICY_RECHECK)
        if self._refusal is not None:
            raise EvictionPolicyError(self._refusal)

    def _probe_sync(self, client: redis.Redis) -> None:
        """Read the policy once on the blocking client (a producer: warn only)."""
        try:
            info: Any = client.info("memory")
        except redis.exceptions.NoPermissionError as exc:
            info = exc
        self._sync_policy_read = True
        self._note_policy(_policy_of(info), worker=False)

    async def close(self) -> None:
        """Close this event loop's connections (and ask other loops to close theirs)."""
        running = asyncio.get_running_loop()
        with self._links_lock:
            links = list(self._links.values())
        for link in links:
            keeper = link.keeper
            if keeper is None:
                continue
            if link.loop is running:
                keeper.cancel()
                await asyncio.wait([keeper])
                await self._release(link)  # a keeper cancelled before it ran did not
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed already
                    link.loop.call_soon_threadsafe(keeper.cancel)
        pair, self._sync = self._sync, None
        if pair is not None:
            pair[0].close()  # a later push_sync connects again

    # -- the protocol ----------------------------------------------------------------------

    async def push(self, records: Sequence[Record], *, fresh: bool = False) -> dict[str, str]:
        """Store the records in one transaction: all of them, or none if an id is taken.

        Records whose idempotency key is held are left out (see ``Backend.push``). A
        ``fresh`` plain task due now goes to its queue's inbox, as in ``push_sync``.
        """
        if not records:
            return {}
        with self._pushing(records):
            return await self._push(records, fresh)

    @contextlib.contextmanager
    def _pushing(self, records: Sequence[Record]) -> Iterator[None]:
        """Report a push whose request went out but whose reply was lost as ``OutcomeUnknown``."""
        try:
            yield
        except BackendUnavailable as exc:
            if not isinstance(exc.__cause__, _Unanswered):
                raise  # nothing was sent: nothing was stored
            ids = tuple(r.id for r in records)
            shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            raise OutcomeUnknown(
                f"{_redact(self.url)}: the reply to a push of task(s) {shown} was lost "
                f"({exc.__cause__.__cause__!r}): the outcome is unknown, they may be stored. "
                "Retrying with the same task id is safe (the id is the idempotency key: a "
                "stored task is refused as DuplicateTask, never run twice)",
                ids,
            ) from exc.__cause__
        except redis.exceptions.RedisError as exc:  # pipelines of large pushes
            with self._errors():
                raise exc from None

    async def _drain_for(self, records: Sequence[Record]) -> None:
        """Drain the inboxes of the records' queues before a push that checks its ids.

        A task id submitted through an inbox (a ``submit()`` whose reply was lost, say) is
        then a stored record, so the push refuses it as a duplicate instead of storing it
        a second time.
        """
        for queue in dict.fromkeys(r.queue for r in records):
            await self._script("drain", _text(queue))

    async def _push(self, records: Sequence[Record], fresh: bool) -> dict[str, str]:
        inboxed = self._to_inbox(records) if fresh else None
        if not fresh:
            await self._drain_for(records)
        if inboxed is not None:  # asubmit(): two plain commands, no script
            with self._errors():
                for answer in await self._raw(self._link(), *inboxed):
                    if isinstance(answer, Exception):
                        raise answer
            return {}
        if any(r.idempotency_key is not None for r in records):
            return await self._push_keyed(records)
        link = self._link()
        if len(records) <= _PUSH_CHUNK:
            answer = await self._script("push", *_push_args(records, b"1"))
            _check_push(answer)
        else:
            with self._errors():
                calls, flag = self._push_calls(records)
                async with link.client.pipeline(transaction=True) as pipe:
                    for name, args in calls:
                        await link.scripts[name](args=args, client=pipe)
                    pipe.delete(flag)
                    answers = await pipe.execute()
            _check_push(answers[0])
        self._wakeups.notify({r.queue for r in records})
        return {}

    async def _push_keyed(self, records: Sequence[Record]) -> dict[str, str]:
        """Push records of which some carry idempotency keys, in one script."""
        answer = await self._script("push_keyed", *_keyed_args(records))
        if answer[0] != b"ok":
            task_id = answer[1].decode("utf-8", "surrogatepass")
            raise DuplicateTask(f"a task with id {task_id!r} already exists (nothing written)")
        held = [bytes(i).decode("utf-8", "surrogatepass") for i in answer[1:]]
        same = dict(zip(held[::2], held[1::2], strict=True))
        self._wakeups.notify({r.queue for r in records if r.id not in same})
        return same

    def push_sync(self, records: Sequence[Record], *, fresh: bool = False) -> bool:
        """``push`` from the calling thread (blocking, thread-safe), with no event loop.

        One round trip on a blocking client. ``fresh`` says every id was just drawn at
        random (128 bits), so the check for ids already taken is skipped. Returns False,
        having done nothing, for a backend built on a caller's ``client`` (an asyncio
        client), or for records with idempotency keys: use ``push`` then.
        """
        if self._client is not None or any(r.idempotency_key is not None for r in records):
            return False
        if not records:
            return True
        client, scripts = self._sync_client()
        try:
            if not self._sync_policy_read:
                self._probe_sync(client)
            if not fresh:
                self._drain_sync(client, scripts, records)
            inboxed = self._to_inbox(records) if fresh else None
            if inboxed is not None:  # submit(): two plain commands, no script
                _commands_sync(client, *inboxed)
                return True
            if len(records) <= _PUSH_CHUNK:
                script = scripts["push"]
                args = [self._keys, *_push_args(records, b"" if fresh else b"1")]
                try:
                    answer = _evalsha_sync(client, script.sha, args)
                except redis.exceptions.NoScriptError:
                    answer = script(args=args)  # loads it, then runs it
            else:
                calls, flag = self._push_calls(records, fresh)
                try:
                    answer = _transaction_sync(client, scripts, calls, flag)
                except redis.exceptions.NoScriptError:  # Redis restarted: load, then again
                    for script in scripts.values():
                        script.sha = client.script_load(script.script)
                    answer = _transaction_sync(client, scripts, calls, flag)
        except (redis.exceptions.RedisError, OSError) as exc:  # (no context manager: hot path)
            with self._pushing(records), self._errors():
                raise exc from None
        _check_push(answer)  # other processes wake on the script's tokens, and so do we
        return True

    def _drain_sync(
        self, client: redis.Redis, scripts: dict[str, Script], records: Sequence[Record]
    ) -> None:
        """``_drain_for`` from a thread."""
        for queue in dict.fromkeys(r.queue for r in records):
            drain: list[str | bytes | int] = [self._keys, _text(queue)]
            try:
                _evalsha_sync(client, scripts["drain"].sha, drain)
            except redis.exceptions.NoScriptError:
                scripts["drain"](args=drain)

    def _to_inbox(self, records: Sequence[Record]) -> tuple[_Command, _Command] | None:
        """The commands pushing one plain task due now to its queue's inbox, or None.

        None: the records must go through a script (see ``_inbox_entry`` and ``inbox.lua``).
        """
        if len(records) != 1 or records[0].idempotency_key is not None:
            return None
        entry = _inbox_entry(records[0])
        if entry is None:
            return None
        queue = _text(records[0].queue)
        keys = _text(self._keys)
        return ("RPUSH", keys + b"q:" + queue + b":inbox", entry), ("SADD", keys + b"queues", queue)

    def _push_calls(
        self, records: Sequence[Record], fresh: bool = False
    ) -> tuple[list[tuple[str, list[str | bytes | int]]], bytes]:
        """The script calls of a large push (one transaction) and the flag key to delete.

        Unless the ids are ``fresh``, every id is checked first (a taken one sets the flag
        key), then one ``push.lua`` per chunk writes only if the flag is unset. The first
        answer says whether the push happened.
        """
        keys = self._keys
        calls: list[tuple[str, list[str | bytes | int]]] = []
        flag = b""
        if not fresh:
            flag = _text(f"{keys}abort:{uuid.uuid4().hex}")
            calls.append(("check", [keys, flag, *(_text(r.id) for r in records)]))
        for start in range(0, len(records), _PUSH_CHUNK):
            chunk = records[start : start + _PUSH_CHUNK]
            calls.append(("push", [keys, *_push_args(chunk, flag)]))
        return calls, flag

    async def claim(
        self,
        queue: str,
        now: float,
        limit: int,
        lease: float,
        owner: str,
        max_running: int | None = None,
        alone_from: int | None = None,
        *,
        aging: float = PRIORITY_AGING,
        rates: Mapping[str, tuple[int, float]] | None = None,
        per_key: int | None = None,
    ) -> list[Record]:
        """Lease up to ``limit`` due records (fewer under ``max_running``) in one script."""
        if limit <= 0:
            return []
        await self.check_worker()
        return await self._claim(
            queue, now, limit, lease, owner, max_running, alone_from, aging, rates, per_key
        )

    async def _claim(
        self,
        queue: str,
        now: float,
        limit: int,
        lease: float,
        owner: str,
        max_running: int | None,
        alone_from: int | None,
        aging: float,
        rates: Mapping[str, tuple[int, float]] | None,
        per_key: int | None,
        popped: bytes = b"",
    ) -> list[Record]:
        """``claim``, giving back an entry the caller ``popped`` from the inbox (see claim.lua)."""
        cap = "" if max_running is None else str(max_running)
        alone = "" if alone_from is None else str(alone_from)
        each = "" if per_key is None else str(per_key)
        rows = await self._script(
            "claim", _text(queue), _num(now), limit, _num(now + lease), _text(owner), cap, alone,
            popped, _num(lease), _num(aging), each, self._keep_dead(), *_rate_args(rates),
        )  # fmt: skip
        return await self._claimed(rows, owner)

    async def _pop(
        self,
        link: _Link,
        queue: str,
        block: str,
        now: float,
        limit: int,
        lease: float,
        owner: str,
        alone_from: int | None,
        aging: float,
    ) -> list[Record]:
        """``wait_claim`` of a worker with no flow control: pop the inbox, start what it gives.

        The pop goes with ``peek.lua`` in one round trip: an entry whose id is in use (or twice
        in ``taken``) is given back to a claim instead, which dead-letters it; one stored by a
        drain meanwhile starts only once ``take.lua`` says so.
        """
        q = f"{self._keys}q:{queue}:"
        inbox = _text(q + "inbox")
        began = link.loop.time()
        peek = link.scripts["peek"]
        with self._errors():
            popped, peeked = await self._raw(
                link,
                ("BLMOVE", inbox, _text(q + "taken"), "LEFT", "RIGHT", block),
                ("EVALSHA", peek.sha, 0, self._keys, _text(queue)),  # (see peek.lua)
            )
            if isinstance(popped, redis.exceptions.OutOfMemoryError):
                popped = peeked = b"t"  # Redis is full: a claim drains it (see may_fill.lua)
            elif isinstance(popped, Exception):
                raise popped
            if isinstance(peeked, redis.exceptions.NoScriptError):  # Redis restarted
                await link.client.script_load(peek.script)
            elif isinstance(peeked, Exception):
                raise peeked
        if popped is None:
            return []
        record = _from_inbox(popped, queue)
        if record is None or isinstance(peeked, Exception) or _text(record.id) in peeked[1]:
            # A wake-up token, garbage, an id in use, or not peeked (Redis restarted and lost
            # the script): give it back to a claim, which checks everything.
            return await self._claim(
                queue, now, limit, lease, owner, None, alone_from, aging, None, None,
                popped,
            )  # fmt: skip
        now += link.loop.time() - began  # the blocking wait
        record.status, record.attempts, record.owner = "running", 1, owner
        record.lease_until, record.updated_at = now + lease, now
        if _text(record.id) not in peeked[0]:  # stored by a drain meanwhile: ask first
            if await self._take(record, popped) == 0:
                return []
            return [record]
        self._start_take(link, record, popped)
        return [record]

    async def wait_claim(
        self,
        queue: str,
        timeout: float,
        now: float,
        limit: int,
        lease: float,
        owner: str,
        max_running: int | None = None,
        alone_from: int | None = None,
        *,
        aging: float = PRIORITY_AGING,
        rates: Mapping[str, tuple[int, float]] | None = None,
        per_key: int | None = None,
    ) -> list[Record]:
        """``wait`` then ``claim``: what an idle worker does.

        A worker with no flow control to apply (no ``max_running``, rate limits or
        ``per_key``) pops the queue's inbox into ``taken`` and, when that gives it a task
        pushed by ``submit()``, returns it at once, started before any script ran: ``take``
        records its lease in the background, and every later call about that task waits
        for it. A wake-up token it pops instead is given back to a claim. Any other worker
        waits for the inbox to hold something (popping it back in place) and sends the
        claim in the same round trip, so that it runs in Redis the moment a push comes.
        Either way the drained tokens' and tasks' times serve as ``now`` when later than
        the ``now`` given (taken before the wait); leases run from that time.
        """
        if timeout <= 0 or limit <= 0:
            return await self.claim(
                queue, now, limit, lease, owner, max_running, alone_from, aging=aging,
                rates=rates, per_key=per_key,
            )  # fmt: skip
        await self.check_worker()
        link = self._link()
        q = f"{self._keys}q:{queue}:"
        inbox = _text(q + "inbox")
        block = _num(max(0.01, min(timeout, self.ping_interval, self.socket_timeout / 2)))
        if max_running is None and not rates and per_key is None:
            return await self._pop(link, queue, block, now, limit, lease, owner, alone_from, aging)
        script = link.scripts["claim"]
        cap = "" if max_running is None else str(max_running)
        alone = "" if alone_from is None else str(alone_from)
        claim = (
            "EVALSHA", script.sha, 0, self._keys, _text(queue), _num(now), limit,
            _num(now + lease), _text(owner), cap, alone, "", _num(lease), _num(aging),
            "" if per_key is None else str(per_key), self._keep_dead(), *_rate_args(rates),
        )  # fmt: skip
        with self._errors():
            wait = ("BLMOVE", inbox, inbox, "LEFT", "LEFT", block)  # (moves nothing)
            popped, rows = await self._raw(link, wait, claim)
            if isinstance(rows, redis.exceptions.NoScriptError):  # Redis restarted
                await link.client.script_load(script.script)
                return []
            for answer in (popped, rows):
                if isinstance(answer, Exception):
                    raise answer
        return await self._claimed(rows, owner)

    def _keep_dead(self) -> str:
        """Seconds a dead letter is kept, as the claim script takes it (see ``bury``)."""
        return _num(self._retention(Outcome.DEAD, None))

    async def _claimed(self, rows: Sequence[Any], owner: str) -> list[Record]:
        """The records of a claim's answer; those Python cannot read are dead-lettered."""
        claimed, unfit = _claimed(rows, owner)
        buried = rows[2]
        for task_id, why in zip(buried[::2], buried[1::2], strict=True):
            shown, reason = (bytes(b).decode("utf-8", "backslashreplace") for b in (task_id, why))
            log.error("%r: task %r dead-lettered (malformed): %s", self, shown, reason)
        if unfit:
            now = float(rows[0])
            args: list[str | bytes | int] = [_num(now), _num(now + float(self._keep_dead()))]
            args.append(len(unfit))
            for task_id, token, why in unfit:
                args += [task_id, token, _text(why)]
            await self._script("bury", *args)
            for task_id, _, why in unfit:
                shown = task_id.decode("utf-8", "backslashreplace")
                log.error("%r: task %r dead-lettered (malformed): %s", self, shown, why)
        return claimed

    def _start_take(self, link: _Link, record: Record, entry: bytes) -> None:
        """Record in the background that this worker runs a task it popped (see ``take.lua``)."""

        async def take() -> None:
            try:
                code = await self._take(record, entry)
                if code == 0:  # its settlement will be refused, like a lost lease's
                    log.warning("%r: task %s is not this worker's to run any more", self, record.id)
            except BackendError as exc:  # Redis away: the drain and the reaper take over
                log.warning("%r: could not record the start of task %s (%r)", self, record.id, exc)
            finally:
                self._taking.pop(record.id, None)

        self._taking[record.id] = link.loop.create_task(take())

    async def _take(self, record: Record, entry: bytes) -> int:
        """Record that this worker runs a task it popped (``take.lua``); 0 if it must not."""
        assert record.lease_until is not None
        code = await self._script(
            "take", _text(record.queue), entry, _text(record.owner or ""),
            _num(record.lease_until), _num(record.updated_at),
        )  # fmt: skip
        return int(code)

    async def _taken(self, ids: Sequence[str]) -> None:
        """Wait until the starts of these tasks are recorded (see ``_start_take``)."""
        if not self._taking:
            return
        loop = asyncio.get_running_loop()
        taking = (self._taking.get(i) for i in ids)
        pending = [t for t in taking if t is not None and t.get_loop() is loop]
        if pending:
            await asyncio.wait(pending)

    async def settle(self, settlements: Sequence[Settlement]) -> list[str]:
        """Write outcomes in one script; refuse those whose lease token is stale."""
        if not settlements:
            return []
        await self._taken([s.id for s in settlements])
        args: list[str | bytes | int] = [len(settlements)]
        for s in settlements:
            args += self._settle_args(s)
        try:
            refused = await self._script("settle", *args)
        except (BackendUnavailable, BackendFull):
            raise
        except BackendError as exc:  # the script refused an outcome: it wrote nothing
            if len(settlements) > 1:  # each alone, so that one never holds back the rest
                refused = []
                for s in settlements:
                    refused += await self.settle([s])
                return refused
            log.error("%r: outcome of task %r dropped: %s", self, settlements[0].id, exc)
            return [settlements[0].id]  # (its lease runs out: the reaper takes it back)
        return [i.decode("utf-8", "surrogatepass") for i in refused]

    def _settle_args(self, s: Settlement) -> list[str | bytes | int]:
        """One settlement's ``settle.lua`` arguments."""
        if s.outcome is Outcome.STARTED:
            status, expires = "started", ""
        elif s.outcome is Outcome.RETRY:
            status, expires = "retrying", ""
        else:
            keep = self._retention(s.outcome, s.keep)
            status, expires = _FINAL[s.outcome], (_num(s.now + keep) if keep > 0 else "")
        return [
            _text(s.id), s.token, status, _num(s.now), _num(s.run_at), _opt(s.error),
            _opt(s.reason), _opt(s.result), expires, _opt(s.payload), _opt(s.attempt),
            "1" if s.ran else "",
        ]  # fmt: skip

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], now: float, lease: float
    ) -> tuple[list[str], list[str]]:
        """Extend leases; report the lost ones and those asked to cancel."""
        if not leases:
            return [], []
        await self._taken([i for i, _ in leases])
        args: list[str | bytes | int] = [_num(now + lease), len(leases)]
        for task_id, token in leases:
            args += [_text(task_id), token]
        codes = await self._script("heartbeat", *args)
        lost = [i for (i, _), code in zip(leases, codes, strict=True) if code == 0]
        cancel = [i for (i, _), code in zip(leases, codes, strict=True) if code == 2]
        return lost, cancel

    async def release(self, ids: Sequence[str], now: float) -> list[str]:
        """Make later-due waiting records due now (one script); wakes their queues' workers."""
        if not ids:
            return []
        flat = await self._script("release", _num(now), len(ids), *[_text(i) for i in ids])
        released = [bytes(v).decode("utf-8", "surrogatepass") for v in flat]
        self._wakeups.notify(set(released[1::2]))
        return released[::2]

    async def progress(self, updates: Sequence[tuple[str, int, str]]) -> None:
        """Store reported progress for records still on the reporting attempt (one script)."""
        if not updates:
            return
        await self._taken([i for i, _, _ in updates])
        args: list[str | bytes | int] = [len(updates)]
        for task_id, token, text in updates:
            args += [_text(task_id), token, _text(text)]
        await self._script("progress", *args)

    async def reap(self, queue: str, now: float, crash_budget: int) -> tuple[int, int]:
        """Requeue expired leases; dead-letter tasks that crashed their workers too often.

        Every worker reaps on a timer, so this is also where a wiped store is noticed.
        """
        link = self._link()
        with self._errors():
            await self._check_epoch(link.client)
        if await self._memory_short():
            await self._relieve(now)
        requeued, dead = await self._script(
            "reap",
            _text(queue),
            _num(now),
            crash_budget,
            _num(now + self._retention(Outcome.DEAD, None)),
        )
        return int(requeued), int(dead)

    async def get(self, ids: Sequence[str]) -> list[Record]:
        """Fetch records by id (one pipelined round trip)."""
        if not ids:
            return []
        found = await self._get(ids)
        if len(found) < len(set(ids)):  # maybe in an inbox: drain them all, and look again
            for _ in range(1000):
                if not await self._script("drain", b""):
                    break
            have = {r.id for r in found}
            found += await self._get([i for i in ids if i not in have])
            order = {task_id: n for n, task_id in enumerate(ids)}
            found.sort(key=lambda r: order[r.id])
        return found

    async def _get(self, ids: Sequence[str]) -> list[Record]:
        link = self._link()
        with self._errors():
            hashes = await self._raw(
                link, *[("HGETALL", _text(self._keys + "task:" + task_id)) for task_id in ids]
            )
            for answer in hashes:
                if isinstance(answer, Exception):
                    raise answer
        return [_shown(h) for h in hashes if h]

    async def cancel(self, task_id: str, now: float) -> str:
        """Cancel a waiting task, or flag a running one for its worker."""
        answer = await self._script(
            "cancel", _text(task_id), _num(now), _num(now + self.keep_finished)
        )
        return bytes(answer).decode()

    async def next_due(self, queue: str) -> float | None:
        """Earliest run time of the queue's waiting records, across levels and lanes.

        One round trip for a queue without priority levels (the heads of the plain waiting
        zset and of the lanes' earliest run times), a second for the heads of the levels'
        zsets when there are some.
        """
        link = self._link()
        q = f"{self._keys}q:{queue}:"
        waiting = _text(q + "waiting")
        with self._errors():
            first, *heads = await self._raw(
                link,
                ("LRANGE", _text(q + "inbox"), 0, 8),
                ("SMEMBERS", _text(q + "levels")),
                ("ZRANGE", waiting, 0, 0, "WITHSCORES"),
                ("ZRANGE", _text(q + "lanes:due"), 0, 0, "WITHSCORES"),
                ("ZRANGE", _text(q + "lanes:later"), 0, 0, "WITHSCORES"),
            )
            for answer in (first, *heads):
                if isinstance(answer, Exception):
                    raise answer
            # Tasks in the inbox (see inbox.lua) are due at once; at most its first 8 entries are
            # wake-up tokens, which announce tasks found below.
            pushed = [_from_inbox(e, queue) for e in first]
            if any(r is not None for r in pushed):
                return min(r.run_at for r in pushed if r is not None)
            levels, heads = heads[0], heads[1:]
            if levels:
                heads += await self._raw(
                    link, *[("ZRANGE", waiting + b":" + p, 0, 0, "WITHSCORES") for p in levels]
                )
            for answer in heads:
                if isinstance(answer, Exception):
                    raise answer
        times = [_score(head) for head in heads if head]
        return min(times) if times else None

    async def counts(self, queue: str) -> dict[str, int]:
        """Records per status (kept up to date by every script), plus the inbox, exactly.

        The inbox is counted, not drained (a drain moves 1,000 entries at most): its tasks
        are pending, those popped into ``taken`` running; wake-up tokens (only ever among its
        first 8 entries, see ``inbox.lua``) are not tasks. One transaction, so nothing moves
        between the reads; a Redis at maxmemory refuses transactions, so there the reads go
        one after the other (a drain between them may count a task twice, as nothing new can
        be pushed then).
        """
        link = self._link()
        q = f"{self._keys}q:{queue}:"
        inbox = _text(q + "inbox")
        reads: tuple[tuple[str | bytes | int, ...], ...] = (
            ("HGETALL", _text(q + "counts")),
            ("LLEN", inbox),
            ("LRANGE", inbox, 0, 7),
            ("LRANGE", _text(q + "taken"), 0, -1),
        )
        with self._errors():
            answers = await self._raw(link, ("MULTI",), *reads, ("EXEC",))
            if any(isinstance(a, redis.exceptions.OutOfMemoryError) for a in answers):
                answers = [await self._raw(link, *reads)]
            for answer in answers:
                if isinstance(answer, Exception):
                    raise answer
        raw, inboxed, head, taken = answers[-1]
        if not isinstance(raw, dict):  # RESP2: a flat list of fields and values
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        counts = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}
        tokens = sum(1 for e in head if bytes(e)[:1] == b"t")
        pending = int(inboxed) - tokens
        if pending:
            counts["pending"] = counts.get("pending", 0) + pending
        running = sum(1 for e in taken if bytes(e)[:1] != b"t")
        if running:
            counts["running"] = counts.get("running", 0) + running
        return {status: n for status, n in counts.items() if n > 0}

    async def wake(self, queue: str, at: float) -> None:
        """A task of ``queue`` fell due at ``at``: wake an idle worker (a token in its inbox).

        Workers block on the inbox, so a retry that falls due while they wait is seen at once
        rather than at their next timeout.
        """
        await self._script("wake", _text(queue), _num(at))
        self._wakeups.notify({queue})

    async def wait(self, queue: str, timeout: float) -> None:
        """Return on a push to ``queue`` from any process, or after ``timeout`` seconds.

        Blocks until the queue's inbox holds something (``BLMOVE`` of its head back in
        place), then drains it (see ``inbox.lua``): every push adds a task or a wake-up token
        there, so one idle worker wakes per push. Without a server it sleeps out the timeout.
        """
        link = self._link()
        key = _text(f"{self._keys}q:{queue}:inbox")
        deadline = link.loop.time() + timeout
        longest = max(0.01, min(self.ping_interval, self.socket_timeout / 2))
        while True:
            left = deadline - link.loop.time()
            if left <= 0:
                return
            try:
                wait = ("BLMOVE", key, key, "LEFT", "LEFT", _num(min(left, longest)))
                drain = ("EVALSHA", link.scripts["drain"].sha, 0, self._keys, _text(queue))
                popped, drained = await self._raw(link, wait, drain)  # (the move moves nothing)
                if isinstance(drained, redis.exceptions.NoScriptError):  # Redis restarted
                    await link.client.script_load(link.scripts["drain"].script)
                for answer in (popped, drained):
                    if isinstance(answer, Exception):
                        raise answer
                if popped is not None:
                    return
            except (redis.exceptions.RedisError, OSError) as exc:
                log.debug("%r: blocking wait failed (%r)", self, exc)
                await self._wakeups.wait(queue, deadline - link.loop.time())
                return

    async def _memory_short(self) -> bool:
        """Whether Redis is within 5 % of its ``maxmemory`` (False without a limit)."""
        link = self._link()
        with self._errors():
            (info,) = await self._raw(link, ("INFO", "memory"))
        if isinstance(info, Exception):  # INFO refused: cannot tell
            return False
        text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
        fields = dict(line.partition(":")[::2] for line in text.splitlines())
        try:
            used, limit = int(fields["used_memory"]), int(fields["maxmemory"])
        except (KeyError, ValueError):
            return False
        return limit > 0 and used >= limit * _MEMORY_SHORT

    async def _relieve(self, now: float) -> None:
        """Memory is short: purge finished records first, so that work can go on.

        Those past their retention go at once; if there are none, one batch of those that
        finished more than ``_EARLY_AGE`` ago (judged by the default retention; the earliest
        to expire first) goes before its time, with a warning. Fresh results stay, for the
        callers waiting on them: a full Redis drains without purging anything anyway.
        """
        if await self.purge_finished(now):
            return
        before = now + self.keep_finished - _EARLY_AGE
        early = int(await self._script("purge", _num(before), _PURGE_BATCH))
        if early:
            log.warning(
                "%r: Redis is near maxmemory: purged %d finished record(s) before their "
                "retention ran out, to make room",
                self,
                early,
            )

    async def purge_finished(self, now: float) -> int:
        """Delete finished records past their retention, a batch per script call."""
        total = 0
        while True:
            deleted = int(await self._script("purge", _num(now), _PURGE_BATCH))
            total += deleted
            if deleted < _PURGE_BATCH:
                return total

    async def server_time(self) -> float:
        """The Redis server's clock (``TIME``), for leases that must share one clock."""
        seconds, micros = await self._one("TIME")
        return int(seconds) + int(micros) / 1e6

    async def queues(self) -> list[str]:
        """Names of the queues with records, sorted (the ``P:queues`` set)."""
        names = await self._one("SMEMBERS", _text(f"{self._keys}queues"))
        return sorted(
            n.decode("utf-8", "surrogatepass") if isinstance(n, bytes) else n for n in names
        )

    async def requeue(self, ids: Sequence[str], now: float) -> list[str]:
        """Send failed, cancelled and dead records back to pending in one script."""
        unique = [_text(i) for i in dict.fromkeys(ids)]
        if not unique:
            return []
        flat = await self._script("requeue", _num(now), len(unique), *unique)
        done = [bytes(i).decode("utf-8", "surrogatepass") for i in flat]
        self._wakeups.notify(set(done[1::2]))  # other processes wake on the script's tokens
        return done[::2]

    async def purge(self, queue: str, statuses: Sequence[str] | None = None) -> int:
        """Delete the queue's records in ``statuses`` (all but running ones for None).

        Runs a batch per script call, so a large queue never blocks Redis for long.
        """
        wanted = status_filter(statuses)
        if wanted == ():
            return 0
        total = 0
        while True:
            deleted = int(
                await self._script("purge_queue", _text(queue), _PURGE_BATCH, *(wanted or ()))
            )
            total += deleted
            if deleted < _PURGE_BATCH:
                return total

    async def beat(
        self,
        worker: WorkerBeat,
        now: float,
        ttl: float,
        finished: Mapping[int, Mapping[str, int]] | None = None,
    ) -> None:
        """Store the worker's beat and add its outcome counts, in one script."""
        args: list[str | bytes | int] = [
            _text(worker.id),
            _text(worker.queue),
            _text(worker.to_json()),
            _num(now),
            _num(now + ttl) if ttl > 0 else "",
            minute_of(now) - STATS_MINUTES * 60,
        ]
        for minute, by_outcome in (finished or {}).items():
            for outcome, n in by_outcome.items():
                args += [f"{int(minute)}:{outcome}", n]
        await self._script("beat", *args)

    async def workers(self, now: float) -> list[WorkerBeat]:
        """The workers whose beat has not expired (one round trip)."""
        link = self._link()
        with self._errors():
            async with link.client.pipeline(transaction=False) as pipe:
                pipe.zrangebyscore(_text(f"{self._keys}workers:alive"), f"({_num(now)}", "+inf")
                pipe.hgetall(_text(f"{self._keys}workers"))
                alive, beats = await pipe.execute()
        return [WorkerBeat.from_json(beats[i]) for i in sorted(alive) if i in beats]

    async def stats(self, queue: str, since: float) -> dict[int, dict[str, int]]:
        """Per-minute outcome counts of the queue from ``since`` on."""
        link = self._link()
        with self._errors():
            raw = await link.client.hgetall(_text(f"{self._keys}q:{queue}:stats"))
        first = minute_of(since)
        out: dict[int, dict[str, int]] = {}
        for field_, n in raw.items():
            text = field_.decode() if isinstance(field_, bytes) else field_
            minute, _, outcome = text.partition(":")
            if int(minute) >= first:
                out.setdefault(int(minute), {})[outcome] = int(n)
        return dict(sorted(out.items()))

    # ``list`` comes last: a method of that name hides the builtin in annotations below it.
    async def list(
        self,
        queue: str,
        statuses: Sequence[str] | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[Record]:
        """One page of the queue's records by ``created_at``, read from its listing zsets."""
        check_page(limit, offset)
        wanted = status_filter(statuses)
        if limit == 0 or wanted == ():
            return []
        rows = await self._script(
            "list", _text(queue), offset, limit, "1" if newest_first else "", *(wanted or ())
        )
        return [_shown(row) for row in rows]
