"""The backend contract: every backend must pass these unchanged (memory, SQLite; Redis next)."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from dowork.backends import Backend, ClaimRequest, Outcome, Record, Settlement
from dowork.backends._protocol import STATS_MINUTES, WorkerBeat, attempt_line
from dowork.errors import BackendError
from tests.upkeep import purge_finished, reap, write_beat

NOW = 1_700_000_000.0
LEASE = 30.0
_ids = itertools.count()


def rec(queue: str = "q", run_at: float = NOW, name: str = "job", **kw: Any) -> Record:
    return Record(
        id=kw.pop("id", None) or uuid.uuid4().hex,
        queue=queue,
        name=name,
        payload=b'{"a":[%d]}' % next(_ids),
        run_at=run_at,
        created_at=kw.pop("created_at", NOW),
        **kw,
    )


def run(
    factory: Callable[[], Backend], test: Callable[[Backend], Coroutine[Any, Any, None]]
) -> None:
    async def main() -> None:
        backend = factory()
        await backend.open()
        try:
            await test(backend)
        finally:
            await backend.close()

    asyncio.run(main())


async def start(b: Backend, records: list[Record], now: float = NOW) -> None:
    """Mark claimed records started (reserved -> running), as a worker does once it runs them."""
    started = [Settlement(r.id, r.attempts, Outcome.STARTED, now) for r in records]
    assert await b.settle(started) == []


def test_push_then_get(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        records = [rec(), rec(status="scheduled", run_at=NOW + 60)]
        await b.push(records)
        got = {r.id: r for r in await b.get([r.id for r in records] + ["missing"])}
        assert set(got) == {r.id for r in records}
        first = got[records[0].id]
        assert first.payload == records[0].payload
        assert first.status == "pending"
        assert first.attempts == 0
        assert await b.counts("q") == {"pending": 1, "scheduled": 1}

    run(backend_factory, body)


def test_push_is_atomic(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        existing = rec()
        await b.push([existing])
        fresh = rec()
        with pytest.raises(BackendError):
            await b.push([fresh, rec(id=existing.id)])
        assert await b.get([fresh.id]) == []

    run(backend_factory, body)


def test_claim_leases_due_records_oldest_first(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        late = rec(run_at=NOW - 1)
        early = rec(run_at=NOW - 10)
        future = rec(run_at=NOW + 100, status="scheduled")
        other = rec(queue="other")
        await b.push([late, early, future, other])
        claimed = await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w1"))
        assert [r.id for r in claimed] == [early.id, late.id]
        for r in claimed:
            assert r.status == "reserved"  # held, not started: running once marked
            assert r.attempts == 1
            assert r.started == 0
            assert r.lease_until == NOW + LEASE
            assert r.owner == "w1"
        await start(b, claimed[:1])
        got = {r.id: r for r in await b.get([early.id, late.id])}
        assert (got[early.id].status, got[early.id].started) == ("running", 1)
        assert (got[late.id].status, got[late.id].started) == ("reserved", 0)
        await start(b, claimed[:1])  # a mark written twice counts once
        (again,) = await b.get([early.id])
        assert (again.status, again.started) == ("running", 1)
        # Leased records are taken:
        assert await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w2")) == []
        assert [r.id for r in await b.claim(ClaimRequest("q", NOW + 100, 10, LEASE, "w2"))] == [
            future.id
        ]
        assert await b.claim(ClaimRequest("q", NOW, 0, LEASE, "w2")) == []

    run(backend_factory, body)


def test_claim_respects_the_limit_and_fifo(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        records = [rec() for _ in range(10)]
        await b.push(records)
        first = await b.claim(ClaimRequest("q", NOW, 4, LEASE, "w"))
        second = await b.claim(ClaimRequest("q", NOW, 100, LEASE, "w"))
        assert [r.id for r in first + second] == [r.id for r in records]

    run(backend_factory, body)


def test_settle_success_and_fencing(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(), rec()])
        one, two = await b.claim(ClaimRequest("q", NOW, 2, LEASE, "w"))
        refused = await b.settle(
            [
                Settlement(one.id, one.attempts, Outcome.SUCCEEDED, NOW + 1, result=b"42"),
                Settlement(two.id, two.attempts + 1, Outcome.SUCCEEDED, NOW + 1),  # stale token
            ]
        )
        assert refused == [two.id]
        (done,) = await b.get([one.id])
        (still,) = await b.get([two.id])
        assert done.status == "succeeded"
        assert done.result == b"42"
        assert done.finished_at == NOW + 1
        assert done.started == 1  # an outcome on a reserved record counts its start
        assert still.status == "reserved"
        assert await b.settle([Settlement(one.id, one.attempts, Outcome.FAILED, NOW)]) == [one.id]

    run(backend_factory, body)


def test_retry_waits_until_run_at(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec()])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        await b.settle([Settlement(r.id, 1, Outcome.RETRY, NOW, run_at=NOW + 60, error="boom")])
        (stored,) = await b.get([r.id])
        assert stored.status == "retrying"
        assert stored.error == "boom"
        assert await b.next_due("q") == NOW + 60
        assert await b.claim(ClaimRequest("q", NOW + 59, 1, LEASE, "w")) == []
        (again,) = await b.claim(ClaimRequest("q", NOW + 60, 1, LEASE, "w"))
        assert again.attempts == 2

    run(backend_factory, body)


@pytest.mark.parametrize(
    ("outcome", "status"),
    [(Outcome.FAILED, "failed"), (Outcome.CANCELLED, "cancelled"), (Outcome.DEAD, "dead")],
)
def test_final_outcomes(
    backend_factory: Callable[[], Backend], outcome: Outcome, status: str
) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec()])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        await b.settle([Settlement(r.id, 1, outcome, NOW, error="E", reason="why")])
        (stored,) = await b.get([r.id])
        assert (stored.status, stored.error, stored.reason) == (status, "E", "why")
        assert await b.claim(ClaimRequest("q", NOW + 10**6, 1, LEASE, "w")) == []

    run(backend_factory, body)


def test_keep_zero_forgets_and_purge_expires(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(), rec()])
        one, two = await b.claim(ClaimRequest("q", NOW, 2, LEASE, "w"))
        await b.settle(
            [
                Settlement(one.id, 1, Outcome.SUCCEEDED, NOW, keep=0),
                Settlement(two.id, 1, Outcome.SUCCEEDED, NOW, keep=100),
            ]
        )
        assert await b.get([one.id]) == []
        assert await purge_finished(b, NOW + 99) == 0
        assert len(await b.get([two.id])) == 1
        assert await purge_finished(b, NOW + 101) == 1
        assert await b.get([two.id]) == []

    run(backend_factory, body)


def test_heartbeat_extends_and_reports(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(), rec()])
        one, two = await b.claim(ClaimRequest("q", NOW, 2, LEASE, "w"))
        assert await b.cancel(two.id, NOW) == "requested"
        lost, cancel = await b.heartbeat([(one.id, 1), (two.id, 1), ("gone", 1)], NOW + 20, LEASE)
        assert lost == ["gone"]
        assert cancel == [two.id]
        (stored,) = await b.get([one.id])
        assert stored.lease_until == NOW + 20 + LEASE
        assert await reap(b, "q", NOW + 40, 3) == (0, 0)  # the renewed lease has not expired
        lost, _ = await b.heartbeat([(one.id, 7)], NOW, LEASE)
        assert lost == [one.id]

    run(backend_factory, body)


def test_release_makes_held_records_due_now(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        held = rec(status="scheduled", run_at=NOW + 3600)
        due = rec()
        await b.push([held, due])
        assert [r.id for r in await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w"))] == [due.id]
        assert await b.release([held.id, due.id, "missing"], NOW + 1) == [held.id]
        assert await b.release([held.id], NOW + 2) == []  # already due: nothing to do
        (stored,) = await b.get([held.id])
        assert (stored.status, stored.run_at) == ("pending", NOW + 1)
        assert await b.counts("q") == {"pending": 1, "reserved": 1}
        (claimed,) = await b.claim(ClaimRequest("q", NOW + 1, 10, LEASE, "w"))
        assert claimed.id == held.id

    run(backend_factory, body)


def test_progress_is_stored_for_the_current_attempt_only(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(), rec()])
        one, two = await b.claim(ClaimRequest("q", NOW, 2, LEASE, "w"))
        assert one.progress is None
        await b.progress([(one.id, 1, '[0.5, "half", 1]'), (two.id, 9, "[1, null, 1]")])
        await b.progress([("gone", 1, "[1, null, 1]")])  # a purged record is not recreated
        got = {r.id: r for r in await b.get([one.id, two.id, "gone"])}
        assert set(got) == {one.id, two.id}
        assert got[one.id].progress == '[0.5, "half", 1]'
        assert got[two.id].progress is None  # a stale token (lost lease) is ignored
        await b.settle([Settlement(one.id, 1, Outcome.SUCCEEDED, NOW + 1)])
        (done,) = await b.get([one.id])
        assert done.progress == '[0.5, "half", 1]'  # the last report outlives the attempt

    run(backend_factory, body)


def test_reaper_requeues_expired_leases_and_fences_the_old_owner(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec()])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "dead-worker"))
        await start(b, [r])
        assert await reap(b, "q", NOW + LEASE - 1, 3) == (0, 0)
        assert await reap(b, "q", NOW + LEASE + 1, 3) == (1, 0)
        (again,) = await b.claim(ClaimRequest("q", NOW + LEASE + 1, 1, LEASE, "w2"))
        assert again.id == r.id
        assert again.attempts == 2
        assert again.crashes == 1
        assert again.run_at == r.run_at  # back to its place in the queue, not behind the rest
        late = Settlement(r.id, r.attempts, Outcome.SUCCEEDED, NOW + 50)
        assert await b.settle([late]) == [r.id]  # the paused worker is refused
        assert await b.settle([Settlement(r.id, 2, Outcome.SUCCEEDED, NOW + 50)]) == []

    run(backend_factory, body)


def test_a_repeat_crasher_is_claimed_alone(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        first, second, third = rec(), rec(), rec()
        await b.push([first, second, third])
        now = NOW
        for _ in range(2):  # the first two crash their workers
            claimed = await b.claim(ClaimRequest("q", now, 2, LEASE, "dead-worker", alone_from=2))
            assert [r.id for r in claimed] == [first.id, second.id]
            await start(b, claimed, now)
            now += LEASE + 1
            assert await reap(b, "q", now, 3) == (2, 0)
        (alone,) = await b.claim(ClaimRequest("q", now, 10, LEASE, "w2", alone_from=2))
        assert alone.id == first.id  # on its last crash: alone
        (alone,) = await b.claim(ClaimRequest("q", now, 10, LEASE, "w2", alone_from=2))
        assert alone.id == second.id
        rest = await b.claim(ClaimRequest("q", now, 10, LEASE, "w2", alone_from=2))
        assert [r.id for r in rest] == [third.id]

    run(backend_factory, body)


def test_crash_budget_dead_letters(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec()])
        now = NOW
        for crash in range(1, 4):
            (r,) = await b.claim(ClaimRequest("q", now, 1, LEASE, f"w{crash}"))
            await start(b, [r], now)
            now += LEASE + 1
            requeued, dead = await reap(b, "q", now, 3)
            assert (requeued, dead) == ((1, 0) if crash < 3 else (0, 1))
        (stored,) = await b.get([r.id])
        assert stored.status == "dead"
        assert stored.reason == "crashed_worker"
        assert stored.crashes == 3

    run(backend_factory, body)


def test_cancel(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        waiting, running = rec(), rec()
        await b.push([running])
        await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        await b.push([waiting])
        assert await b.cancel(waiting.id, NOW) == "cancelled"
        assert await b.cancel(running.id, NOW) == "requested"
        assert await b.cancel("nope", NOW) == "unknown"
        assert await b.claim(ClaimRequest("q", NOW + 10, 5, LEASE, "w")) == []
        await b.settle([Settlement(running.id, 1, Outcome.CANCELLED, NOW)])
        assert await b.cancel(running.id, NOW) == "finished"
        assert await b.counts("q") == {"cancelled": 2}

    run(backend_factory, body)


def test_next_due_and_counts(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        assert await b.next_due("q") is None
        await b.push([rec(run_at=NOW + 5), rec(run_at=NOW + 3), rec(queue="x", run_at=NOW)])
        assert await b.next_due("q") == NOW + 3
        assert await b.counts("q") == {"pending": 2}

    run(backend_factory, body)


def test_wait_returns_on_push_or_timeout(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        started = time.monotonic()
        await b.wait("q", 0.05)
        assert time.monotonic() - started >= 0.009
        waiter = asyncio.create_task(b.wait("q", 5.0))
        await asyncio.sleep(0.01)
        await b.push([rec()])
        await asyncio.wait_for(waiter, 1.0)

    run(backend_factory, body)


def test_two_handles_never_claim_the_same_record(backend_factory: Callable[[], Backend]) -> None:
    """Several workers (separate backend objects on one store) claiming at once."""

    async def body(b: Backend) -> None:
        records = [rec() for _ in range(300)]
        await b.push(records)
        others = [backend_factory() for _ in range(3)]
        for other in others:
            await other.open()
        seen: list[str] = []

        async def worker(handle: Backend, name: str) -> None:
            while batch := await handle.claim(ClaimRequest("q", NOW, 7, LEASE, name)):
                seen.extend(r.id for r in batch)

        await asyncio.gather(*(worker(h, f"w{i}") for i, h in enumerate([b, *others])))
        for other in others:
            if other is not b:
                await other.close()
        assert sorted(seen) == sorted(r.id for r in records)

    run(backend_factory, body)


def test_max_running_caps_claims_across_workers(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec() for _ in range(5)])
        first = await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w1", max_running=2))
        assert len(first) == 2
        assert await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w2", max_running=2)) == []
        await b.settle([Settlement(first[0].id, 1, Outcome.SUCCEEDED, NOW)])
        assert len(await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w2", max_running=2))) == 1
        assert len(await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w3"))) == 2  # no cap given

    run(backend_factory, body)


def test_retry_can_replace_the_payload(backend_factory: Callable[[], Backend]) -> None:
    """A chained job stores where to resume: the retry settlement carries new arguments."""

    async def body(b: Backend) -> None:
        original = rec()
        await b.push([original])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        await b.settle([Settlement(r.id, 1, Outcome.RETRY, NOW, run_at=NOW, payload=b'{"new":1}')])
        (again,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        assert again.payload == b'{"new":1}'
        await b.settle([Settlement(r.id, 2, Outcome.RETRY, NOW, run_at=NOW)])
        (third,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        assert third.payload == b'{"new":1}'  # no payload given: kept

    run(backend_factory, body)


# -- inspection and maintenance ----------------------------------------------------------------


async def assert_consistent(b: Backend, queue: str, ids: list[str]) -> None:
    """counts() and list() agree with the statuses get() reports for the queue's records."""
    records = [r for r in await b.get(ids) if r.queue == queue]
    real: dict[str, int] = {}
    for r in records:
        real[r.status] = real.get(r.status, 0) + 1
    assert await b.counts(queue) == real
    assert sorted(r.id for r in await b.list(queue, limit=10_000)) == sorted(r.id for r in records)
    for status in real:
        listed = await b.list(queue, [status], limit=10_000)
        assert sorted(r.id for r in listed) == sorted(r.id for r in records if r.status == status)


def test_queues_names_the_queues_with_records(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        assert await b.queues() == []
        gone = rec(queue="c")
        await b.push([rec(queue="b"), rec(queue="a"), rec(queue="a"), gone])
        assert await b.queues() == ["a", "b", "c"]
        (r,) = await b.claim(ClaimRequest("c", NOW, 1, LEASE, "w"))
        await b.settle([Settlement(r.id, 1, Outcome.SUCCEEDED, NOW, keep=0)])  # forgotten
        assert await b.queues() == ["a", "b"]
        assert await b.purge("a") == 2
        assert await b.queues() == ["b"]

    run(backend_factory, body)


def test_list_orders_by_creation_and_pages(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        created = [NOW + (i * 7 % 25) // 2 for i in range(25)]  # shuffled, with ties
        records = [rec(created_at=at) for at in created]
        await b.push(records[:12])
        await b.push(records[12:])  # ties across pushes keep push order too
        await b.push([rec(queue="other")])
        oldest = [records[i].id for i in sorted(range(25), key=lambda i: (created[i], i))]

        pages = [await b.list("q", limit=10, offset=o) for o in (0, 10, 20)]
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [r.id for p in pages for r in p] == oldest[::-1]  # newest first by default
        pages = [await b.list("q", limit=10, offset=o, newest_first=False) for o in (0, 10, 20)]
        assert [r.id for p in pages for r in p] == oldest
        first = pages[0][0]
        assert (first.payload, first.status, first.created_at) == (
            next(r.payload for r in records if r.id == first.id),
            "pending",
            min(created),
        )
        assert await b.list("q", offset=30) == []
        assert await b.list("q", limit=0) == []
        assert [r.id for r in await b.list("q")] == oldest[::-1]  # the default page holds all
        assert await b.list("nowhere") == []
        with pytest.raises(ValueError, match="negative"):
            await b.list("q", limit=-1)
        with pytest.raises(ValueError, match="negative"):
            await b.list("q", offset=-1)

    run(backend_factory, body)


def test_list_filters_by_status(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        records = [rec(run_at=NOW - 20 + i, created_at=NOW + i) for i in range(12)]
        await b.push(records)
        claimed = await b.claim(ClaimRequest("q", NOW, 7, LEASE, "w"))  # the seven oldest
        assert [r.id for r in claimed] == [r.id for r in records[:7]]
        await b.settle(
            [Settlement(r.id, 1, Outcome.FAILED, NOW, error="E") for r in claimed[:3]]
            + [Settlement(r.id, 1, Outcome.SUCCEEDED, NOW) for r in claimed[3:5]]
        )
        ids = [r.id for r in records]
        failed = await b.list("q", ["failed"], newest_first=False)
        assert [r.id for r in failed] == ids[:3]
        assert all(r.status == "failed" and r.error == "E" for r in failed)
        assert [r.id for r in await b.list("q", ["reserved"])] == [ids[6], ids[5]]
        assert [r.id for r in await b.list("q", ("pending",), limit=2)] == [ids[11], ids[10]]

        several = ["reserved", "failed", "pending"]  # merged by created_at across statuses
        expected = [i for i in ids[::-1] if i not in ids[3:5]]
        pages = [await b.list("q", several, limit=3, offset=o) for o in range(0, 12, 3)]
        assert [len(p) for p in pages] == [3, 3, 3, 1]
        assert [r.id for p in pages for r in p] == expected
        oldest = await b.list("q", several, limit=4, offset=2, newest_first=False)
        assert [r.id for r in oldest] == expected[::-1][2:6]
        assert await b.list("q", ["dead"]) == []
        assert await b.list("q", []) == []
        await assert_consistent(b, "q", ids)

    run(backend_factory, body)


def test_requeue_revives_finished_failures(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        crashed, cancelled, done, running, waiting = (rec(run_at=NOW - 5 + i) for i in range(5))
        await b.push([crashed, cancelled, done, running])
        await start(b, await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w")))
        assert await reap(b, "q", NOW + LEASE + 1, 1) == (0, 1)  # crashed: dead, crashes 1
        await b.claim(ClaimRequest("q", NOW, 3, LEASE, "w"))
        assert await b.cancel(cancelled.id, NOW) == "requested"
        await b.settle(
            [
                Settlement(cancelled.id, 1, Outcome.CANCELLED, NOW, error="E", reason="why"),
                Settlement(done.id, 1, Outcome.SUCCEEDED, NOW, result=b"42"),
            ]
        )
        await b.push([waiting])
        ids = [crashed.id, cancelled.id, done.id, running.id, waiting.id]
        await assert_consistent(b, "q", ids)

        asked = [crashed.id, done.id, running.id, waiting.id, "nope", cancelled.id, crashed.id]
        assert await b.requeue(asked, NOW + 100) == [crashed.id, cancelled.id]
        await assert_consistent(b, "q", ids)
        assert await b.counts("q") == {"pending": 3, "reserved": 1, "succeeded": 1}
        for r in await b.get([crashed.id, cancelled.id]):
            assert r.status == "pending"
            assert r.run_at == NOW + 100
            assert r.attempts == 1  # the fencing token never goes down
            assert (r.error, r.reason, r.result) == (None, None, None)
            assert (r.crashes, r.cancel_requested) == (0, False)
            assert (r.finished_at, r.lease_until, r.owner) == (None, None, None)
        (untouched,) = await b.get([done.id])
        assert (untouched.status, untouched.result) == ("succeeded", b"42")
        assert await b.requeue([crashed.id], NOW + 100) == []  # already waiting
        assert await b.requeue([], NOW) == []

        assert await purge_finished(b, NOW + 10**9) == 1  # their retention was cleared
        assert await b.next_due("q") == waiting.run_at
        again = await b.claim(ClaimRequest("q", NOW + 100, 10, LEASE, "w2"))
        assert [r.id for r in again] == [waiting.id, crashed.id, cancelled.id]
        assert [r.attempts for r in again] == [1, 2, 2]
        late = Settlement(crashed.id, 1, Outcome.SUCCEEDED, NOW + 100)
        assert await b.settle([late]) == [crashed.id]  # the old lease stays fenced off
        lost, cancel = await b.heartbeat([(crashed.id, 2), (cancelled.id, 2)], NOW + 100, LEASE)
        assert (lost, cancel) == ([], [])
        await assert_consistent(b, "q", ids)

    run(backend_factory, body)


def test_requeue_wakes_waiting_workers(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec()])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        await b.settle([Settlement(r.id, 1, Outcome.DEAD, NOW)])
        waiter = asyncio.create_task(b.wait("q", 5.0))
        await asyncio.sleep(0.01)
        assert await b.requeue([r.id], NOW) == [r.id]
        await asyncio.wait_for(waiter, 1.0)

    run(backend_factory, body)


def test_purge_by_status_and_everything_but_running(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        records = [rec(run_at=NOW - 10 + i) for i in range(6)]
        scheduled = rec(status="scheduled", run_at=NOW + 1000)
        other = rec(queue="other")
        await b.push([*records, scheduled, other])
        claimed = await b.claim(ClaimRequest("q", NOW, 4, LEASE, "w"))
        await b.settle(
            [
                Settlement(claimed[0].id, 1, Outcome.SUCCEEDED, NOW),
                Settlement(claimed[1].id, 1, Outcome.FAILED, NOW),
            ]
        )
        assert await b.cancel(records[5].id, NOW) == "cancelled"
        await start(b, claimed[2:3])  # one leased record running, one still reserved
        ids = [r.id for r in [*records, scheduled]]
        leased = {"running": 1, "reserved": 1}
        assert await b.counts("q") == {
            "succeeded": 1,
            "failed": 1,
            **leased,
            "pending": 1,
            "cancelled": 1,
            "scheduled": 1,
        }

        assert await b.purge("q", ["failed"]) == 1
        assert await b.get([records[1].id]) == []
        await assert_consistent(b, "q", ids)
        assert await b.purge("q", ["dead"]) == 0
        assert await b.purge("q", []) == 0
        assert await b.purge("nowhere") == 0

        assert await b.purge("q") == 4  # succeeded, pending, cancelled, scheduled
        assert await b.counts("q") == leased  # leased ones are kept
        await assert_consistent(b, "q", ids)
        assert [r.id for r in await b.list("q")] == [records[3].id, records[2].id]
        assert await b.next_due("q") is None
        assert await b.claim(ClaimRequest("q", NOW + 10**4, 10, LEASE, "w")) == []
        assert await purge_finished(b, NOW + 10**9) == 0  # nothing finished is left
        assert await b.queues() == ["other", "q"]
        assert await b.settle([Settlement(records[2].id, 1, Outcome.FAILED, NOW)]) == []

        assert await b.purge("q", ["reserved", "failed"]) == 2  # named: leased ones go too
        assert await b.counts("q") == {}
        await assert_consistent(b, "q", ids)
        assert await b.queues() == ["other"]
        assert await b.settle([Settlement(records[3].id, 1, Outcome.SUCCEEDED, NOW)]) == [
            records[3].id
        ]
        assert await b.heartbeat([(records[3].id, 1)], NOW, LEASE) == ([records[3].id], [])
        assert await reap(b, "q", NOW + 10**4, 3) == (0, 0)
        assert await b.counts("other") == {"pending": 1}

        await b.push([rec()])  # the queue comes back with its next record
        assert await b.queues() == ["other", "q"]
        assert await b.counts("q") == {"pending": 1}

    run(backend_factory, body)


def test_list_pages_agree_with_the_records(backend_factory: Callable[[], Backend]) -> None:
    """Any filter, direction and page, checked against an order computed from get()."""

    async def body(b: Backend) -> None:
        rng = random.Random(7)
        records = [
            rec(run_at=NOW - rng.random(), created_at=NOW + rng.randrange(8)) for _ in range(40)
        ]
        for start in range(0, 40, 9):
            await b.push(records[start : start + 9])
        claimed = await b.claim(ClaimRequest("q", NOW, 30, LEASE, "w"))
        outcomes = [Outcome.SUCCEEDED, Outcome.FAILED, Outcome.DEAD, Outcome.RETRY, None]
        await b.settle(
            [
                Settlement(r.id, 1, outcome, NOW, run_at=NOW + 5)
                for r in claimed
                if (outcome := rng.choice(outcomes)) is not None
            ]
        )
        position = {r.id: i for i, r in enumerate(records)}
        stored = await b.get(list(position))
        statuses = sorted({r.status for r in stored})
        assert len(statuses) >= 5
        filters: list[list[str] | None] = [None, *([s] for s in statuses)]
        filters += [rng.sample(statuses, k) for k in (2, 3, 4) for _ in range(2)]
        for wanted in filters:
            for newest in (True, False):
                expected = sorted(
                    (r for r in stored if wanted is None or r.status in wanted),
                    key=lambda r: (r.created_at, position[r.id]),
                    reverse=newest,
                )
                for limit, offset in [(5, 0), (5, 5), (7, 3), (100, 0), (3, len(expected) - 1)]:
                    page = await b.list(
                        "q", wanted, limit=limit, offset=max(0, offset), newest_first=newest
                    )
                    want = expected[max(0, offset) : max(0, offset) + limit]
                    assert [r.id for r in page] == [r.id for r in want], (wanted, newest)

    run(backend_factory, body)


# -- workers, throughput and attempt history (dashboards) -------------------------------------


def test_settlements_append_attempts_to_the_history(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec()])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        assert r.history is None
        first = '{"n":1,"error":"boom <b>"}'
        await b.settle([Settlement(r.id, 1, Outcome.RETRY, NOW, run_at=NOW, attempt=first)])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        assert r.history == first + "\n"
        await b.settle([Settlement(r.id, 2, Outcome.SUCCEEDED, NOW, attempt='{"n":2}')])
        (done,) = await b.get([r.id])
        assert done.history == first + '\n{"n":2}\n'
        assert await b.requeue([r.id], NOW) == []  # succeeded: not requeuable, history kept

    run(backend_factory, body)


def same_lines(history: str | None, lines: list[str | None]) -> bool:
    """Whether ``history`` holds these lines: JSON ones alike but for a start within a
    microsecond (Redis keeps a worker's start in whole microseconds, see
    ``redis/history.py``), any other (``inf`` is no JSON) as it is."""
    assert history is not None
    want = [line for line in lines if line is not None]
    got = history.splitlines()
    if len(got) != len(want):
        return False
    for text, wanted in zip(got, want, strict=True):
        if "inf" in wanted:
            if text != wanted:
                return False
            continue
        g, w = json.loads(text), json.loads(wanted)
        if abs(g.pop("start") - w.pop("start")) > 1e-6 or g != w:
            return False
    return True


def test_a_settlement_with_took_appends_the_line_attempt_line_gives(
    backend_factory: Callable[[], Backend],
) -> None:
    """A worker sends ``took`` (not a line) for an attempt that did not raise; every store
    keeps the line ``attempt_line`` writes from it (the start to the microsecond), retries
    and finished outcomes alike, and a duration no integer holds (``inf``) too."""

    async def body(b: Backend) -> None:
        await b.push([rec()])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        retry = Settlement(r.id, 1, Outcome.RETRY, NOW + 0.5, run_at=NOW, took=123456 / 1e9)
        await b.settle([retry])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        assert same_lines(r.history, [attempt_line(retry)])
        assert json.loads(r.history or "")["took"] == 0.000123456  # (a duration exactly)
        odd = Settlement(r.id, 2, Outcome.RETRY, NOW + 1, run_at=NOW, took=0.0001234567)
        await b.settle([odd])  # (not whole nanoseconds: kept exactly all the same)
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        await b.settle([Settlement(r.id, 3, Outcome.RETRY, NOW, run_at=NOW, took=float("inf"))])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        done = Settlement(r.id, 4, Outcome.SUCCEEDED, NOW + 2.1234567891, took=1e-09)
        await b.settle([done])
        (got,) = await b.get([r.id])
        infinite = '{"n":3,"start":-inf,"took":inf,"outcome":"retry"}'
        lines = (got.history or "").splitlines()
        assert (lines[1], lines[2]) == (attempt_line(odd), infinite)  # (as they were sent)
        assert same_lines(
            got.history, [attempt_line(s) for s in (retry, odd)] + [infinite, attempt_line(done)]
        )
        assert attempt_line(done) == f'{{"n":4,"start":{NOW + 2.1234567891 - 1e-09!r},' \
            '"took":1e-09,"outcome":"succeeded"}'  # fmt: skip

    run(backend_factory, body)


def test_settlement_without_attempt_keeps_the_history(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec()])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        await b.settle([Settlement(r.id, 1, Outcome.FAILED, NOW, error="x", attempt='{"n":1}')])
        assert await b.requeue([r.id], NOW) == [r.id]
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        await b.settle([Settlement(r.id, 2, Outcome.DEAD, NOW, error="y")])
        (dead,) = await b.get([r.id])
        assert dead.history == '{"n":1}\n'

    run(backend_factory, body)


def beat(worker_id: str, queue: str = "q", **kw: Any) -> WorkerBeat:
    return WorkerBeat(id=worker_id, queue=queue, host="h", pid=1, started_at=NOW, **kw)


def test_workers_are_listed_until_their_beat_expires(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        assert await b.workers(NOW) == []
        await write_beat(b, beat("w1", running=[["t1", "job <x>"]], held=1), NOW, 10.0)
        await write_beat(b, beat("w2", queue="other", concurrency=4), NOW + 5, 10.0)
        alive = await b.workers(NOW + 6)
        assert [w.id for w in alive] == ["w1", "w2"]
        assert alive[0].running == [["t1", "job <x>"]]
        assert alive[0].held == 1
        assert alive[1].queue == "other"
        assert alive[1].concurrency == 4
        assert [w.id for w in await b.workers(NOW + 11)] == ["w2"]  # w1's beat expired
        await write_beat(b, beat("w2", queue="other"), NOW + 12, 0.0)  # w2 left
        assert await b.workers(NOW + 12) == []

    run(backend_factory, body)


def test_beats_add_up_per_minute_outcome_counts(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        minute = int(NOW // 60) * 60
        await write_beat(b, beat("w1"), NOW, 10.0, {minute: {"succeeded": 3, "failed": 1}})
        await write_beat(
            b, beat("w2"), NOW, 10.0, {minute: {"succeeded": 2}, minute + 60: {"dead": 1}}
        )
        await write_beat(b, beat("w3", queue="other"), NOW, 10.0, {minute: {"succeeded": 7}})
        assert await b.stats("q", NOW - 600) == {
            minute: {"succeeded": 5, "failed": 1},
            minute + 60: {"dead": 1},
        }
        assert await b.stats("q", minute + 60) == {minute + 60: {"dead": 1}}
        assert await b.stats("other", NOW - 600) == {minute: {"succeeded": 7}}
        assert await b.stats("none", NOW - 600) == {}
        later = NOW + (STATS_MINUTES + 2) * 60  # old minutes are dropped
        await write_beat(b, beat("w1"), later, 10.0, {int(later // 60) * 60: {"succeeded": 1}})
        assert await b.stats("q", 0) == {int(later // 60) * 60: {"succeeded": 1}}

    run(backend_factory, body)


def test_every_store_offers_the_admin_interface(backend_factory: Callable[[], Backend]) -> None:
    """The command line and the dashboard need only ``StoreAdmin`` (mypy checks that they
    use nothing more); every store is one."""
    from dowork.backends import StoreAdmin

    store = backend_factory()
    assert isinstance(store, StoreAdmin)
    assert isinstance(store, Backend)


def test_every_store_offers_the_narrow_worker_seam(backend_factory: Callable[[], Backend]) -> None:
    """A worker needs only ``Store`` (nine methods, each claim one ``ClaimRequest``), and
    every store is one; ``StoreAdmin`` stays apart, for the operators' tools."""
    from dowork.backends import Store, StoreAdmin

    worker_side = {n for n, _ in inspect.getmembers(Store, inspect.iscoroutinefunction)}
    admin_side = {n for n, _ in inspect.getmembers(StoreAdmin, inspect.iscoroutinefunction)}
    assert worker_side == {
        "push", "claim", "settle", "heartbeat", "release", "progress", "upkeep", "next_due",
        "wait",
    }  # fmt: skip
    assert not worker_side & admin_side
    claim = inspect.signature(Store.claim).parameters
    assert [p.annotation for p in claim.values()][1:] == ["ClaimRequest"]
    assert isinstance(backend_factory(), Store)


def test_readable_records_are_never_reported_buried(backend_factory: Callable[[], Backend]) -> None:
    """Claims, settlements and the reaper take the caller's ``Burials`` list and add only the
    records they dead-letter unread (the poison suites write those): here, none."""
    from dowork.backends.store import Burials, Upkeep

    async def body(b: Backend) -> None:
        buried: Burials = []
        await b.push([rec(), rec(), rec()])
        claimed = await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w", buried=buried))
        assert len(claimed) == 3
        await start(b, claimed[:1])
        outcome = [Settlement(claimed[0].id, 1, Outcome.SUCCEEDED, NOW, result=b"1")]
        assert await b.settle(outcome, buried=buried) == []
        done = await b.upkeep(Upkeep("q", NOW + LEASE + 1, crash_budget=3, buried=buried))
        assert (done.requeued, done.dead) == (2, 0)
        assert buried == []

    run(backend_factory, body)


#: The extras each store offers beyond ``Store`` (``StoreExtras``).
_EXTRAS = {
    "memory": {"wake"},
    "sqlite": {"wake", "check_store", "push_sync", "pushes_anywhere"},
    "redis": {"wake", "wait_claim", "server_time", "push_sync", "pushes_anywhere"}
    | {"check_worker", "permit_eviction", "resets_seen"},
}


def test_store_extras_are_typed_and_found_once(
    backend_factory: Callable[[], Backend], request: pytest.FixtureRequest
) -> None:
    """What a store may offer beyond ``Store`` is one small protocol per method, which the
    store's class names among its bases (so that mypy checks the method's signature), and
    ``StoreExtras.of`` gives the store's bound methods, None for those it lacks."""
    from dowork.backends import Store, StoreAdmin
    from dowork.backends.extras import (
        StoreExtras,
        SupportsCheckStore,
        SupportsCheckWorker,
        SupportsPermitEviction,
        SupportsPushAnywhere,
        SupportsPushSync,
        SupportsResets,
        SupportsServerTime,
        SupportsWaitClaim,
        SupportsWake,
    )

    protocols: dict[str, type] = {
        "wake": SupportsWake, "wait_claim": SupportsWaitClaim, "server_time": SupportsServerTime,
        "check_store": SupportsCheckStore, "push_sync": SupportsPushSync,
        "pushes_anywhere": SupportsPushAnywhere, "check_worker": SupportsCheckWorker,
        "permit_eviction": SupportsPermitEviction, "resets_seen": SupportsResets,
    }  # fmt: skip
    assert {f.name for f in dataclasses.fields(StoreExtras)} == set(protocols)
    for name, protocol in protocols.items():
        own = {n for n, _ in inspect.getmembers(protocol, inspect.isfunction)}
        assert own - {n for n, _ in inspect.getmembers(object)} == {name}
        assert not hasattr(Store, name)
        assert not hasattr(StoreAdmin, name)
    store = backend_factory()
    offered = _EXTRAS[request.node.callspec.params["backend_factory"].split("-")[0]]
    extras = StoreExtras.of(store)
    for name, protocol in protocols.items():
        found = getattr(extras, name)
        if name in offered:
            assert found == getattr(store, name)
            assert protocol in type(store).__mro__  # named as a base: mypy checks it
        else:
            assert found is None
            assert not isinstance(store, protocol)


def test_nothing_above_the_stores_looks_for_an_extra_by_name() -> None:
    """No ``getattr``, ``hasattr`` or ``setattr`` on a store or a task source above the stores
    (the engine, the durable source, the queue, the metrics, the CLI, the dashboard): an extra
    is a field of ``StoreExtras``, typed, found when the durable source is built or when
    needed, and what the queue asks a source is in ``TaskSource`` (``lost``, say)."""
    src = Path(__file__).resolve().parents[2] / "src" / "dowork"
    paths = sorted(p for p in src.rglob("*.py") if "backends" not in p.relative_to(src).parts)
    assert src / "metrics.py" in paths
    assert src / "cli" / "work.py" in paths
    for path in paths:
        found = re.search(r"(get|has|set)attr\(\s*[\w.]*(backend|store|source)\b", path.read_text())
        assert not found, f"{path}: {found and found.group()}"
