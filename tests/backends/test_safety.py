"""Contract tests of the safety rules: idempotency keys and dead-letter retention, on every
backend (memory, SQLite, Redis, and Redis as the README's restricted ACL user)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import pytest

from dowork.backends import Backend, ClaimRequest, Outcome, Settlement
from dowork.backends._protocol import WHILE_UNFINISHED
from dowork.errors import DuplicateTask
from tests.backends.test_contract import LEASE, NOW, rec, run, start
from tests.upkeep import purge_finished, reap


@runtime_checkable
class Retention(Protocol):
    """A store whose retention can be changed after it is built (each store in the suite)."""

    keep_finished: float
    keep_dead: float | None


WINDOW = 600.0


def keyed(key: str, created_at: float = NOW, **kw: Any) -> Any:
    return rec(
        created_at=created_at,
        run_at=created_at,
        idempotency_key=key,
        idempotency_until=created_at + WINDOW,
        **kw,
    )


def test_an_idempotency_key_stores_one_task_per_window(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        first = keyed("order-42")
        assert await b.push([first]) == {}
        retry = keyed("order-42", NOW + 1)  # a client retrying the same enqueue
        plain = rec()
        assert await b.push([retry, plain]) == {retry.id: first.id}
        assert await b.get([retry.id]) == []
        assert {r.id for r in await b.get([first.id, plain.id])} == {first.id, plain.id}
        assert await b.counts("q") == {"pending": 2}

        other_queue = keyed("order-42", NOW + 2, queue="other")  # keys belong to a queue
        assert await b.push([other_queue]) == {}

        # Two records with one key in one push: the first is stored, the second is not.
        one, two = keyed("batch", NOW + 3), keyed("batch", NOW + 3)
        assert await b.push([one, two]) == {two.id: one.id}

        # The key is held for the window even once its task finished (a late retry).
        (claimed, *_) = await b.claim(ClaimRequest("q", NOW + 5, 10, LEASE, "w"))
        assert claimed.id == first.id
        await b.settle([Settlement(first.id, 1, Outcome.SUCCEEDED, NOW + 6)])
        late = keyed("order-42", NOW + WINDOW - 1)
        assert await b.push([late]) == {late.id: first.id}

        # After the window the key is free again, and names the new task from then on.
        after = keyed("order-42", NOW + WINDOW + 1)
        assert await b.push([after]) == {}
        again = keyed("order-42", NOW + WINDOW + 2)
        assert await b.push([again]) == {again.id: after.id}

    run(backend_factory, body)


def test_a_duplicate_id_still_writes_nothing_with_keys(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        existing = rec()
        await b.push([existing])
        fresh = keyed("k")
        with pytest.raises(DuplicateTask):
            await b.push([fresh, rec(id=existing.id)])
        assert await b.get([fresh.id]) == []
        assert await b.push([keyed("k")]) == {}  # the key was not taken by the failed push

    run(backend_factory, body)


def test_dead_letters_and_results_follow_their_retention(
    backend_factory: Callable[[], Backend],
) -> None:
    """keep_dead applies to dead letters (settled or reaped), keep_finished to the rest."""

    async def body(b: Backend) -> None:
        assert isinstance(b, Retention)
        b.keep_finished = 1000.0
        b.keep_dead = 100.0
        await b.push([rec(), rec(), rec()])
        ok, dead, crashed = await b.claim(ClaimRequest("q", NOW, 3, LEASE, "w"))
        await b.settle(
            [
                Settlement(ok.id, 1, Outcome.SUCCEEDED, NOW, result=b"1"),
                Settlement(dead.id, 1, Outcome.DEAD, NOW, error="E", reason="unknown_task"),
            ]
        )
        await start(b, [crashed])
        assert await reap(b, "q", NOW + LEASE + 1, 1) == (0, 1)  # crash budget 1: dead at once
        (stored,) = await b.get([crashed.id])
        assert (stored.status, stored.reason) == ("dead", "crashed_worker")

        assert await purge_finished(b, NOW + 99) == 0
        assert await purge_finished(b, NOW + LEASE + 102) == 2  # both dead letters
        assert [r.id for r in await b.get([ok.id, dead.id, crashed.id])] == [ok.id]
        assert await b.counts("q") == {"succeeded": 1}
        assert await purge_finished(b, NOW + 999) == 0
        assert await purge_finished(b, NOW + 1001) == 1
        assert await b.get([ok.id]) == []
        assert await b.counts("q") == {}

    run(backend_factory, body)


def test_without_keep_dead_dead_letters_keep_as_long_as_results(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        assert isinstance(b, Retention)
        b.keep_finished = 50.0
        await b.push([rec()])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        await b.settle([Settlement(r.id, 1, Outcome.DEAD, NOW, reason="undecodable")])
        assert await purge_finished(b, NOW + 49) == 0
        assert await purge_finished(b, NOW + 51) == 1

    run(backend_factory, body)


def unique(key: str, created_at: float = NOW) -> Any:
    return rec(
        created_at=created_at,
        run_at=created_at,
        idempotency_key=key,
        idempotency_until=WHILE_UNFINISHED,
    )


def test_a_unique_key_is_held_while_its_task_waits_or_runs(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        first = unique("refresh")
        assert await b.push([first]) == {}
        waiting = unique("refresh", NOW + 1)
        assert await b.push([waiting]) == {waiting.id: first.id}  # pending: held
        (claimed,) = await b.claim(ClaimRequest("q", NOW + 2, 10, LEASE, "w"))
        running = unique("refresh", NOW + 3)
        assert await b.push([running]) == {running.id: first.id}  # running: held
        await b.settle([Settlement(claimed.id, 1, Outcome.SUCCEEDED, NOW + 4)])
        after = unique("refresh", NOW + 5)
        assert await b.push([after]) == {}  # finished: the key is free again
        again = unique("refresh", NOW + 6)
        assert await b.push([again]) == {again.id: after.id}
        assert await b.counts("q") == {"pending": 1, "succeeded": 1}
        await purge_finished(b, NOW + 10**9)  # a finished holder's key is cleared, a live one kept
        late = unique("refresh", NOW + 7)
        assert await b.push([late]) == {late.id: after.id}

    run(backend_factory, body)
