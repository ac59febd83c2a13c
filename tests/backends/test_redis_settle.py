"""settle.lua's two paths: a common batch written by the lean path leaves what the full one would.

The lean path (see settle.lua) defines only what a batch of first outcomes and STARTED marks
on readable leased records needs; any other batch goes to the full path. The same batch is
settled on two prefixes, once alone (lean) and once with one more settlement, of a record that
does not exist, which sends it to the full path; both must answer and store the same.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis

from dowork.backends import ClaimRequest, Outcome, Record, RedisBackend, Settlement
from dowork.errors import BackendError
from tests.backends.test_contract import LEASE, NOW, rec
from tests.backends.test_redis_inbox import stored
from tests.redis_server import RedisServer
from tests.upkeep import reap

ATTEMPT = '{"n":1,"took":0.25,"outcome":"done and a line longer than a listpack value"}'


def test_the_lean_path_writes_what_the_full_path_would(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    tasks = [rec() for _ in range(6)]
    lean, full = f"test-{uuid.uuid4().hex[:12]}", f"test-{uuid.uuid4().hex[:12]}"

    async def settle(prefix: str, extra: list[Settlement]) -> list[Any]:
        b = RedisBackend(redis_server.url, prefix=prefix)
        await b.push(tasks)
        claimed = await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))
        assert len(claimed) == 6
        r0, r1, r2, r3, r4, r5 = (t.id for t in tasks)
        retry = Settlement(r5, 1, Outcome.RETRY, NOW + 1, run_at=NOW + 1, error="E1")
        assert await b.settle([Settlement(r0, 1, Outcome.STARTED, NOW + 1), retry]) == []
        (again,) = await b.claim(ClaimRequest("q", NOW + 2, 10, LEASE, "w"))
        assert (again.id, again.error) == (r5, "E1")  # (an error the outcome clears)
        buried: list[tuple[str, str]] = []
        batch = [
            Settlement(r0, 1, Outcome.SUCCEEDED, NOW + 3, result=b"1", attempt=ATTEMPT),
            Settlement(r1, 1, Outcome.FAILED, NOW + 3, error="boom", reason="x", attempt="{}"),
            Settlement(r2, 1, Outcome.STARTED, NOW + 3),
            Settlement(r3, 1, Outcome.CANCELLED, NOW + 3, ran=False),
            Settlement(r4, 1, Outcome.DEAD, NOW + 3, error="E", reason="crashed", keep=60.0),
            Settlement(r5, 2, Outcome.SUCCEEDED, NOW + 4, result=b"2", attempt=ATTEMPT),
        ]
        refused = await b.settle(batch + extra, buried=buried)
        counts = await b.counts("q")
        await b.close()
        return [refused, buried, counts]

    missing = Settlement(uuid.uuid4().hex, 1, Outcome.SUCCEEDED, NOW + 3)
    refused, buried, counts = asyncio.run(settle(lean, []))
    assert (refused, buried) == ([], [])
    assert counts == {"succeeded": 2, "failed": 1, "running": 1, "cancelled": 1, "dead": 1}
    assert asyncio.run(settle(full, [missing])) == [[missing.id], [], counts]
    assert stored(admin, lean) == stored(admin, full)
    admin.close()


def test_runs_of_queues_and_statuses_are_counted_as_the_full_path_counts(
    redis_server: RedisServer,
) -> None:
    """The lean path counts a run of one queue and statuses at once: runs that alternate."""
    admin = redis.Redis.from_url(redis_server.url)
    tasks = [rec(queue=q) for q in ("a", "b", "a", "a", "b", "b", "a")]
    outcomes = [Outcome.SUCCEEDED, Outcome.SUCCEEDED, Outcome.FAILED, Outcome.FAILED,
                Outcome.SUCCEEDED, Outcome.CANCELLED, Outcome.SUCCEEDED]  # fmt: skip
    lean, full = f"test-{uuid.uuid4().hex[:12]}", f"test-{uuid.uuid4().hex[:12]}"

    async def settle(prefix: str, extra: list[Settlement]) -> list[Any]:
        b = RedisBackend(redis_server.url, prefix=prefix)
        await b.push(tasks)
        for q in ("a", "b"):
            await b.claim(ClaimRequest(q, NOW, 10, LEASE, "w"))
        batch = [
            Settlement(t.id, 1, o, NOW + 1, attempt=ATTEMPT)
            for t, o in zip(tasks, outcomes, strict=True)
        ]
        refused = await b.settle(batch + extra)
        counts = [await b.counts(q) for q in ("a", "b")]
        await b.close()
        return [refused, counts]

    missing = Settlement(uuid.uuid4().hex, 1, Outcome.SUCCEEDED, NOW + 1)
    refused, counts = asyncio.run(settle(lean, []))
    assert refused == []
    assert counts == [{"succeeded": 2, "failed": 2}, {"succeeded": 2, "cancelled": 1}]
    assert asyncio.run(settle(full, [missing])) == [[missing.id], counts]
    assert stored(admin, lean) == stored(admin, full)


def test_a_started_mark_then_its_outcome_in_one_batch_is_written_by_the_lean_path(
    redis_server: RedisServer,
) -> None:
    """A busy worker's batch often holds a task's STARTED mark and then its outcome: the lean
    path writes it, reading each record once, and stores what the full path would (the
    outcome alone, counting the start)."""
    admin = redis.Redis.from_url(redis_server.url)
    tasks = [rec() for _ in range(3)]
    lean, full = f"test-{uuid.uuid4().hex[:12]}", f"test-{uuid.uuid4().hex[:12]}"

    def hmgets() -> int:
        return int(admin.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))

    async def settle(prefix: str, extra: list[Settlement]) -> list[Any]:
        b = RedisBackend(redis_server.url, prefix=prefix)
        await b.push(tasks)
        assert len(await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))) == 3
        r0, r1, r2 = (t.id for t in tasks)
        batch = [
            Settlement(r0, 1, Outcome.STARTED, NOW + 1),
            Settlement(r1, 1, Outcome.SUCCEEDED, NOW + 2, result=b"1", attempt=ATTEMPT),
            Settlement(r0, 1, Outcome.SUCCEEDED, NOW + 2, result=b"2", attempt=ATTEMPT),
            Settlement(r2, 1, Outcome.STARTED, NOW + 1),
            Settlement(r2, 1, Outcome.FAILED, NOW + 2, error="boom", attempt="{}"),
        ]
        admin.config_resetstat()
        refused = await b.settle(batch + extra)
        reads = hmgets()
        counts = await b.counts("q")
        await b.close()
        return [refused, counts, reads]

    missing = Settlement(uuid.uuid4().hex, 1, Outcome.SUCCEEDED, NOW + 3)
    refused, counts, reads = asyncio.run(settle(lean, []))
    assert (refused, counts, reads) == ([], {"succeeded": 2, "failed": 1}, 3)
    assert asyncio.run(settle(full, [missing]))[:2] == [[missing.id], counts]
    assert stored(admin, lean) == stored(admin, full)
    admin.close()


def test_a_batch_sharing_its_times_stores_what_each_outcome_alone_would(
    redis_server: RedisServer,
) -> None:
    """The settle arguments write a time once a batch (``_settle_args``'s ``texts``).

    A batch of outcomes of one time (a drain of the thread lane), with expiries, a retry and a
    mark among them, is written on one prefix in one call and on another one settlement a
    call: the two store the same, and the times as ``repr`` writes them.
    """
    admin = redis.Redis.from_url(redis_server.url)
    tasks = [rec() for _ in range(5)]
    now = NOW + 0.1234567891  # (a time whose repr has 17 digits)
    r0, r1, r2, r3, r4 = (t.id for t in tasks)
    batch = [
        Settlement(r0, 1, Outcome.SUCCEEDED, now, result=b"1", attempt=ATTEMPT),
        Settlement(r1, 1, Outcome.SUCCEEDED, now, result=b"2", keep=60.0),
        Settlement(r2, 1, Outcome.FAILED, now, error="boom", keep=60.0),
        Settlement(r3, 1, Outcome.RETRY, now, run_at=now + 60.0, error="E"),
        Settlement(r4, 1, Outcome.STARTED, now),
    ]

    async def settle(prefix: str, together: bool) -> None:
        b = RedisBackend(redis_server.url, prefix=prefix)
        await b.push(tasks)
        assert len(await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))) == 5
        if together:
            assert await b.settle(batch) == []
        else:
            for s in batch:
                assert await b.settle([s]) == []
        await b.close()

    one, each = f"test-{uuid.uuid4().hex[:12]}", f"test-{uuid.uuid4().hex[:12]}"
    asyncio.run(settle(one, True))
    asyncio.run(settle(each, False))
    together, apart = stored(admin, one), stored(admin, each)
    assert {k: sorted(v) for k, v in together.items()} == {k: sorted(v) for k, v in apart.items()}
    updated, finished = admin.hmget(f"{one}:task:{r1}", ["updated_at", "finished_at"])
    assert (updated, finished) == (repr(now).encode(), None)  # (finished_at is updated_at)
    admin.close()


def test_a_settlement_sends_only_the_arguments_its_kind_uses(redis_server: RedisServer) -> None:
    """A mark sends 3 arguments, an outcome 7, and 11 with an error, reason, payload or retry.

    A kind settle.lua does not know is refused before anything is written.
    """
    admin = redis.Redis.from_url(redis_server.url)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    task = rec()

    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=prefix)
        texts: dict[float, str] = {}
        sizes = [
            len(b._settle_args(s, texts))
            for s in (
                Settlement(task.id, 1, Outcome.STARTED, NOW),
                Settlement(task.id, 1, Outcome.SUCCEEDED, NOW, result=b"1", attempt=ATTEMPT),
                Settlement(task.id, 1, Outcome.FAILED, NOW, error="E"),
                Settlement(task.id, 1, Outcome.RETRY, NOW, run_at=NOW + 1),
            )
        ]
        assert sizes == [3, 7, 11, 11]
        await b.push([task])
        await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        before = stored(admin, prefix)
        with pytest.raises(BackendError, match="no kind"):
            await b._script("settle", 1, task.id.encode(), 1, "finished", repr(NOW), "", "", "")
        assert stored(admin, prefix) == before
        await b.close()

    asyncio.run(main())
    admin.close()


def test_a_record_leased_as_pushed_is_read_short_only_while_leased(
    redis_server: RedisServer,
) -> None:
    """A claim of a record as pushed writes attempts '01' (claim.lua's FRESH): its settlement
    reads 5 fields and takes error, history and concurrency key as absent. Once its lease
    lapsed (the reaper writes an error), a late outcome reads it whole, and a charged token
    written '01' (by an older reaper) is still this outcome's."""
    admin = redis.Redis.from_url(redis_server.url)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    plain, lapsed, charged = rec(), rec(), rec()

    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=prefix)
        await b.push([plain, lapsed, charged])
        assert len(await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))) == 3
        key = f"{prefix}:task:".__add__
        assert [admin.hget(key(r.id), "attempts") for r in (plain, lapsed, charged)] == [b"01"] * 3
        marks = [Settlement(r.id, 1, Outcome.STARTED, NOW + 1) for r in (lapsed, charged)]
        done = Settlement(plain.id, 1, Outcome.SUCCEEDED, NOW + 1, result=b"1", attempt="{}")
        assert await b.settle([*marks, done]) == []
        h = admin.hgetall(key(plain.id))
        assert (h[b"status"], h[b"started"], h[b"history"]) == (b"succeeded", b"1", b"{}\n")
        assert await reap(b, "q", NOW + LEASE + 1, crash_budget=1) == (0, 2)  # (dead)
        assert admin.hget(key(lapsed.id), "error") is not None
        admin.hset(key(charged.id), "charged", "01")  # (as an older reaper writes it)
        late = [
            Settlement(r.id, 1, Outcome.SUCCEEDED, NOW + LEASE + 2, result=b"2", attempt="{}")
            for r in (lapsed, charged)
        ]
        assert await b.settle(late) == []
        for r in (lapsed, charged):
            h = admin.hgetall(key(r.id))
            assert (h[b"status"], h[b"history"]) == (b"succeeded", b"{}\n")
            assert (b"error" in h, h[b"crashes"], h[b"lost"]) == (False, b"0", b"1")
        await b.close()

    asyncio.run(main())
    admin.close()


def test_the_full_path_answers_nil_when_it_refuses_and_buries_nothing(
    redis_server: RedisServer,
) -> None:
    """settle.lua answers nil for a batch with nothing refused or buried, by either path (a
    retry goes by the full one); tables only when there is something in them."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    tasks = [rec(), rec()]

    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=prefix)
        await b.push(tasks)
        await b.claim(ClaimRequest("q", NOW, 2, LEASE, "w"))
        texts: dict[float, str] = {}
        retry = Settlement(tasks[0].id, 1, Outcome.RETRY, NOW + 1, run_at=NOW + 2, error="E")
        assert await b._script("settle", 1, *b._settle_args(retry, texts)) is None
        stale = Settlement(tasks[0].id, 1, Outcome.SUCCEEDED, NOW + 1)
        done = Settlement(tasks[1].id, 1, Outcome.SUCCEEDED, NOW + 1)
        args = [*b._settle_args(stale, texts), *b._settle_args(done, texts)]
        assert await b._script("settle", 2, *args) == [[tasks[0].id.encode()], []]
        assert await b.counts("q") == {"retrying": 1, "succeeded": 1}
        await b.close()

    asyncio.run(main())


def test_a_first_lease_of_a_record_read_whole_is_marked_unless_it_holds_a_key(
    redis_server: RedisServer,
) -> None:
    """FRESH (claim.lua) marks any first lease of a record without an error, history or
    concurrency key: a prioritised task's settlement reads it short too; a keyed one's not."""
    admin = redis.Redis.from_url(redis_server.url)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    high, keyed = rec(priority=3), rec(concurrency_key="k")

    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=prefix)
        await b.push([high, keyed])
        claimed = await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))
        assert [(r.id, r.attempts) for r in claimed] == [(high.id, 1), (keyed.id, 1)]
        key = f"{prefix}:task:".__add__
        assert [admin.hget(key(r.id), "attempts") for r in (high, keyed)] == [b"01", b"1"]
        done = [
            Settlement(r.id, 1, Outcome.SUCCEEDED, NOW + 1, result=b"1", attempt="{}")
            for r in (high, keyed)
        ]
        assert await b.settle(done) == []
        for r in (high, keyed):
            h = admin.hgetall(key(r.id))
            assert (h[b"status"], h[b"started"], h[b"history"]) == (b"succeeded", b"1", b"{}\n")
        assert await b.counts("q") == {"succeeded": 2}
        await b.close()

    asyncio.run(main())
    admin.close()


def test_only_a_settlement_of_token_1_reads_a_record_in_two_parts(
    redis_server: RedisServer,
) -> None:
    """A marked record (see FRESH) is read in one HMGET of 5 fields, a later lease's in one of
    9 (it cannot be marked), and only a first lease without the mark in two."""
    admin = redis.Redis.from_url(redis_server.url)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    plain, retried, keyed = rec(), rec(), rec(concurrency_key="k")

    def hmgets() -> int:
        return int(admin.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))

    async def settled(b: RedisBackend, task: Record, token: int) -> int:
        before = hmgets()
        done = Settlement(task.id, token, Outcome.SUCCEEDED, NOW + 3, result=b"1")
        assert await b.settle([done]) == []
        return hmgets() - before

    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=prefix)
        await b.push([plain, retried, keyed])
        assert len(await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))) == 3
        retry = Settlement(retried.id, 1, Outcome.RETRY, NOW + 1, run_at=NOW + 1, error="E")
        assert await b.settle([retry]) == []
        (again,) = await b.claim(ClaimRequest("q", NOW + 2, 10, LEASE, "w"))
        assert (again.id, again.attempts) == (retried.id, 2)
        assert [await settled(b, plain, 1), await settled(b, retried, 2)] == [1, 1]
        assert await settled(b, keyed, 1) == 2
        assert await b.counts("q") == {"succeeded": 3}
        assert admin.hget(f"{prefix}:task:{retried.id}", "error") is None
        await b.close()

    asyncio.run(main())
    admin.close()
