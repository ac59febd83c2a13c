"""Commands packed in C and sent in one write on a pooled connection, from a thread.

The blocking client (``push_sync``: ``submit()`` from any thread) skips redis-py's command
layers: ``commands_sync`` packs the commands with hiredis, writes them at once and reads the
answers; ``transaction_sync`` does the same for a ``MULTI``/``EXEC`` of script calls. A
connection that fails after a request went out raises ``Unanswered``: the request may have
run. ``CONNECTION_ARGS`` and ``pack`` serve the asyncio round trip too: ``pooled_trip`` is
``Connection._raw``'s through the pool, with ``checkout`` and ``discard`` (a connection kept
between round trips, or the pool's); ``redis_errors`` turns redis-py's exceptions into
dowork's.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import redis
import redis.asyncio
import redis.exceptions
from redis.commands.core import Script

from ...errors import BackendError, BackendFull, BackendUnavailable
from .urls import redact

#: redis-py before 5.3 wants a command name for ``ConnectionPool.get_connection``; later
#: versions warn about it.
CONNECTION_ARGS = (
    ()
    if inspect.signature(redis.asyncio.ConnectionPool.get_connection)
    .parameters["command_name"]
    .default
    is None
    else ("EVALSHA",)
)

#: Connections a link keeps between its round trips, at most (and at most a quarter of its
#: pool's ``max_connections``, so that callers going through the pool never starve).
KEEP_IDLE = 4

__all__ = [
    "CONNECTION_ARGS",
    "KEEP_IDLE",
    "Command",
    "Kept",
    "Unanswered",
    "checkout",
    "described",
    "discard",
    "redis_errors",
    "commands_sync",
    "evalsha_sync",
    "exchange",
    "pack",
    "pooled_trip",
    "transaction_sync",
]
pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as pack
except ImportError:  # pragma: no cover - hiredis comes with dowork[redis]
    pack = None


class Unanswered(redis.exceptions.ConnectionError):
    """The connection failed after a request was (maybe partly) sent: it may have run.

    A ``ConnectionError``, so that reads report ``BackendUnavailable`` as before; pushes
    report ``OutcomeUnknown`` instead (see ``RedisBackend._pushing``).
    """


def described(exc: BaseException) -> str:
    """An error as ``TimeoutError: Timeout reading from ...`` (redis-py 8's ``repr`` drops it)."""
    said = str(exc)
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__


#: One Redis command and its arguments, as ``hiredis.pack_command`` takes them.
Command = tuple[str | bytes, ...]


def commands_sync(client: redis.Redis, *commands: Sequence[str | bytes | int]) -> list[Any]:
    """Send commands in one write from a thread and read their answers (errors are raised).

    The commands are packed in C (hiredis) and go out on a pooled connection of a blocking
    client: the same round trip as a redis-py pipeline, without the layers of its command
    execution (a good part of a single push's cost in the caller's thread).
    """
    if pack is None:
        with client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            return pipe.execute()
    pool = client.connection_pool
    conn = pool.get_connection(*CONNECTION_ARGS)
    answers: list[Any] = []
    try:
        conn.send_packed_command(  # type: ignore[no-untyped-call]
            [pack(tuple(c)) for c in commands], check_health=False
        )
        for _ in commands:
            answers.append(conn.read_response())
    except redis.exceptions.ResponseError:
        if len(answers) < len(commands) - 1:  # answers left unread: out of step
            conn.disconnect()  # type: ignore[no-untyped-call]
        raise
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        conn.disconnect()  # type: ignore[no-untyped-call]  # mid-answer: out of step
        raise Unanswered(f"no reply to a request sent ({described(exc)})") from exc
    except BaseException:
        conn.disconnect()  # type: ignore[no-untyped-call]  # mid-answer: out of step
        raise
    finally:
        pool.release(conn)
    return answers


def evalsha_sync(client: redis.Redis, sha: str, args: Sequence[str | bytes | int]) -> Any:
    """``EVALSHA`` from a thread (see ``commands_sync``)."""
    return commands_sync(client, ("EVALSHA", sha, 0, *args))[0]


def transaction_sync(
    client: redis.Redis,
    scripts: dict[str, Script],
    calls: Sequence[tuple[str, Sequence[str | bytes | int]]],
    flag: bytes,
) -> Any:
    """Run script calls in one ``MULTI``/``EXEC`` (then delete ``flag``); the first answer.

    Packed in C (hiredis) and read by hand: redis-py's pipeline encodes every argument in
    Python, a good part of a bulk push's cost.
    """
    if pack is None:
        return _transaction_pipelined(client, scripts, calls, flag)
    commands: list[tuple[Any, ...]] = [("MULTI",)]
    commands += [("EVALSHA", scripts[name].sha, 0, *args) for name, args in calls]
    if flag:
        commands.append(("DEL", flag))
    commands.append(("EXEC",))
    pool = client.connection_pool
    conn = pool.get_connection(*CONNECTION_ARGS)
    try:
        conn.send_packed_command(  # type: ignore[no-untyped-call]
            [pack(c) for c in commands], check_health=False
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


def _transaction_pipelined(
    client: redis.Redis,
    scripts: dict[str, Script],
    calls: Sequence[tuple[str, Sequence[str | bytes | int]]],
    flag: bytes,
) -> Any:
    """``transaction_sync`` without hiredis: through redis-py's pipeline."""
    with client.pipeline(transaction=True) as pipe:
        for name, args in calls:
            scripts[name](args=args, client=pipe)
        if flag:
            pipe.delete(flag)
        return pipe.execute()[0]


async def checkout(idle: list[Any], pool: Any) -> Any:
    """A connection for one round trip: one kept in ``idle``, else one from the pool.

    A kept connection is checked as the pool checks those it hands out (connected, nothing
    unread: a server that closed it is seen here, before anything is sent), at a fraction
    of the cost of the pool's locks and bookkeeping, which a round trip of a worker's
    claims and settlements paid on every call.
    """
    if idle:
        conn = idle.pop()
        try:
            await pool.ensure_connection(conn)
        except BaseException:
            await pool.release(conn)
            raise
        return conn
    return await pool.get_connection(*CONNECTION_ARGS)


class Kept(Protocol):
    """Where a link keeps pool connections between round trips (``client.Link``'s fields)."""

    idle: list[Any]  #: the connections kept
    keep: int  #: how many it may keep
    released: bool  #: the link is closed: it keeps none


async def exchange(conn: Any, commands: Sequence[Sequence[str | bytes | int]]) -> list[Any]:
    """Write ``commands`` on an asyncio connection at once and read their answers.

    Packed in C (hiredis) when available: redis-py's asyncio client packs in Python, which for
    a batch of settlements costs more than the round trip. An error answer is returned, not
    raised, so the answers after it are still read; a failure of the connection is raised.
    """
    if pack is not None:
        packed: bytes | list[bytes] = [pack(tuple(c)) for c in commands]
    else:
        packed = conn.pack_commands(commands)
    await conn.send_packed_command(packed, False)
    answers: list[Any] = []
    for _ in commands:
        try:
            answers.append(await conn.read_response())
        except redis.exceptions.ResponseError as exc:
            answers.append(exc)
    return answers


async def pooled_trip(
    pool: Any, kept: Kept, commands: Sequence[Sequence[str | bytes | int]]
) -> list[Any]:
    """``Connection._raw``'s round trip on a connection of ``pool`` (one of ``kept.idle``).

    An error answer is returned (not raised); a connection that fails after the request
    went out raises ``Unanswered`` and is closed, as it is when the caller is cancelled.
    """
    conn = await checkout(kept.idle, pool)
    try:
        answers = await exchange(conn, commands)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        await discard(pool, conn)
        raise Unanswered(f"no reply to a request sent ({described(exc)})") from exc
    except BaseException:
        await discard(pool, conn)
        raise
    if len(kept.idle) < kept.keep and not kept.released:
        kept.idle.append(conn)
    else:
        await pool.release(conn)
    return answers


async def discard(pool: Any, conn: Any) -> None:
    """Give back a connection cut mid-answer: out of step, so closed (reopened on next use)."""
    try:
        await conn.disconnect(nowait=True)
    finally:
        await pool.release(conn)


@contextlib.contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """Turn redis-py's exceptions into dowork's (never showing the password in ``url``)."""
    try:
        yield
    except redis.exceptions.AuthenticationError as exc:
        raise BackendError(f"{redact(url)}: {exc}") from exc
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise BackendUnavailable(f"{redact(url)}: {exc}") from exc
    except redis.exceptions.ResponseError as exc:
        if str(exc).startswith(("READONLY", "MASTERDOWN", "LOADING", "TRYAGAIN")):
            raise BackendUnavailable(f"{redact(url)}: {exc}") from exc
        if isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM " in str(exc):
            raise BackendFull(f"{redact(url)}: {exc} (maxmemory reached)") from exc
        raise BackendError(f"{redact(url)}: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise BackendError(f"{redact(url)}: {exc}") from exc
