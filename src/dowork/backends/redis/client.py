"""The backend's connection to Redis: pools, round trips, errors, and what it checks on the way.

``Connection`` holds a backend's settings and state: an asyncio client per event loop
(``Link``; redis-py's asyncio clients are bound to their loop) and one blocking client for
threads, both on bounded pools that never retry a command (a lost reply must not run a
script twice). ``_raw`` sends commands in one write and reads their answers (on a
connection of the link's own, see ``own``), ``_script``
runs a script by its SHA (loading it again after a restart of Redis), and ``_errors`` turns
redis-py's exceptions into dowork's, never showing a password. On the way it reads the
``maxmemory-policy`` (see ``policy``) and the ``epoch`` key that tells a wiped Redis apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.exceptions
import redis.retry
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import Script

from ...errors import EvictionPolicyError
from .._protocol import Outcome, Wakeups, retention
from .importing import driver
from .own import OwnConnection
from .policy import RECHECK, RECHECK_REFUSED, judge, policy_of
from .records import utf8
from .scripts import SCRIPTS, Registered
from .urls import redact, without_flag
from .wire import KEEP_IDLE, pooled_trip, redis_errors

__all__ = ["Connection", "Link"]

log = logging.getLogger("dowork")
P = TypeVar("P")
#: The scripts the blocking client runs (``push_sync``).
_SYNC = ("push", "check", "drain")


def _check(url: str, prefix: str, client: redis.asyncio.Redis | None, max_connections: int) -> None:
    """Raise ValueError for a backend's arguments that cannot work."""
    if urlsplit(url).scheme.lower() not in ("redis", "rediss", "unix"):
        raise ValueError(f"a Redis URL starts with redis://, rediss:// or unix://: {redact(url)!r}")
    if not prefix:
        raise ValueError("prefix must not be empty")
    if client is not None and client.connection_pool.connection_kwargs.get("decode_responses"):
        raise ValueError("the client must return bytes: create it with decode_responses=False")
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1")


@dataclass(eq=False)
class Link:
    """The backend's connections on one event loop (redis.asyncio clients are loop-bound)."""

    loop: asyncio.AbstractEventLoop
    client: redis.asyncio.Redis
    scripts: Registered
    keeper: asyncio.Task[None] | None = None
    ready: bool = False
    released: bool = False
    #: Whether this link read the ``maxmemory-policy`` (its first round trip does, see _raw).
    policy_read: bool = False
    #: Connections taken from the pool and kept between round trips (see ``_checkout``).
    idle: list[Any] = field(default_factory=list)
    #: How many connections ``idle`` may keep (0: every round trip goes through the pool).
    keep: int = 0
    #: Connections of its own for ``asubmit()``'s pushes (see ``own``): free ones, all made.
    own: list[OwnConnection] = field(default_factory=list)
    owned: list[OwnConnection] = field(default_factory=list)


class Connection:
    """The connections and settings every part of ``RedisBackend`` shares (see its arguments).

    The state the other parts keep lives here too, so that the one constructor sets it all:
    ``_wakeups`` (pushes in this process wake its own waiters) and ``_taking`` (the starts
    being recorded in the background, see ``Fetcher._start_take``).
    """

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
        url, allowed = without_flag(url)
        _check(url, prefix, client, max_connections)
        self.url = url
        self.prefix = prefix
        self.keep_finished = keep_finished
        self.keep_dead = keep_dead
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
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
        self._links: dict[asyncio.AbstractEventLoop, Link] = {}
        self._sync: tuple[redis.Redis, dict[str, Script]] | None = None
        self._links_lock = threading.Lock()
        self._wakeups = Wakeups()
        self._taking: dict[str, asyncio.Task[None]] = {}  # see Fetcher._start_take
        self._epoch: bytes | None = None
        self.resets = 0

    def __repr__(self) -> str:
        where = "client=..." if self._client is not None else repr(redact(self.url))
        return f"RedisBackend({where}, prefix={self.prefix!r})"

    def _retention(self, outcome: Outcome | None, keep: float | None) -> float:
        """Seconds to keep a finished record (see ``retention``)."""
        return retention(outcome, keep, self.keep_finished, self.keep_dead)

    def _pool(self, from_url: Callable[..., P], retry: object) -> P:
        """A bounded pool from ``from_url`` (callers past ``max_connections`` wait)."""
        try:
            return from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=self.pool_timeout,
                retry=retry,  # no retries: a lost reply must not run a script twice
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.connect_timeout,
                **driver(),
            )
        except ValueError as exc:  # redis-py names the bad part of the URL
            raise ValueError(f"{redact(self.url)}: {exc}") from None

    def _new_client(self) -> redis.asyncio.Redis:
        """An asyncio client on a bounded pool: callers past ``max_connections`` wait."""
        pool = self._pool(redis.asyncio.BlockingConnectionPool.from_url, Retry(NoBackoff(), 0))
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
                    retry = redis.retry.Retry(NoBackoff(), 0)
                    pool = self._pool(redis.BlockingConnectionPool.from_url, retry)
                    client = redis.Redis(connection_pool=pool)
                    client.auto_close_connection_pool = True
                    scripts = {n: client.register_script(SCRIPTS[n]) for n in _SYNC}
                    pair = self._sync = (client, scripts)
        return pair

    def _link(self) -> Link:
        """The connections for the running event loop, created on first use."""
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is not None:
            return link
        with self._links_lock:
            for old in [old for old in self._links if old.is_closed()]:
                del self._links[old]  # a loop closed without cancelling our keeper
            client = self._client if self._client is not None else self._new_client()
            link = Link(loop, client, Registered(client))
            pool = client.connection_pool
            if hasattr(pool, "ensure_connection"):  # (the check a kept connection needs)
                link.keep = min(KEEP_IDLE, (getattr(pool, "max_connections", 0) or 0) // 4)
            link.keeper = loop.create_task(self._keep(link), name="dowork-redis-keeper")
            self._links[loop] = link
        return link

    async def _keep(self, link: Link) -> None:
        """Live as long as the loop: closing the loop cancels it, which closes the link."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await self._release(link)
            raise
        # A GeneratorExit (the loop was dropped without cancelling us) passes through:
        # with no loop left there is nothing to await, and the connections die with it.

    async def _release(self, link: Link) -> None:
        if link.released:
            return
        link.released = True
        with self._links_lock:
            if self._links.get(link.loop) is link:
                del self._links[link.loop]
        idle, link.idle = link.idle, []
        for conn in idle:  # back to the pool: a client of the caller's own outlives the link
            with contextlib.suppress(Exception):
                await link.client.connection_pool.release(conn)
        for own in link.owned:
            with contextlib.suppress(Exception):
                await own.close()
        if link.client is not self._client:
            with contextlib.suppress(Exception):
                await link.client.aclose()

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        """Turn redis-py's exceptions into dowork's (never showing a password)."""
        return redis_errors(self.url)

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
        self, link: Link, *commands: Sequence[str | bytes | int], probe: bool = True
    ) -> list[Any]:
        """Send ``commands`` in one write and read their answers.

        They go on a connection of the link's own (see ``own``: redis-py's asyncio client
        costs a worker's claim or settlement about as much again as the round trip), made
        as needed up to a quarter of ``max_connections`` (at least one) and shared with
        ``asubmit()``'s pushes; beyond them, on the link's first round trip and on a caller's
        ``client`` (whose connections are its own to count), through the pool. The commands
        are packed in C (hiredis) when available. An error answer is returned (not raised),
        so the answers after it are still read. The link's first round trip also reads
        ``INFO memory``, so that every process that connects (producer, worker, command
        line) hears about an evicting Redis.
        """
        if probe and not link.policy_read:
            info, *rest = await self._raw(link, ("INFO", "memory"), *commands, probe=False)
            link.policy_read = True
            self._note_policy(policy_of(info), worker=False)
            return rest
        free = link.own
        if free:
            own = free.pop()
        elif (
            link.policy_read
            and self._client is None
            and len(link.owned) < max(1, self.max_connections // 4)
        ):
            own = OwnConnection(link.client.connection_pool, self.socket_timeout)
            link.owned.append(own)
        else:
            return await pooled_trip(link.client.connection_pool, link, commands)
        try:
            return await own.round_trip(commands)
        finally:
            if not own.closed:
                free.append(own)

    async def open(self) -> None:
        """Connect (PING) and load the scripts; other calls connect lazily too."""
        link = self._link()
        if link.ready:
            return
        with self._errors():
            for answer in await self._raw(link, ("PING",)):  # (and the policy, see _raw)
                if isinstance(answer, Exception):
                    raise answer
            for name in SCRIPTS:
                script = link.scripts[name]
                script.sha = await link.client.script_load(script.script)
            await self._check_epoch(link.client)
        link.ready = True

    async def _check_epoch(self, client: redis.asyncio.Redis) -> None:
        """Write the epoch key if missing; say loudly when the one we saw before is gone.

        A different or missing epoch means Redis lost its data since we last looked (a restart
        without persistence, FLUSHALL, eviction): tasks stored before are gone.
        """
        key = utf8(self._keys + "epoch")
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
        """Keep Redis's ``maxmemory-policy`` and say what it means; why a worker must refuse.

        See ``policy.judge``: each warning is logged once per backend, a refusal every time.
        """
        self.policy = policy
        allow = self.allow_eviction
        return judge(policy, worker, allow, who=repr(self), said=self._policy_said)

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
            self._refusal = self._note_policy(policy_of(info), worker=True)
            self._gate_at = now + (RECHECK_REFUSED if self._refusal else RECHECK)
        if self._refusal is not None:
            raise EvictionPolicyError(self._refusal)

    def _probe_sync(self, client: redis.Redis) -> None:
        """Read the policy once on the blocking client (a producer: warn only)."""
        try:
            info: Any = client.info("memory")
        except redis.exceptions.NoPermissionError as exc:
            info = exc
        self._sync_policy_read = True
        self._note_policy(policy_of(info), worker=False)

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

    async def server_time(self) -> float:
        """The Redis server's clock (``TIME``), for leases that must share one clock."""
        seconds, micros = await self._one("TIME")
        return int(seconds) + int(micros) / 1e6
