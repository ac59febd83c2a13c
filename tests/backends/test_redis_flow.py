"""Redis-only behaviour of priorities, rate limits and concurrency keys: where tasks of each
priority and key wait, the rate limits' lists of start times, exact times, the lanes' turns
and running counts, and agreement with the in-memory reference under random operations (see
``Store.claim``)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import astuple, dataclass, field
from typing import Any, TypedDict

import pytest
import redis

from dowork.backends import (
    Backend,
    ClaimRequest,
    MemoryBackend,
    Outcome,
    Record,
    RedisBackend,
    Settlement,
)
from dowork.backends._protocol import WAITING
from dowork.backends.flow import take_slot
from tests.backends.test_contract import LEASE, NOW, rec
from tests.redis_replies import raw, raw_hash, raw_members, raw_scores
from tests.redis_server import RedisServer
from tests.upkeep import reap


class Scheduled(TypedDict):
    """Record fields of a keyed task scheduled for later."""

    run_at: float
    status: str
    concurrency_key: str


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


def run(
    redis_server: RedisServer,
    prefix: str,
    body: Callable[[RedisBackend], Coroutine[Any, Any, None]],
) -> None:
    async def main() -> None:
        backend = RedisBackend(redis_server.url, prefix=prefix)
        await backend.open()
        try:
            await body(backend)
        finally:
            await backend.close()

    asyncio.run(main())


def audit(client: redis.Redis, prefix: str, queue: str = "q") -> dict[str, dict[bytes, float]]:
    """Check that every waiting task is in the waiting zset of its priority only (score
    run_at), that ``levels`` names every level zset there is, and that a task hash holds
    ``priority`` only when it is not 0. Returns the waiting zsets by level.

    Tasks with a concurrency key are checked by ``audit_lanes`` and left out."""
    q = f"{prefix}:q:{queue}:"
    want: dict[str, dict[bytes, float]] = {}
    for key in client.scan_iter(match=f"{prefix}:task:*", count=1000):
        h = raw_hash(client.hgetall(key))
        if h[b"queue"].decode() != queue:
            continue
        assert h.get(b"priority") != b"0"
        if h[b"status"].decode() in WAITING and b"concurrency_key" not in h:
            level = h.get(b"priority", b"0").decode()
            members = want.setdefault(level, {})
            members[h[b"seq"] + b":" + key[len(f"{prefix}:task:") :]] = float(h[b"run_at"])
    have: dict[str, dict[bytes, float]] = {}
    for key in client.scan_iter(match=f"{q}waiting*", count=1000):
        level = key.decode().removeprefix(f"{q}waiting").removeprefix(":") or "0"
        have[level] = raw_scores(client.zrange(key, 0, -1, withscores=True))
    assert have == want
    levels = {m.decode() for m in raw_members(client.smembers(f"{q}levels"))}
    assert levels >= set(want) - {"0"}
    assert "0" not in levels
    audit_lanes(client, prefix, queue)
    return have


def audit_lanes(client: redis.Redis, prefix: str, queue: str = "q") -> dict[str, Any]:
    """Check the lanes of concurrency keys against the task hashes: every waiting task of a
    key is in its key's zset of its priority (score run_at) and nowhere else; a key with
    waiting tasks is either awake (``lanes``, its earliest run_at in ``lanes:due``) or asleep
    (``lanes:later`` with that time, its turn in ``lanes:turns``); an awake key without any
    is one the next claim forgets (``lanes:drained``); ``lanes:levels`` lists the key's other
    priorities; ``keyrun`` counts the running tasks of each key. Returns the turns."""
    q = f"{prefix}:q:{queue}:"
    want: dict[tuple[str, str], dict[bytes, float]] = {}
    running: dict[str, int] = {}
    for key in client.scan_iter(match=f"{prefix}:task:*", count=1000):
        h = raw_hash(client.hgetall(key))
        if h[b"queue"].decode() != queue or b"concurrency_key" not in h:
            continue
        k = h[b"concurrency_key"].decode()
        status = h[b"status"].decode()
        if status in WAITING:
            members = want.setdefault((h.get(b"priority", b"0").decode(), k), {})
            members[h[b"seq"] + b":" + key[len(f"{prefix}:task:") :]] = float(h[b"run_at"])
        elif status in ("reserved", "running"):  # (leased)
            running[k] = running.get(k, 0) + 1
    have: dict[tuple[str, str], dict[bytes, float]] = {}
    for key in client.scan_iter(match=f"{q}lane:*", count=1000):
        p, _, k = key.decode().removeprefix(f"{q}lane:").partition(":")
        have[(p, k)] = raw_scores(client.zrange(key, 0, -1, withscores=True))
    assert have == want
    earliest: dict[str, float] = {}
    for (p, k), members in want.items():
        earliest[k] = min(earliest.get(k, float("inf")), *members.values())
        if p != "0":
            assert p in raw(client.hget(f"{q}lanes:levels", k)).decode().split()

    def zset(name: str) -> dict[str, float]:
        scores = raw_scores(client.zrange(f"{q}{name}", 0, -1, withscores=True))
        return {m.decode(): s for m, s in scores.items()}

    awake, due, later = zset("lanes"), zset("lanes:due"), zset("lanes:later")
    turns = {k.decode(): int(v) for k, v in raw_hash(client.hgetall(f"{q}lanes:turns")).items()}
    drained = {m.decode() for m in raw_members(client.smembers(f"{q}lanes:drained"))}
    assert {**due, **later} == earliest
    assert not set(due) & set(later)
    assert set(due) <= set(awake)
    assert set(awake) - set(due) <= drained  # emptied since the last claim
    assert not set(awake) & set(later)
    assert set(turns) <= set(later)
    assert all(t > 0 for t in turns.values())
    assert {
        k.decode(): int(v) for k, v in raw_hash(client.hgetall(f"{q}keyrun")).items()
    } == running
    return {**{k: int(t) for k, t in awake.items()}, **{k: turns.get(k, 0) for k in later}}


def test_each_priority_waits_in_its_own_zset_listed_in_levels(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    async def body(b: RedisBackend) -> None:
        q = f"{prefix}:q:q:"
        plain, high, low = rec(name="plain"), rec(name="high", priority=3), rec(name="low")
        low.priority, low.run_at = -2, NOW - 5
        await b.push([plain, high, low])  # one push, three groups of the fast path
        assert set(audit(client, prefix)) == {"0", "3", "-2"}
        assert client.hget(f"{prefix}:task:{plain.id}", "priority") is None
        assert client.smembers(f"{q}levels") == {b"3", b"-2"}
        assert await b.next_due("q") == NOW - 5  # the earliest of every level
        got = await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))
        assert [r.name for r in got] == ["high", "plain", "low"]
        assert [r.priority for r in got] == [3, 0, -2]
        assert await b.next_due("q") is None
        # The level zsets went with their last task; the next claim forgets the levels.
        assert client.exists(f"{q}waiting:3", f"{q}waiting:-2") == 0
        assert await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w")) == []
        assert client.exists(f"{q}levels") == 0

    run(redis_server, prefix, body)


@pytest.mark.parametrize("protocol", [2, 3])
def test_next_due_looks_at_every_level_in_either_protocol(
    redis_server: RedisServer, prefix: str, protocol: int
) -> None:
    async def body() -> None:
        b = RedisBackend(f"{redis_server.url}?protocol={protocol}", prefix=prefix)
        await b.open()
        try:
            assert await b.next_due("q") is None
            await b.push([rec(run_at=NOW + 7.5, priority=-1, status="scheduled")])
            assert await b.next_due("q") == NOW + 7.5
            await b.push([rec(run_at=NOW + 2.25, priority=6, status="scheduled")])
            await b.push([rec(run_at=NOW + 5.0, status="scheduled")])
            assert await b.next_due("q") == NOW + 2.25
        finally:
            await b.close()

    asyncio.run(body())


def test_every_script_moves_a_task_within_its_level(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    async def body(b: RedisBackend) -> None:
        q = f"{prefix}:q:q:"
        records = [rec(id=f"t{i}", priority=4) for i in range(4)]
        records.append(rec(id="later", priority=4, status="scheduled", run_at=NOW + 50))
        await b.push(records)
        audit(client, prefix)
        first, second = await b.claim(ClaimRequest("q", NOW, 2, LEASE, "w"))  # t0 and t1
        await b.settle([Settlement(first.id, first.attempts, Outcome.RETRY, NOW, run_at=NOW + 2)])
        await b.settle([Settlement(second.id, second.attempts, Outcome.STARTED, NOW)])
        assert audit(client, prefix)["4"][b"%016x:t0" % 1] == NOW + 2
        assert await reap(b, "q", NOW + LEASE + 1, 5) == (1, 0)  # t1's lease expired
        audit(client, prefix)
        assert await b.cancel("t2", NOW) == "cancelled"
        assert b"%016x:t2" % 3 not in audit(client, prefix)["4"]
        assert await b.requeue(["t2"], NOW + 1) == ["t2"]
        assert audit(client, prefix)["4"][b"%016x:t2" % 3] == NOW + 1
        assert await b.release(["later"], NOW) == ["later"]
        assert audit(client, prefix)["4"][b"%016x:later" % 5] == NOW
        assert await b.purge("q", ["retrying"]) == 2  # t0 and t1
        assert set(audit(client, prefix)["4"]) == {b"%016x:t2" % 3, b"%016x:t3" % 4,
                                                   b"%016x:later" % 5}  # fmt: skip
        assert await b.purge("q") == 3
        assert client.exists(f"{q}waiting:4", f"{q}levels", f"{q}counts") == 0  # forgotten

    run(redis_server, prefix, body)


def test_pushes_with_keys_and_from_threads_keep_priority_and_slot(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    async def body(b: RedisBackend) -> None:
        keyed = rec(id="keyed", priority=-9, idempotency_key="k", idempotency_until=NOW + 60)
        slotted = rec(id="slotted", priority=2, slot=NOW + 0.1)
        assert await b.push([keyed, slotted]) == {}
        threaded = [rec(id=f"th{i}", priority=9, slot=NOW + 0.25) for i in range(3)]
        assert await asyncio.to_thread(b.push_sync, threaded)
        got = {r.id: (r.priority, r.slot) for r in await b.get(["keyed", "slotted", "th0"])}
        assert got == {"keyed": (-9, None), "slotted": (2, NOW + 0.1), "th0": (9, NOW + 0.25)}
        assert set(audit(client, prefix)) == {"-9", "2", "9"}
        # A reserved slot is taken without asking the limit, and the claim clears it.
        claimed = await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w", rates={"job": (1, 60.0)}))
        assert [r.id for r in claimed] == ["th0", "th1", "th2", "slotted", "keyed"]
        assert all(r.slot is None for r in claimed)
        assert client.hget(f"{prefix}:task:slotted", "slot") is None

    run(redis_server, prefix, body)


def test_a_rate_limit_keeps_its_last_n_starts_for_as_long_as_they_matter(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    async def body(b: RedisBackend) -> None:
        await b.push([rec(name="api", id=f"api{i}") for i in range(5)])
        await b.push([rec(name="other", id="other")])
        got = await b.claim(
            ClaimRequest("q", NOW, 10, LEASE, "w", rates={"api": (2, 10.0), "": (1, 5.0)})
        )
        assert [r.id for r in got] == ["api0", "api1", "other"]
        api = f"{prefix}:q:q:rate:api"
        assert [float(t) for t in client.lrange(api, 0, -1)] == [NOW + 10, NOW + 20]
        assert 30_000 < client.pttl(api) <= 31_000  # the last start + per, and a second
        assert [float(t) for t in client.lrange(f"{prefix}:q:q:rate:", 0, -1)] == [NOW]
        assert 5_000 < client.pttl(f"{prefix}:q:q:rate:") <= 6_000

    run(redis_server, prefix, body)


def test_start_times_are_exact(redis_server: RedisServer, prefix: str) -> None:
    async def body(b: RedisBackend) -> None:
        now, per = NOW + 0.1234567, 0.3
        await b.push([rec(name="api", id=f"api{i}", run_at=now - 1) for i in range(4)])
        assert (
            len(await b.claim(ClaimRequest("q", now, 10, LEASE, "w", rates={"api": (1, per)}))) == 1
        )
        starts = [now]
        expected = [take_slot(starts, 1, per, now) for _ in range(3)]
        slots = [r.slot for r in await b.get([f"api{i}" for i in range(1, 4)])]
        assert slots == expected
        assert await b.next_due("q") == expected[0]

    run(redis_server, prefix, body)


def test_a_claim_without_limits_clears_the_slot_of_a_delayed_record(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    async def body(b: RedisBackend) -> None:
        await b.push([rec(name="api", id=f"api{i}") for i in range(2)])
        await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w", rates={"api": (1, 10.0)}))
        assert client.hget(f"{prefix}:task:api1", "slot") is not None
        (late,) = await b.claim(ClaimRequest("q", NOW + 10, 10, LEASE, "w"))  # the plain path
        assert (late.id, late.slot) == ("api1", None)
        assert client.hget(f"{prefix}:task:api1", "slot") is None

    run(redis_server, prefix, body)


def test_wait_claim_takes_priorities_and_rates(redis_server: RedisServer, prefix: str) -> None:
    async def body(b: RedisBackend) -> None:
        await b.push([rec(name="api", id="a0"), rec(name="api", id="a1")])
        await b.push([rec(name="api", id="urgent", priority=1)])
        got = await b.wait_claim(
            ClaimRequest("q", NOW, 10, LEASE, "w", rates={"api": (1, 10.0)}), 1.0
        )
        assert [r.id for r in got] == ["urgent"]
        assert [r.slot for r in await b.get(["a0", "a1"])] == [NOW + 10, NOW + 20]

    run(redis_server, prefix, body)


# -- concurrency keys: lanes, turns and running counts ---------------------------------------


def both(
    redis_server: RedisServer,
    prefix: str,
    body: Callable[[Backend], Coroutine[Any, Any, list[list[str]]]],
) -> list[list[str]]:
    """Run ``body`` on Redis and on the in-memory reference; both must give the same answer."""

    async def on_memory() -> list[list[str]]:
        return await body(MemoryBackend())

    got: list[list[str]] = []

    async def on_redis(b: RedisBackend) -> None:
        got.extend(await body(b))

    run(redis_server, prefix, on_redis)
    assert got == asyncio.run(on_memory())
    return got


async def claim_ids(b: Backend, now: float, limit: int, **kw: Any) -> list[str]:
    return [r.id for r in await b.claim(ClaimRequest("q", now, limit, LEASE, "w", **kw))]


def test_a_plain_claim_keeps_the_turn_of_tasks_without_a_key(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    """The plain path (no key waiting) marks the keyless tasks served, and forgets it once
    none waits, so the first key to come is ordered as the reference orders it."""

    async def body(b: Backend) -> list[list[str]]:
        await b.push([rec(id="u0"), rec(id="u1")])
        answers = [await claim_ids(b, NOW, 1)]  # served: a new key goes first
        await b.push([rec(id="a0", concurrency_key="A")])
        answers.append(await claim_ids(b, NOW, 2))
        await b.push([rec(id="v0")])
        answers.append(await claim_ids(b, NOW, 1))  # none left after it: forgotten
        await b.push([rec(id="v1")])
        await b.push([rec(id="b0", concurrency_key="B")])
        answers.append(await claim_ids(b, NOW, 2))  # never served, both: the older first
        return answers

    assert both(redis_server, prefix, body) == [["u0"], ["a0", "u1"], ["v0"], ["v1", "b0"]]
    assert client.keys(f"{prefix}:q:q:lane*") == []
    assert client.exists(f"{prefix}:q:q:turn") == 0


def test_keyed_tasks_wait_in_their_keys_lanes(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    async def body(b: RedisBackend) -> None:
        q = f"{prefix}:q:q:"
        await b.push([rec(id=f"a{i}", concurrency_key="A") for i in range(3)])
        await b.push([rec(id="a-high", concurrency_key="A", priority=4)])
        await b.push([rec(id="b0", concurrency_key="B:x", run_at=NOW + 5, status="scheduled")])
        await b.push([rec(id="u0")])
        assert client.hget(f"{prefix}:task:u0", "concurrency_key") is None
        assert client.zcard(f"{q}lane:0:A") == 3
        assert client.zrange(f"{q}lane:4:A", 0, -1) == [b"%016x:a-high" % 4]
        assert client.zcard(f"{q}lane:0:B:x") == 1
        assert client.hget(f"{q}lanes:levels", "A") == b"4"
        assert client.zcard(f"{q}waiting") == 1
        assert audit_lanes(client, prefix) == {"A": 0, "B:x": 0}
        assert await b.next_due("q") == NOW
        assert await claim_ids(b, NOW, 3) == ["a-high", "u0", "a0"]
        # B is not due: it sleeps until it is, keeping its turn (never served).
        assert client.zscore(f"{q}lanes:later", "B:x") == NOW + 5
        assert audit_lanes(client, prefix) == {"A": 3, "B:x": 0}
        assert await b.next_due("q") == NOW
        assert await claim_ids(b, NOW + 5, 3) == ["b0", "a1", "a2"]
        assert audit_lanes(client, prefix) == {}  # every lane emptied: forgotten
        assert client.keys(f"{q}lane*") == []
        assert client.hgetall(f"{q}keyrun") == {b"A": b"4", b"B:x": b"1"}
        assert client.exists(f"{q}turn") == 0  # no turn left to remember: the count restarts

    run(redis_server, prefix, body)


def test_a_sleeping_lane_keeps_its_turn(redis_server: RedisServer, prefix: str) -> None:
    async def body(b: Backend) -> list[list[str]]:
        later: Scheduled = {"run_at": NOW + 1, "status": "scheduled", "concurrency_key": "A"}
        await b.push([rec(id="a0", concurrency_key="A"), rec(id="a1", concurrency_key="A")])
        await b.push([rec(id="a2", **later)])
        await b.push([rec(id=f"b{i}", concurrency_key="B") for i in range(3)])
        answers = [await claim_ids(b, NOW, 3)]  # then A sleeps until a2 is due
        await b.push([rec(id="c0", run_at=NOW + 1, status="scheduled", concurrency_key="C")])
        answers.append(await claim_ids(b, NOW, 1))  # C is not due: it sleeps too
        await b.push([rec(id="a3", **(later | {"run_at": NOW + 9}))])
        assert await b.release(["a3"], NOW) == ["a3"]  # wakes A, with its turn
        answers.append(await claim_ids(b, NOW, 3))
        answers.append(await claim_ids(b, NOW + 1, 3))  # C never served, then A
        return answers

    got = both(redis_server, prefix, body)
    assert got == [["a0", "b0", "a1"], ["b1"], ["a3", "b2"], ["c0", "a2"]]


def test_the_running_count_of_a_key_never_drifts(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    """keyrun follows every way a keyed task starts or stops running: claim, a push of a
    running record, settle (each outcome), reap (requeued or dead), purge of running tasks;
    a cancel request or a refused settlement changes nothing."""

    def keyrun() -> dict[str, int]:
        got = raw_hash(client.hgetall(f"{prefix}:q:q:keyrun"))
        return {k.decode(): int(v) for k, v in got.items()}

    async def body(b: RedisBackend) -> None:
        await b.push([rec(id=f"a{i}", concurrency_key="A") for i in range(6)])
        await b.push([rec(id=f"b{i}", concurrency_key="B") for i in range(3)])
        await b.push([rec(id="u0"), rec(id="r0", concurrency_key="B", status="running")])
        assert keyrun() == {"B": 1}
        got = {r.id: r for r in await b.claim(ClaimRequest("q", NOW, 8, LEASE, "w", per_key=3))}
        assert sorted(got) == ["a0", "a1", "a2", "b0", "b1", "u0"]  # B: r0 + 2
        assert keyrun() == {"A": 3, "B": 3}
        assert await b.cancel("a0", NOW) == "requested"
        a0, a1, b0 = got["a0"], got["a1"], got["b0"]
        stale = Settlement("a0", a0.attempts + 1, Outcome.SUCCEEDED, NOW)
        assert await b.settle([stale]) == ["a0"]
        assert keyrun() == {"A": 3, "B": 3}
        await b.settle(
            [
                Settlement("a0", a0.attempts, Outcome.CANCELLED, NOW),
                Settlement("a1", a1.attempts, Outcome.RETRY, NOW, run_at=NOW),
                Settlement("b0", b0.attempts, Outcome.FAILED, NOW),
                Settlement("u0", got["u0"].attempts, Outcome.SUCCEEDED, NOW),
            ]
        )
        assert keyrun() == {"A": 1, "B": 2}
        audit(client, prefix)
        # a2 and b1 stop renewing their leases: a2 is requeued, b1 (a third crash) dead; r0
        # (pushed running) holds no lease that expires.
        client.hset(f"{prefix}:task:b1", "crashes", 2)
        marks = [Settlement(i, got[i].attempts, Outcome.STARTED, NOW) for i in ("a2", "b1")]
        assert await b.settle(marks) == []  # (started: a lapse is a crash)
        assert keyrun() == {"A": 1, "B": 2}
        assert await reap(b, "q", NOW + LEASE + 1, 3) == (1, 1)
        assert keyrun() == {"B": 1}
        assert await b.purge("q", ["running"]) == 1
        assert keyrun() == {}
        got = {
            r.id: r
            for r in await b.claim(ClaimRequest("q", NOW + LEASE + 1, 10, LEASE, "w", per_key=2))
        }
        assert sorted(got) == ["a1", "a2", "b2"]  # B's b0 failed, b1 dead
        assert keyrun() == {"A": 2, "B": 1}
        assert await b.purge("q", ["reserved"]) == 3
        assert keyrun() == {}
        assert await claim_ids(b, NOW + LEASE + 1, 10) == ["a3", "a4", "a5"]
        assert keyrun() == {"A": 3}
        assert await b.purge("q") == 4  # a0 cancelled, b0 failed, b1 dead, u0 succeeded
        assert await b.purge("q", ["running"]) == 0  # claimed, not started: reserved
        assert await b.purge("q", ["reserved"]) == 3
        assert keyrun() == {}
        # Forgets the emptied lanes:
        await b.claim(ClaimRequest("q", NOW + LEASE + 1, 10, LEASE, "w"))
        assert client.keys(f"{prefix}:q:q:*") == []  # the queue is gone, all of it

    run(redis_server, prefix, body)
    audit(client, prefix)


def test_a_claim_reads_a_few_lanes_whatever_their_number(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    """Lanes are read in turn order a page at a time: a claim of a few tasks from many busy
    keys (each with a backlog) reads a few lanes and a few tasks of each, not everything."""

    def reads() -> int:
        stats = client.info("commandstats")
        return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("zrangebyscore",))

    async def body(b: RedisBackend) -> None:
        await b.push(
            [rec(id=f"k{k}-{i}", concurrency_key=f"K{k}") for k in range(100) for i in range(8)]
        )
        first = await claim_ids(b, NOW, 100)  # every key never served: each read once
        assert first == [f"k{k}-0" for k in range(100)]
        before = reads()
        for turn in range(1, 6):
            assert await claim_ids(b, NOW, 4) == [f"k{k}-{turn}" for k in range(4)]
            assert await claim_ids(b, NOW, 96) == [f"k{k}-{turn}" for k in range(4, 100)]
        assert reads() - before < 5 * (20 + 110)  # each claim: a page of lanes, a read each
        before = reads()
        assert await claim_ids(b, NOW, 4) == [f"k{k}-6" for k in range(4)]
        assert reads() - before < 20  # a page of 12 lanes, and the plain lane

    run(redis_server, prefix, body)
    audit(client, prefix)


# -- the same answers as the in-memory reference, under random operations --------------------


def _state(record: Record) -> tuple[Any, ...]:
    """A record's fields, all of them (crash accounting included)."""
    return astuple(record)


_RATES: list[dict[str, tuple[int, float]] | None] = [
    None,
    {},
    {"a": (2, 3.0)},
    {"": (1, 2.5), "b": (3, 7.25)},
    {"a": (1, 0.1), "c": (2, 1e-3)},
]


@dataclass
class Twins:
    """A Redis backend and the in-memory reference, driven by the same random operations;
    every answer must be the same."""

    r: RedisBackend
    m: MemoryBackend
    rng: random.Random
    keys: list[str | None]
    priorities: list[int]
    now: float = NOW
    ids: list[str] = field(default_factory=list)
    late: int = 0  #: late settlements applied (see settle)

    async def push(self) -> None:
        rng, batch = self.rng, []
        key = rng.choice(self.keys)
        for _ in range(rng.randint(1, 6)):
            self.ids.append(f"t{len(self.ids)}")
            batch.append(
                rec(
                    id=self.ids[-1],
                    name=rng.choice("abcd"),
                    run_at=self.now + rng.choice([0.0, -rng.random() * 200, rng.random()]),
                    created_at=self.now,
                    priority=rng.choice(self.priorities),
                    concurrency_key=key if rng.random() < 0.7 else rng.choice(self.keys),
                )
            )
        assert await self.r.push(batch) == await self.m.push(batch)

    async def claim(self) -> None:
        rng = self.rng
        args = (
            "q", self.now, rng.randint(1, 5), LEASE, "w",
            rng.choice([None, None, 3]), rng.choice([None, None, 1]),
        )  # fmt: skip
        kw: dict[str, Any] = {
            "aging": rng.choice([60.0, 0.5, 7.25]),
            "rates": rng.choice(_RATES),
            "per_key": rng.choice([None, None, 1, 2]),
        }
        got_r = [_state(x) for x in await self.r.claim(ClaimRequest(*args, **kw))]
        claimed_m = await self.m.claim(ClaimRequest(*args, **kw))
        got_m = [_state(x) for x in claimed_m]
        assert got_r == got_m, (args, kw)
        # Most claimed attempts start (a STARTED mark); the others stay reserved.
        marks = [
            Settlement(x.id, x.attempts, Outcome.STARTED, self.now)
            for x in claimed_m
            if rng.random() < 0.7
        ]
        assert await self.r.settle(marks) == await self.m.settle(marks) == []

    async def settle(self) -> None:
        """An outcome of a leased record, or (sometimes) of an earlier token: a late one."""
        rng = self.rng
        records = await self.m.get(self.ids)
        running = [x for x in records if x.status in ("reserved", "running")]
        if running and rng.random() < 0.8:
            x = rng.choice(running)
            token = x.attempts
        else:
            charged = [x for x in records if x.charged]
            if not charged:
                return
            # Mostly the last lease charged (its outcome may apply), sometimes an older one.
            last = [x for x in charged if str(x.attempts) in (x.charged or "").split(",")]
            if last and rng.random() < 0.7:
                x = rng.choice(last)
                token = x.attempts
            else:
                x = rng.choice(charged)
                token = int(rng.choice((x.charged or "").split(",")))
        outcome = rng.choice([Outcome.RETRY, Outcome.SUCCEEDED, Outcome.FAILED, Outcome.STARTED])
        s = Settlement(
            x.id, token, outcome, self.now, run_at=self.now + rng.random(),
            ran=rng.random() < 0.8,
        )  # fmt: skip
        refused = await self.r.settle([s])
        assert refused == await self.m.settle([s])
        if x.status not in ("reserved", "running") and not refused:
            self.late += 1

    async def cancel(self) -> None:
        victim = self.rng.choice(self.ids)
        assert await self.r.cancel(victim, self.now) == await self.m.cancel(victim, self.now)

    async def release(self) -> None:
        some = self.rng.sample(self.ids, min(3, len(self.ids)))
        assert await self.r.release(some, self.now) == await self.m.release(some, self.now)

    async def requeue(self) -> None:
        some = self.rng.sample(self.ids, min(4, len(self.ids)))
        assert await self.r.requeue(some, self.now) == await self.m.requeue(some, self.now)

    async def purge(self) -> None:
        statuses = self.rng.choice(
            [["cancelled"], ["pending", "retrying"], ["running"], ["reserved", "dead"], None]
        )
        assert await self.r.purge("q", statuses) == await self.m.purge("q", statuses)
        if not await self.m.counts("q"):
            # A queue left with no task at all forgets its turns at once on Redis (its keys
            # go with it), the reference at its next claim: that claim finds nothing either.
            assert await self.r.claim(ClaimRequest("q", self.now, 1, LEASE, "w")) == []
            assert await self.m.claim(ClaimRequest("q", self.now, 1, LEASE, "w")) == []

    async def reap(self) -> None:
        assert await reap(self.r, "q", self.now, 3) == await reap(self.m, "q", self.now, 3)

    async def step(self) -> None:
        """One random operation, then time passes; the next due times must agree."""
        op = self.rng.random()
        if not self.ids or op < 0.3:
            await self.push()
        else:
            chances = [
                (0.65, self.claim), (0.8, self.settle), (0.85, self.cancel),
                (0.9, self.release), (0.93, self.requeue), (0.95, self.purge),
                (1.0, self.reap),
            ]  # fmt: skip
            await next(do for upto, do in chances if op < upto)()
        self.now += self.rng.choice([0.0, 0.05, 0.5, self.rng.random() * 5, LEASE])
        assert await self.r.next_due("q") == await self.m.next_due("q")


@pytest.mark.parametrize("seed", range(10))
def test_claims_match_the_memory_backend_under_random_operations(
    redis_server: RedisServer, prefix: str, seed: int
) -> None:
    rng = random.Random(seed)
    # Some seeds start without keys (the plain paths) and mix them in later, some use keys
    # only, some a mix throughout; some use priority 0 only (the plain claim).
    mixed: list[str | None] = [None, None, "A", "B", "C", "D"]
    choices: list[list[str | None]] = [[None], ["A", "B", "C"], mixed]
    keys = choices[seed % 3]
    priorities = [0] if seed % 4 == 1 else [0, 0, 0, 1, -1, 9, -9, rng.randint(-9, 9)]
    client = redis.Redis.from_url(redis_server.url)

    async def body(r: RedisBackend) -> None:
        twins = Twins(r, MemoryBackend(), rng, keys, priorities, now=NOW + rng.random())
        for step in range(400):
            if step == 200:
                keys[:] = mixed
            await twins.step()
            if step % 20 == 0:
                audit(client, prefix)
                ids = twins.ids
                assert [_state(x) for x in await r.get(ids)] == [
                    _state(x) for x in await twins.m.get(ids)
                ]
        ids = twins.ids
        assert twins.late > 0  # late outcomes were applied, the same way on both
        assert [_state(x) for x in await r.get(ids)] == [_state(x) for x in await twins.m.get(ids)]
        assert await r.counts("q") == await twins.m.counts("q")

    run(redis_server, prefix, body)
    audit(client, prefix)
