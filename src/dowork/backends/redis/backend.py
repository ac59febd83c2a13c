"""``RedisBackend``: the class users build, a worker's store and an operator's view in one.

It is assembled from the package's parts as ``Backend`` is from the protocol's: ``RedisStore`` (the
worker's methods: push, claim, settle and the rest) and ``RedisAdmin`` (``StoreAdmin``: get,
counts, list, requeue, purge and the rest), both over one ``Connection``.
"""

from __future__ import annotations

from .admin import RedisAdmin
from .store import RedisStore

__all__ = ["RedisBackend"]


class RedisBackend(RedisStore, RedisAdmin):
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
