"""Typed access to a plain redis-py client: replies narrowed to bytes, raw commands.

redis-py types a reply ``bytes | str`` (a client may decode them) or ``Any`` (older versions);
the tests read raw keys with a plain client, so these helpers check at run time that a reply is
bytes and give it that type, instead of casting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import redis
from redis.typing import EncodableT


def command(client: redis.Redis, *args: EncodableT) -> object:
    """Send a raw command (redis-py leaves ``execute_command`` untyped)."""
    send: Callable[..., object] = client.execute_command
    return send(*args)


def raw(reply: object) -> bytes:
    """One bytes reply (a value, a member, a field)."""
    assert isinstance(reply, bytes), f"expected bytes from Redis, got {reply!r}"
    return reply


def raw_or_none(reply: object) -> bytes | None:
    """A reply that is ``None`` when the key or field is missing (``GET``, ``HGET``)."""
    return None if reply is None else raw(reply)


def raw_hash(reply: object) -> dict[bytes, bytes]:
    """An ``HGETALL`` reply."""
    assert isinstance(reply, dict), f"expected a dict from Redis, got {reply!r}"
    return {raw(k): raw(v) for k, v in reply.items()}


def raw_members(reply: object) -> list[bytes]:
    """The members of a set or a sorted set (``SMEMBERS``, ``ZRANGE`` without scores)."""
    assert isinstance(reply, list | set), f"expected members from Redis, got {reply!r}"
    return [raw(member) for member in reply]


def raw_scores(reply: object) -> dict[bytes, float]:
    """A sorted set's members and scores (``ZRANGE ... WITHSCORES``)."""
    assert isinstance(reply, Iterable), f"expected pairs from Redis, got {reply!r}"
    scores: dict[bytes, float] = {}
    for pair in reply:
        member, score = pair
        assert isinstance(score, float), f"expected a float score, got {score!r}"
        scores[raw(member)] = score
    return scores
