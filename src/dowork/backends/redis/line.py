"""A connection of its own per event loop for ``asubmit()``'s push, without redis-py's layers.

redis-py's asyncio client spends more on its own layers (the pool's lock and condition, a
timer per read, its observability hooks) than the round trip takes, which made
``asubmit()`` a third as fast as ``submit()``, whose blocking client skips them
(``wire.commands_sync``). A ``Line`` is an ``asyncio.Protocol`` on one connection: a request
is written at once, hiredis parses the answers as they arrive, and each caller gets its own
in the order the requests went out, so concurrent pushes share the connection (pipelined).

A connection that is lost, or silent for ``socket_timeout`` while a request waits, fails
every request sent and not answered with ``Unanswered`` (it may have run); the next request
connects again. A line follows the pool's settings (host and port or socket path, user,
password, database); a pool with any other (TLS, RESP3, a client name, a credential
provider...) gets no line, and its pushes go through redis-py as before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import redis.asyncio
import redis.exceptions

from .wire import Unanswered, described, pack

Reader: Any
try:
    from hiredis import Reader
except ImportError:  # pragma: no cover - hiredis comes with dowork[redis]
    Reader = None

__all__ = ["Line"]

#: The connection settings a line follows (dowork's own pool, made from a URL).
_FOLLOWED = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "socket_timeout",
        "socket_connect_timeout",
        "retry",
        "driver_info",  # what redis-py reports by CLIENT SETINFO; a line reports nothing
        "himport_registry",
        "maint_notifications_pool_handler",
        "maint_notifications_config",
        "orig_host_address",
        "orig_socket_timeout",
        "orig_socket_connect_timeout",
    }
)


class _Request:
    """A request written on a connection, waiting for its ``count`` answers."""

    __slots__ = ("answers", "count", "future", "sent")

    def __init__(self, future: asyncio.Future[list[Any]], count: int, sent: float) -> None:
        self.future = future
        self.count = count
        self.sent = sent
        self.answers: list[Any] = []


class Line:
    """Pipelined round trips of plain commands on one connection (see the module docstring)."""

    def __init__(self, settings: dict[str, Any], timeout: float, connect_timeout: float) -> None:
        self._settings = settings
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._conn: _Conn | None = None
        self._lock: asyncio.Lock | None = None
        self.closed = False

    @classmethod
    def of(
        cls, pool: redis.asyncio.ConnectionPool, timeout: float, connect_timeout: float
    ) -> Line | None:
        """A line following ``pool``'s settings, or None if it has some a line does not know."""
        settings = pool.connection_kwargs
        if Reader is None or pack is None or not set(settings) <= _FOLLOWED:
            return None
        if pool.connection_class not in (
            redis.asyncio.Connection,
            redis.asyncio.UnixDomainSocketConnection,
        ):
            return None
        return cls(dict(settings), timeout, connect_timeout)

    async def round_trip(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` in one write; their answers (an error answer is returned).

        Raises:
            OSError, redis.exceptions.RedisError: no connection (nothing was sent).
            Unanswered: the connection failed or fell silent after the request went out.
        """
        conn = self._conn
        if conn is None or not conn.usable:
            conn = await self._connect()
        assert pack is not None
        return await conn.send(b"".join(pack(c) for c in commands), len(commands))

    async def _connect(self) -> _Conn:
        """Connect (once for every caller waiting), then AUTH and SELECT as the pool does."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            conn = self._conn
            if conn is not None and conn.usable:
                return conn
            if self.closed:
                raise redis.exceptions.ConnectionError("the backend was closed")
            settings = self._settings
            loop = asyncio.get_running_loop()
            conn = _Conn(self._timeout)
            try:
                async with asyncio.timeout(self._connect_timeout):
                    if "path" in settings:
                        await loop.create_unix_connection(lambda: conn, settings["path"])
                    else:
                        host, port = settings.get("host", "localhost"), settings.get("port", 6379)
                        await loop.create_connection(lambda: conn, host, port)
                    await self._hello(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            return conn

    async def _hello(self, conn: _Conn) -> None:
        """Log in and choose the database as redis-py does; nothing of a push is sent yet."""
        settings = self._settings
        commands: list[tuple[Any, ...]] = []
        password, user = settings.get("password"), settings.get("username")
        if password is not None or user is not None:
            commands.append(("AUTH", user, password or "") if user else ("AUTH", password))
        if settings.get("db"):
            commands.append(("SELECT", settings["db"]))
        if not commands:
            return
        assert pack is not None
        try:
            answers = await conn.send(b"".join(pack(c) for c in commands), len(commands))
        except Unanswered as exc:
            raise redis.exceptions.ConnectionError(str(exc)) from exc.__cause__
        for command, answer in zip(commands, answers, strict=True):
            if isinstance(answer, Exception):
                if command[0] == "AUTH":
                    raise redis.exceptions.AuthenticationError(str(answer))
                raise answer

    def close(self) -> None:
        """Close the connection; the line connects no more."""
        self.closed = True
        if self._conn is not None:
            self._conn.close()


class _Conn(asyncio.Protocol):
    """One connection of a line: its requests in the order they went out, and their answers."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._waiting: deque[_Request] = deque()
        assert Reader is not None
        self._reader = Reader(replyError=redis.exceptions.ResponseError)
        self._timer: asyncio.TimerHandle | None = None
        self.lost = False

    @property
    def usable(self) -> bool:
        """Connected, and neither lost nor closing."""
        transport = self._transport
        return not self.lost and transport is not None and not transport.is_closing()

    def send(self, packed: bytes, count: int) -> asyncio.Future[list[Any]]:
        """Write a request of ``count`` commands; the future of their answers."""
        loop = asyncio.get_running_loop()
        request = _Request(loop.create_future(), count, loop.time())
        transport = self._transport
        if not self.usable or transport is None:  # nothing is sent
            request.future.set_exception(redis.exceptions.ConnectionError("connection lost"))
            return request.future
        self._waiting.append(request)
        transport.write(packed)
        if self._timer is None:
            self._timer = loop.call_at(request.sent + self._timeout, self._watch)
        return request.future

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while waiting:
            answer = reader.gets()
            if answer is False:
                return
            request = waiting[0]
            request.answers.append(answer)
            if len(request.answers) == request.count:
                waiting.popleft()
                if not request.future.done():  # (its caller may have been cancelled)
                    request.future.set_result(request.answers)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or redis.exceptions.ConnectionError("Connection closed by server."))

    def _fail(self, cause: BaseException) -> None:
        """Fail every request sent and not answered: each may have run."""
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, deque()
        for request in waiting:
            if not request.future.done():
                lost = Unanswered(f"no reply to a request sent ({described(cause)})")
                lost.__cause__ = cause
                request.future.set_exception(lost)

    def _watch(self) -> None:
        """Cut the connection if its oldest request waited ``socket_timeout``; else look again."""
        self._timer = None
        if not self._waiting or self.lost:
            return
        due = self._waiting[0].sent + self._timeout
        loop = asyncio.get_running_loop()
        if loop.time() < due:
            self._timer = loop.call_at(due, self._watch)
            return
        self._fail(
            redis.exceptions.TimeoutError(f"Timeout reading from socket ({self._timeout} s)")
        )
        self.close()

    def close(self) -> None:
        self.lost = True
        if self._transport is not None:
            self._transport.abort()
