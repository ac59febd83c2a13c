"""The Redis inbox: submit() appends a task with plain commands, idle workers start it at once.

A task pushed alone and due now waits in ``P:q:Q:inbox`` until a reader drains it; these
tests check that every reader sees it as if a script had stored it, that a worker which pops
it and dies loses nothing, and that garbage there is dead-lettered.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine
from typing import Any

import pytest
import redis

from dowork.backends import ClaimRequest, Outcome, RedisBackend, Settlement
from tests.backends.test_contract import LEASE, NOW, rec
from tests.redis_server import RedisServer
from tests.upkeep import reap


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin(redis_server: RedisServer) -> Any:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(main)


def blocked(admin: Any) -> int:
    """How many clients of the test's Redis wait in a blocking command now."""
    return int(admin.info("clients")["blocked_clients"])


async def until_blocked(admin: Any, before: int) -> None:
    """Wait (up to 10 s) until one more client than ``before`` blocks: the worker waits.

    A push made earlier would be claimed the ordinary way, not popped by the waiting worker.
    """
    deadline = time.monotonic() + 10.0
    while blocked(admin) <= before:
        assert time.monotonic() < deadline, "the worker never started waiting"
        await asyncio.sleep(0.005)


def test_a_submitted_task_waits_in_the_inbox_and_every_reader_sees_it(
    redis_server: RedisServer, prefix: str, admin: Any
) -> None:
    backend = RedisBackend(redis_server.url, prefix=prefix)
    inbox = f"{prefix}:q:q:inbox"
    first, second, third = rec(), rec(options='{"retries": 2}'), rec()
    for r in (first, second, third):
        assert backend.push_sync([r], fresh=True) is True
    assert admin.llen(inbox) == 3  # no script ran: not stored as a task yet
    assert not admin.exists(f"{prefix}:task:{first.id}")
    assert admin.sismember(f"{prefix}:queues", "q")

    async def main() -> None:
        assert await backend.next_due("q") == NOW  # read off the inbox, left in place
        assert admin.llen(inbox) == 3
        (got,) = await backend.get([second.id])  # not found: drains, then finds it
        assert admin.llen(inbox) == 0
        assert (got.status, got.attempts, got.options, got.payload) == (
            "pending", 0, second.options, second.payload,
        )  # fmt: skip
        assert await backend.counts("q") == {"pending": 3}
        listed = await backend.list("q", newest_first=False)
        assert [r.id for r in listed] == [first.id, second.id, third.id]  # in push order
        fourth = rec()
        assert backend.push_sync([fourth], fresh=True) is True
        assert await backend.cancel(fourth.id, NOW) == "cancelled"  # drains first too
        claimed = await backend.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))
        assert [r.id for r in claimed] == [first.id, second.id, third.id]
        await backend.close()

    run(main())


def test_only_plain_tasks_due_now_travel_through_the_inbox(
    redis_server: RedisServer, prefix: str, admin: Any
) -> None:
    backend = RedisBackend(redis_server.url, prefix=prefix)
    others = [
        rec(run_at=NOW + 60, status="scheduled"),
        rec(priority=3),
        rec(concurrency_key="tenant"),
        rec(id="not\0plain"),
    ]
    for r in others:
        assert backend.push_sync([r], fresh=True) is True
    entries = admin.lrange(f"{prefix}:q:q:inbox", 0, -1)
    assert all(e.startswith(b"t") for e in entries)  # wake-up tokens only
    for r in others:
        assert admin.exists(f"{prefix}:task:{r.id}")


def test_an_idle_worker_starts_a_popped_task_and_its_lease_is_recorded_after(
    redis_server: RedisServer, prefix: str, admin: Any
) -> None:
    producer = RedisBackend(redis_server.url, prefix=prefix)
    worker = RedisBackend(redis_server.url, prefix=prefix)

    async def main() -> None:
        await worker.open()  # (loads the scripts, as a worker does: a pop peeks with one)
        before = blocked(admin)
        waiting = asyncio.create_task(
            worker.wait_claim(ClaimRequest("q", NOW, 10, LEASE, "w"), 30.0)
        )
        await until_blocked(admin, before)
        task = rec()
        assert producer.push_sync([task], fresh=True) is True
        (claimed,) = await asyncio.wait_for(waiting, 2.0)
        assert (claimed.id, claimed.status, claimed.attempts, claimed.owner) == (
            task.id, "running", 1, "w",
        )  # fmt: skip
        assert claimed.payload == task.payload
        await worker._taken([task.id])  # the take script ran
        (stored,) = await producer.get([task.id])
        assert (stored.status, stored.attempts, stored.owner) == ("running", 1, "w")
        assert admin.zscore(f"{prefix}:q:q:running", task.id) == claimed.lease_until
        assert await producer.counts("q") == {"running": 1}
        refused = await worker.settle(
            [Settlement(task.id, 1, Outcome.SUCCEEDED, NOW + 1, result=b"7")]
        )
        assert refused == []
        (done,) = await producer.get([task.id])
        assert (done.status, done.result) == ("succeeded", b"7")
        await producer.close()
        await worker.close()

    run(main())


#: What a worker of the default settings passes as ``Upkeep.transit``: lease - maintenance.
TRANSIT = LEASE - 5.0


def test_a_task_popped_by_a_worker_that_died_is_run_again_within_the_lease(
    redis_server: RedisServer, prefix: str, admin: Any
) -> None:
    """A worker pops an entry into taken and dies before its take: a drain stores the task
    as running, leased to no one, and the queue's reaper requeues it ``transit`` seconds of
    Redis's clock later (lease - maintenance: found by a reap, so within a lease of the pop).
    It took a minute before, twice a default lease."""
    backend = RedisBackend(redis_server.url, prefix=prefix)
    task = rec()
    assert backend.push_sync([task], fresh=True) is True
    assert admin.lmove(f"{prefix}:q:q:inbox", f"{prefix}:q:q:taken") is not None

    async def main() -> None:
        now = time.time()
        (stored,) = await backend.get([task.id])  # drains: held for its worker from now on
        assert (stored.status, stored.owner, stored.attempts) == ("running", "~", 1)
        assert await reap(backend, "q", now + TRANSIT - 1, 5, TRANSIT) == (0, 0)
        assert await reap(backend, "q", now + TRANSIT + 1, 5, TRANSIT) == (1, 0)
        (again,) = await backend.claim(ClaimRequest("q", now + TRANSIT + 1, 10, LEASE, "w2"))
        assert (again.id, again.attempts, again.crashes) == (task.id, 2, 1)
        await backend.close()

    run(main())


def test_a_reaper_that_names_no_transit_holds_a_popped_task_a_minute(
    redis_server: RedisServer, prefix: str, admin: Any
) -> None:
    """The store's own bound, for the reapers of workers that pass none (older versions)."""
    backend = RedisBackend(redis_server.url, prefix=prefix)
    task = rec()
    assert backend.push_sync([task], fresh=True) is True
    assert admin.lmove(f"{prefix}:q:q:inbox", f"{prefix}:q:q:taken") is not None

    async def main() -> None:
        now = time.time()
        assert await reap(backend, "q", now + 30, 5) == (0, 0)  # drains it
        assert await reap(backend, "q", now + 61, 5) == (1, 0)
        await backend.close()

    run(main())


def test_a_task_popped_and_taken_is_not_reaped_while_its_lease_holds(
    redis_server: RedisServer, prefix: str, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live worker's pop, drained by a reader before its take landed: the take leases it to
    the worker, and a reap past the transit (within the worker's lease) leaves it alone; one
    popped with no drain between is not reaped either. Each starts once."""
    producer = RedisBackend(redis_server.url, prefix=prefix)
    worker = RedisBackend(redis_server.url, prefix=prefix)
    pop = worker._raw
    drain = [True]

    async def pop_then_drain(link: Any, *commands: Any, **options: Any) -> list[Any]:
        answers = await pop(link, *commands, **options)
        if commands[0][0] == "BLMOVE" and drain[0]:
            assert await producer.get(["none such"]) == []  # drains every inbox
        return answers

    async def main() -> None:
        await worker.open()
        monkeypatch.setattr(worker, "_raw", pop_then_drain)
        now = time.time()
        started = []
        for drained in (True, False):
            drain[0] = drained
            task = rec()
            assert producer.push_sync([task], fresh=True) is True
            request = ClaimRequest("q", now, 10, LEASE, "w")
            started += [r.id for r in await worker.wait_claim(request, 5.0)]
            await worker._taken([task.id])
            assert await reap(producer, "q", now + TRANSIT + 1, 5, TRANSIT) == (0, 0)
            (stored,) = await producer.get([task.id])
            assert (stored.status, stored.owner, stored.attempts) == ("running", "w", 1)
            assert stored.lease_until is not None
            assert stored.lease_until >= now + LEASE  # the worker's, from its pop
            again = ClaimRequest("q", now + TRANSIT + 1, 10, LEASE, "w2")
            assert await producer.claim(again) == []
            assert started[-1] == task.id
        assert len(set(started)) == 2
        for backend in (producer, worker):
            await backend.close()

    run(main())


def test_a_take_after_a_drain_or_a_cancel_says_so(
    redis_server: RedisServer, prefix: str, admin: Any
) -> None:
    backend = RedisBackend(redis_server.url, prefix=prefix)
    inbox, taken = f"{prefix}:q:q:inbox", f"{prefix}:q:q:taken"

    async def take(entry: bytes, owner: str) -> int:
        code = await backend._script("take", b"q", entry, owner.encode(), repr(NOW + 30), "0")
        return int(code)

    async def main() -> None:
        kept, cancelled = rec(), rec()
        for r in (kept, cancelled):
            assert backend.push_sync([r], fresh=True) is True
        first = admin.lmove(inbox, taken)
        second = admin.lmove(inbox, taken)
        assert await backend.counts("q") == {"running": 2}  # drained while in transit
        assert await backend.cancel(cancelled.id, NOW) == "requested"  # it runs
        assert await take(first, "w") == 1  # taken over from the drain
        assert await take(second, "w") == 2  # to be cancelled
        assert await take(first, "w2") == 0  # not in transit any more
        (stored,) = await backend.get([kept.id])
        assert (stored.owner, stored.lease_until) == ("w", NOW + 30)
        await backend.close()

    run(main())


@pytest.mark.parametrize("loaded", [True, False], ids=["scripts-loaded", "scripts-flushed"])
def test_a_task_drained_between_the_pop_and_its_take_is_started_by_the_popping_worker(
    redis_server: RedisServer,
    prefix: str,
    admin: Any,
    monkeypatch: pytest.MonkeyPatch,
    loaded: bool,
) -> None:
    """A reader drains the inbox (a handle polling for the task does) right after the worker
    popped an entry: the drain stores it as running, leased to no one, and the worker takes it
    over. With its peek script not loaded yet (a new or restarted Redis), the worker gave the
    entry back to a claim, which found it gone: the task waited a minute for the reaper."""
    producer = RedisBackend(redis_server.url, prefix=prefix)
    reader = RedisBackend(redis_server.url, prefix=prefix)
    worker = RedisBackend(redis_server.url, prefix=prefix)
    pop = worker._raw

    async def pop_then_drain(link: Any, *commands: Any, **options: Any) -> list[Any]:
        answers = await pop(link, *commands, **options)
        if commands[0][0] == "BLMOVE":
            assert await reader.get(["none such"]) == []  # drains every inbox
        return answers

    async def main() -> None:
        await worker.open()
        if not loaded:
            admin.script_flush()
        monkeypatch.setattr(worker, "_raw", pop_then_drain)
        task = rec()
        assert producer.push_sync([task], fresh=True) is True
        (claimed,) = await worker.wait_claim(ClaimRequest("q", NOW, 10, LEASE, "w"), 5.0)
        assert (claimed.id, claimed.owner, claimed.attempts) == (task.id, "w", 1)
        await worker._taken([task.id])
        (stored,) = await reader.get([task.id])
        assert (stored.status, stored.owner, stored.attempts) == ("running", "w", 1)
        assert stored.lease_until == claimed.lease_until
        for backend in (producer, reader, worker):
            await backend.close()

    run(main())


def test_a_worker_with_flow_control_drains_the_inbox_and_claims_by_its_rules(
    redis_server: RedisServer, prefix: str, admin: Any
) -> None:
    producer = RedisBackend(redis_server.url, prefix=prefix)
    worker = RedisBackend(redis_server.url, prefix=prefix)

    async def main() -> None:
        await worker.open()  # (loads the scripts, as a worker does: a pop peeks with one)
        before = blocked(admin)
        waiting = asyncio.create_task(
            worker.wait_claim(ClaimRequest("q", NOW, 10, LEASE, "w", max_running=1), 30.0)
        )
        await until_blocked(admin, before)
        tasks = [rec(), rec()]
        producer.push_sync(tasks[:1], fresh=True)
        (claimed,) = await asyncio.wait_for(waiting, 2.0)
        assert claimed.id == tasks[0].id
        producer.push_sync(tasks[1:], fresh=True)
        assert (
            await worker.wait_claim(ClaimRequest("q", NOW, 10, LEASE, "w", max_running=1), 0.2)
            == []
        )
        assert await worker.counts("q") == {"reserved": 1, "pending": 1}  # the cap held
        await producer.close()
        await worker.close()

    run(main())


def test_an_async_push_of_one_fresh_plain_task_goes_to_the_inbox(
    redis_server: RedisServer, prefix: str, admin: Any
) -> None:
    """What asubmit() does; an id given by the caller is checked by the script instead."""
    backend = RedisBackend(redis_server.url, prefix=prefix)
    inbox = f"{prefix}:q:q:inbox"

    async def main() -> None:
        fresh, given = rec(), rec()
        assert await backend.push([fresh], fresh=True) == {}
        assert admin.lrange(inbox, 0, -1)[0].startswith(b"r" + fresh.id.encode())
        await backend.push([given])  # not fresh: the push script, which wakes with a token
        assert admin.exists(f"{prefix}:task:{given.id}")
        (got,) = await backend.get([fresh.id])
        assert (got.status, got.payload) == ("pending", fresh.payload)
        await backend.close()

    run(main())


def stored(admin: Any, prefix: str) -> dict[str, Any]:
    """Every key of the prefix (but the epoch) and what it holds, named without the prefix."""
    state: dict[str, Any] = {}
    for key in admin.scan_iter(match=f"{prefix}:*"):
        name = key.decode()[len(prefix) :]
        kind = admin.type(key).decode()
        if name == ":epoch":
            continue
        if kind == "hash":
            state[name] = list(admin.hgetall(key).items())  # (in the hash's own order)
        elif kind == "zset":
            state[name] = admin.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            state[name] = admin.lrange(key, 0, -1)
        elif kind == "set":
            state[name] = sorted(admin.smembers(key))
        else:
            state[name] = admin.get(key)
    return state


def test_a_claim_leases_tasks_from_the_inbox_as_if_they_had_waited(
    redis_server: RedisServer, admin: Any
) -> None:
    """A claim that finds only the inbox's tasks due leases the first of them at once, without
    storing them as waiting first: it answers, and leaves the store, as it would have with the
    same tasks pushed by the script (pushers' clocks disagreeing, more tasks than the limit).
    """
    times = [NOW - 1, NOW - 3, NOW - 2, NOW, NOW - 2]
    tasks = [rec(run_at=t, created_at=t) for t in times]
    tasks[2].options = '{"retries": 2}'
    inboxed, pushed = f"test-{uuid.uuid4().hex[:12]}", f"test-{uuid.uuid4().hex[:12]}"

    async def claims(prefix: str, through_inbox: bool) -> list[list[Any]]:
        backend = RedisBackend(redis_server.url, prefix=prefix)
        for r in tasks:
            if through_inbox:
                assert backend.push_sync([r], fresh=True) is True
            else:
                await backend.push([r])
        answers = []
        for limit in (3, 10):
            got = await backend.claim(ClaimRequest("q", NOW, limit, LEASE, "w"))
            answers.append(got)
        await backend.close()
        return answers

    first, rest = asyncio.run(claims(inboxed, True))
    assert [r.id for r in first] == [tasks[i].id for i in (1, 2, 4)]  # by created_at, then seq
    assert [r.id for r in rest] == [tasks[i].id for i in (0, 3)]
    assert asyncio.run(claims(pushed, False)) == [first, rest]
    assert stored(admin, inboxed) == stored(admin, pushed)
