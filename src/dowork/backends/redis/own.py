"""A redis-py connection of a link's own for its round trips, used without its client.

redis-py's asyncio client spends more on its own layers than the round trip takes (the
pool's condition and lock, a task per write and a timer per read under ``socket_timeout``),
which made ``asubmit()`` slower than ``submit()``, whose blocking client skips them
(``wire.commands_sync``), and cost a worker's claims and settlements about 100k
instructions a round trip (``Connection._raw`` sends them on these now). An
``OwnConnection`` is one ``redis.asyncio`` connection made as the link's pool makes its own
(its class and settings: AUTH, SELECT, TLS, RESP3, a client name, ...), but with no socket
timeout of its own: ``round_trip`` writes the commands with ``send_packed_command`` and
reads each answer with ``read_response``, and one watchdog timer per connection, not one
per call, cancels a round trip silent for ``socket_timeout``.

It serves one round trip at a time: concurrent round trips each take one of their link's
(see ``Connection._raw``), so no answer is read by the wrong caller. A connection that
fails or falls silent after a request went out raises ``Unanswered`` (the request may have
run) and is closed, as it is when its caller is cancelled mid-trip (no half-read answer is
left for the next); the next round trip connects again, as it does when the server closed
the connection while it was idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio
import redis.exceptions

from .wire import Unanswered, described, exchange

__all__ = ["OwnConnection"]


class OwnConnection:
    """One connection for round trips of plain commands (see the module docstring)."""

    def __init__(self, pool: redis.asyncio.ConnectionPool, timeout: float) -> None:
        settings = dict(pool.connection_kwargs)
        settings["socket_timeout"] = None  # the watchdog's instead: one timer, not two a call
        self._conn: Any = pool.connection_class(**settings)
        self._timeout = timeout
        self._connect_timeout = settings.get("socket_connect_timeout") or timeout
        self._timer: asyncio.TimerHandle | None = None
        self._trip: asyncio.Task[Any] | None = None  # the round trip under way
        self._sent: float | None = None  # when it went out (None: still connecting)
        self._expired: asyncio.Task[Any] | None = None  # the trip the watchdog cancelled
        self.closed = False

    @property
    def busy(self) -> bool:
        """A round trip is under way."""
        return self._trip is not None

    async def round_trip(self, commands: Sequence[Sequence[str | bytes | int]]) -> list[Any]:
        """Send ``commands`` in one write; their answers (an error answer is returned).

        Raises:
            OSError, redis.exceptions.RedisError: no connection (nothing was sent).
            Unanswered: the connection failed or fell silent after the request went out.
        """
        task = asyncio.current_task()
        assert task is not None
        conn = self._conn
        self._trip = task
        self._sent = None  # (the watchdog waits until the request goes out)
        try:
            try:  # the check the pool gives a connection it hands out: not closed by the
                stale = await conn.can_read()  # server while idle, no answer unread
            except (redis.exceptions.ConnectionError, OSError):  # (or never connected)
                stale = True
            if stale:
                await self._connect()
            loop = task.get_loop()
            self._sent = loop.time()
            if self._timer is None:
                self._timer = loop.call_at(self._sent + self._timeout, self._watch)
            try:
                return await exchange(conn, commands)
            except BaseException as exc:
                await conn.disconnect(nowait=True)  # (mid-answer: out of step)
                cause = self._cut(task, exc)
                if cause is None:
                    raise
                raise Unanswered(f"no reply to a request sent ({described(cause)})") from cause
        finally:
            self._trip = self._expired = None

    def _cut(self, task: asyncio.Task[Any], exc: BaseException) -> BaseException | None:
        """What cut a round trip after its request went out (None: its caller's own error).

        A cancellation of the caller's, say, goes on as it is.
        """
        if isinstance(exc, asyncio.CancelledError):
            if self._expired is not task or task.uncancel() > 0:
                return None  # its caller was cancelled, not (only) by the watchdog
            return redis.exceptions.TimeoutError(f"Timeout reading from socket ({self._timeout} s)")
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            return exc
        return exc if isinstance(exc, OSError) else None

    async def _connect(self) -> None:
        """Connect (again), log in and choose the database as the pool's connections do.

        A push is not sent on a connection the server closed (its outcome would be unknown).
        """
        if self.closed:
            raise redis.exceptions.ConnectionError("the backend was closed")
        await self._conn.disconnect(nowait=True)
        try:
            async with asyncio.timeout(self._connect_timeout + self._timeout):
                await self._conn.connect()
        except BaseException:
            await self._conn.disconnect(nowait=True)
            raise

    def _watch(self) -> None:
        """Cancel the round trip if it waited ``socket_timeout``; else look again when due."""
        self._timer = None
        trip, sent = self._trip, self._sent
        if trip is None or sent is None:  # idle (or connecting): the next trip sets it again
            return
        loop = trip.get_loop()
        due = sent + self._timeout
        if loop.time() < due:
            self._timer = loop.call_at(due, self._watch)
            return
        self._expired = trip
        trip.cancel()

    async def close(self) -> None:
        """Close the connection; it connects no more."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._conn.disconnect(nowait=True)
