"""Crash accounting in the backend contract (issue 14 item 2), on every backend.

A claim leaves a record ``reserved``; a ``STARTED`` mark (or an outcome of a run) makes it
``running``. Only a lapsed ``running`` lease is a crash; a lapsed ``reserved`` one is ``lost``.
A settlement arriving after its lease lapsed shows its worker was alive: the crash charged for
it is taken back, and if nobody was given the task since, its outcome stands.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from dowork.backends import Backend, ClaimRequest, Outcome, Settlement
from tests.backends.test_contract import LEASE, NOW, rec, run, start
from tests.upkeep import reap


def test_a_lapsed_reserved_lease_is_lost_not_a_crash(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        r = rec()
        await b.push([r])
        now = NOW
        for n in range(1, 6):  # well past a crash budget of 2
            (claimed,) = await b.claim(ClaimRequest("q", now, 1, LEASE, f"w{n}"))
            assert claimed.status == "reserved"
            now += LEASE + 1
            assert await reap(b, "q", now, 2) == (1, 0)
            (stored,) = await b.get([r.id])
            assert (stored.status, stored.crashes, stored.lost) == ("pending", 0, n)
            assert stored.started == 0
            assert stored.run_at == r.run_at  # back to its place in line
        (claimed,) = await b.claim(ClaimRequest("q", now, 1, LEASE, "w"))
        assert (claimed.attempts, claimed.lost, claimed.crashes) == (6, 5, 0)
        assert await b.settle([Settlement(r.id, 6, Outcome.SUCCEEDED, now)]) == []
        (done,) = await b.get([r.id])
        assert (done.status, done.started, done.crashes, done.lost) == ("succeeded", 1, 0, 5)

    run(backend_factory, body)


def test_a_lapsed_running_lease_is_a_crash_charged_to_its_token(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        r = rec()
        await b.push([r])
        (claimed,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        await start(b, [claimed])
        assert await reap(b, "q", NOW + LEASE + 1, 3) == (1, 0)
        (stored,) = await b.get([r.id])
        assert (stored.status, stored.crashes, stored.lost, stored.started) == (
            "retrying", 1, 0, 1,
        )  # fmt: skip
        assert stored.charged == "1"

    run(backend_factory, body)


def test_a_late_outcome_takes_back_the_crash_and_stands_if_nobody_took_the_task(
    backend_factory: Callable[[], Backend],
) -> None:
    """A worker cut off past its lease (no death) finishes: not a crash, and it is not rerun."""

    async def body(b: Backend) -> None:
        r = rec()
        await b.push([r])
        (claimed,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        await start(b, [claimed])
        assert await reap(b, "q", NOW + LEASE + 1, 3) == (1, 0)
        late = Settlement(r.id, 1, Outcome.SUCCEEDED, NOW + LEASE + 2, result=b"7")
        assert await b.settle([late]) == []
        (stored,) = await b.get([r.id])
        assert (stored.status, stored.result) == ("succeeded", b"7")
        assert (stored.crashes, stored.lost, stored.charged) == (0, 1, None)
        # Not run again:
        assert await b.claim(ClaimRequest("q", NOW + 10 * LEASE, 5, LEASE, "w2")) == []

    run(backend_factory, body)


def test_a_late_outcome_revives_a_task_dead_lettered_for_crashes_it_did_not_cause(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        r = rec()
        await b.push([r])
        (claimed,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        await start(b, [claimed])
        assert await reap(b, "q", NOW + LEASE + 1, 1) == (0, 1)  # budget 1: dead at once
        (dead,) = await b.get([r.id])
        assert (dead.status, dead.reason) == ("dead", "crashed_worker")
        late = Settlement(r.id, 1, Outcome.SUCCEEDED, NOW + LEASE + 2, result=b"ok")
        assert await b.settle([late]) == []
        (stored,) = await b.get([r.id])
        assert (stored.status, stored.result, stored.reason) == ("succeeded", b"ok", None)
        assert (stored.crashes, stored.lost) == (0, 1)
        assert await b.counts("q") == {"succeeded": 1}

    run(backend_factory, body)


def test_a_late_outcome_after_another_claim_is_refused_but_uncharged(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        r = rec()
        await b.push([r])
        (first,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w1"))
        await start(b, [first])
        now = NOW + LEASE + 1
        assert await reap(b, "q", now, 3) == (1, 0)
        (second,) = await b.claim(ClaimRequest("q", now, 1, LEASE, "w2"))
        assert second.attempts == 2
        late = Settlement(r.id, 1, Outcome.FAILED, now, error="late")
        assert await b.settle([late]) == [r.id]  # the newer lease wins
        (stored,) = await b.get([r.id])
        assert (stored.status, stored.crashes, stored.lost) == ("reserved", 0, 1)
        assert await b.settle([late]) == [r.id]  # taken back once only
        (again,) = await b.get([r.id])
        assert (again.crashes, again.lost) == (0, 1)
        assert await b.settle([Settlement(r.id, 2, Outcome.SUCCEEDED, now)]) == []

    run(backend_factory, body)


def test_leased_records_heartbeat_cancel_and_purge_alike(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        one, two = rec(), rec()
        await b.push([one, two])
        claimed = await b.claim(ClaimRequest("q", NOW, 2, LEASE, "w"))
        await start(b, claimed[1:])
        lost, cancel = await b.heartbeat([(one.id, 1), (two.id, 1)], NOW + 20, LEASE)
        assert (lost, cancel) == ([], [])
        assert await reap(b, "q", NOW + LEASE + 1, 3) == (0, 0)  # both renewed to NOW + 50
        assert await b.cancel(one.id, NOW + 21) == "requested"  # reserved: its worker is told
        assert await b.heartbeat([(one.id, 1)], NOW + 22, LEASE) == ([], [one.id])
        assert await b.purge("q") == 0  # leased records are kept
        mark = Settlement(one.id, 2, Outcome.STARTED, NOW + 23)
        assert await b.settle([mark]) == [one.id]  # a stale token's mark is refused
        (stored,) = await b.get([one.id])
        assert (stored.status, stored.started) == ("reserved", 0)

    run(backend_factory, body)


def test_an_outcome_of_a_task_that_never_ran_counts_no_start(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        r = rec()
        await b.push([r])
        await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        unrun = Settlement(r.id, 1, Outcome.DEAD, NOW, error="E", reason="malformed", ran=False)
        assert await b.settle([unrun]) == []
        (stored,) = await b.get([r.id])
        assert (stored.status, stored.started) == ("dead", 0)

    run(backend_factory, body)


def test_one_batch_settles_each_record_as_if_alone(
    backend_factory: Callable[[], Backend],
) -> None:
    """A batch mixing fresh, stale, late outcomes and a record's two: each as alone.

    Stores may write a run of finished outcomes in one statement (SQLite does); this is the
    same as writing them one by one, in order.
    """

    async def body(b: Backend) -> None:
        fresh, stale, late, twice, kept = rec(), rec(), rec(), rec(), rec()
        await b.push([late])
        (first,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w1"))
        await start(b, [first])
        now = NOW + LEASE + 1
        assert await reap(b, "q", now, 3) == (1, 0)  # late's lease lapsed: a crash, pending
        await b.push([fresh, stale, twice, kept])
        claimed = await b.claim(ClaimRequest("q", now, 5, LEASE, "w2"))
        tokens = {r.id: r.attempts for r in claimed}
        assert tokens[late.id] == 2
        batch = [
            Settlement(fresh.id, 1, Outcome.SUCCEEDED, now, result=b"1", attempt="{}"),
            Settlement(stale.id, 9, Outcome.SUCCEEDED, now),  # not its lease: refused
            Settlement(late.id, 1, Outcome.FAILED, now, error="late"),  # taken back, refused
            Settlement(twice.id, 1, Outcome.STARTED, now),
            Settlement(twice.id, 1, Outcome.FAILED, now, error="E", reason="boom"),
            Settlement(kept.id, 1, Outcome.CANCELLED, now, keep=60.0),
        ]
        assert await b.settle(batch) == [stale.id, late.id]
        got = {r.id: r for r in await b.get([fresh.id, stale.id, late.id, twice.id, kept.id])}
        assert (got[fresh.id].status, got[fresh.id].result) == ("succeeded", b"1")
        assert (got[fresh.id].history, got[fresh.id].started) == ("{}\n", 1)
        assert got[stale.id].status == "reserved"
        assert (got[late.id].status, got[late.id].crashes, got[late.id].lost) == ("reserved", 0, 1)
        assert (got[twice.id].status, got[twice.id].reason, got[twice.id].started) == (
            "failed", "boom", 1,
        )  # fmt: skip
        assert (got[kept.id].status, got[kept.id].finished_at) == ("cancelled", now)

    run(backend_factory, body)


def test_a_batch_finishing_a_record_twice_refuses_the_second(
    backend_factory: Callable[[], Backend],
) -> None:
    """A record's second outcome in one batch finds its lease over, as in a batch of its own.

    Whatever the first was: finished, a retry, or finished and forgotten (kept 0 s); and a
    ``STARTED`` mark after an outcome too. The first stands, and the counts move once.
    """

    async def body(b: Backend) -> None:
        done, retried, forgotten, marked = rec(), rec(), rec(), rec()
        await b.push([done, retried, forgotten, marked])
        assert len(await b.claim(ClaimRequest("q", NOW, 4, LEASE, "w"))) == 4
        batch = [
            Settlement(done.id, 1, Outcome.SUCCEEDED, NOW, result=b"1"),
            Settlement(retried.id, 1, Outcome.RETRY, NOW, run_at=NOW + 60, error="E"),
            Settlement(forgotten.id, 1, Outcome.SUCCEEDED, NOW, keep=0.0),
            Settlement(marked.id, 1, Outcome.FAILED, NOW, error="E", reason="boom"),
            Settlement(done.id, 1, Outcome.FAILED, NOW, error="again", reason="twice"),
            Settlement(retried.id, 1, Outcome.SUCCEEDED, NOW, result=b"2"),
            Settlement(forgotten.id, 1, Outcome.CANCELLED, NOW, keep=60.0),
            Settlement(marked.id, 1, Outcome.STARTED, NOW),
        ]
        refused = await b.settle(batch)
        assert sorted(refused) == sorted([done.id, retried.id, forgotten.id, marked.id])
        got = {r.id: r for r in await b.get([done.id, retried.id, forgotten.id, marked.id])}
        assert (got[done.id].status, got[done.id].result, got[done.id].error) == (
            "succeeded", b"1", None,
        )  # fmt: skip
        assert (got[retried.id].status, got[retried.id].run_at) == ("retrying", NOW + 60)
        assert forgotten.id not in got
        assert (got[marked.id].status, got[marked.id].reason) == ("failed", "boom")
        assert {r.id: r.started for r in got.values()} == {done.id: 1, retried.id: 1, marked.id: 1}
        assert await b.counts("q") == {"succeeded": 1, "retrying": 1, "failed": 1}

    run(backend_factory, body)


def test_one_batch_forgets_each_record_as_if_alone(
    backend_factory: Callable[[], Backend],
) -> None:
    """A batch of outcomes kept 0 s (fresh, stale, late), then one kept: each as alone.

    Stores may delete a run of forgotten records in one statement (SQLite does); each is
    deleted only under its lease, as if settled alone.
    """

    async def body(b: Backend) -> None:
        one, two, stale, late, kept = rec(), rec(), rec(), rec(), rec()
        await b.push([late])
        (first,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w1"))
        await start(b, [first])
        now = NOW + LEASE + 1
        assert await reap(b, "q", now, 3) == (1, 0)  # late's lease lapsed: a crash, pending
        await b.push([one, two, stale, kept])
        assert len(await b.claim(ClaimRequest("q", now, 5, LEASE, "w2"))) == 5
        batch = [
            Settlement(one.id, 1, Outcome.SUCCEEDED, now, keep=0.0),
            Settlement(stale.id, 9, Outcome.SUCCEEDED, now, keep=0.0),  # not its lease
            Settlement(two.id, 1, Outcome.FAILED, now, error="E", keep=0.0),
            Settlement(late.id, 1, Outcome.SUCCEEDED, now, keep=0.0),  # taken back, refused
            Settlement(kept.id, 1, Outcome.SUCCEEDED, now, keep=60.0),
        ]
        assert await b.settle(batch) == [stale.id, late.id]
        got = {r.id: r for r in await b.get([one.id, two.id, stale.id, late.id, kept.id])}
        assert sorted(got) == sorted([stale.id, late.id, kept.id])
        assert got[stale.id].status == "reserved"
        assert (got[late.id].status, got[late.id].crashes, got[late.id].lost) == ("reserved", 0, 1)
        assert got[kept.id].status == "succeeded"
        assert await b.counts("q") == {"reserved": 2, "succeeded": 1}

    run(backend_factory, body)


def test_a_run_of_outcomes_stores_their_values_as_given(
    backend_factory: Callable[[], Backend],
) -> None:
    """Empty and zero-like values stay what they are, None stays None, history grows.

    SQLite binds None and bytes in a run of finished outcomes as stand-ins (0, a bytearray)
    that its statement turns back: none of them may come back changed.
    """

    async def body(b: Backend) -> None:
        again, empty, zero, bare = rec(), rec(), rec(), rec()
        await b.push([again, empty, zero, bare])
        assert len(await b.claim(ClaimRequest("q", NOW, 4, LEASE, "w"))) == 4
        retry = Settlement(again.id, 1, Outcome.RETRY, NOW, run_at=NOW, attempt='{"n":1}')
        assert await b.settle([retry]) == []
        assert len(await b.claim(ClaimRequest("q", NOW + 1, 4, LEASE, "w"))) == 1
        batch = [
            Settlement(again.id, 2, Outcome.SUCCEEDED, NOW, result=b"2", attempt='{"n":2}'),
            Settlement(empty.id, 1, Outcome.SUCCEEDED, NOW, result=b"", error="", reason=""),
            Settlement(zero.id, 1, Outcome.FAILED, NOW, result=b"0", error="0", reason="0"),
            Settlement(bare.id, 1, Outcome.CANCELLED, NOW, attempt="0"),
        ]
        assert await b.settle(batch) == []
        got = {r.id: r for r in await b.get([again.id, empty.id, zero.id, bare.id])}
        fields = {i: (r.result, r.error, r.reason, r.history) for i, r in got.items()}
        assert fields == {
            again.id: (b"2", None, None, '{"n":1}\n{"n":2}\n'),
            empty.id: (b"", "", "", None),
            zero.id: (b"0", "0", "0", None),
            bare.id: (None, None, None, "0\n"),
        }

    run(backend_factory, body)


def test_a_claimed_record_is_the_stored_one(backend_factory: Callable[[], Backend]) -> None:
    """Every field of a claimed record is what a lookup reads right after the claim.

    Its second claim, after a retry: error, progress, history, started and a new payload
    are set.
    (SQLite builds the claimed record from the claim's row by position.)
    """

    async def body(b: Backend) -> None:
        r = rec(options='{"timeout":5}', priority=3, concurrency_key="k")
        await b.push([r])
        (first,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w1", per_key=1))
        await start(b, [first])
        await b.progress([(r.id, 1, '[0.5, "half", 1]')])
        retry = Settlement(
            r.id, 1, Outcome.RETRY, NOW, run_at=NOW + 1, error="E", payload=b"[2]", attempt="{}"
        )
        assert await b.settle([retry]) == []
        (claimed,) = await b.claim(ClaimRequest("q", NOW + 2, 1, LEASE, "w2", per_key=1))
        (stored,) = await b.get([r.id])
        assert (claimed.error, claimed.history, claimed.payload) == ("E", "{}\n", b"[2]")
        assert (claimed.attempts, claimed.started, claimed.owner) == (2, 1, "w2")
        assert claimed.progress is not None
        assert dataclasses.replace(claimed, charged=stored.charged) == stored

    run(backend_factory, body)


def test_a_refusal_in_a_run_keeps_what_the_batch_wrote_before_it(
    backend_factory: Callable[[], Backend],
) -> None:
    """Outcomes of a batch, a mark, then a run holding a stale outcome: only that is refused.

    (SQLite undoes a run that did not write every record, to a savepoint, and writes each
    alone: what the batch wrote before the run stays.)
    """

    async def body(b: Backend) -> None:
        one, two, marked, fresh, stale = rec(), rec(), rec(), rec(), rec()
        await b.push([one, two, marked, fresh, stale])
        assert len(await b.claim(ClaimRequest("q", NOW, 5, LEASE, "w"))) == 5
        batch = [
            Settlement(one.id, 1, Outcome.SUCCEEDED, NOW, result=b"1"),
            Settlement(two.id, 1, Outcome.SUCCEEDED, NOW, result=b"2"),
            Settlement(marked.id, 1, Outcome.STARTED, NOW),
            Settlement(fresh.id, 1, Outcome.FAILED, NOW, error="E"),
            Settlement(stale.id, 7, Outcome.SUCCEEDED, NOW),
        ]
        assert await b.settle(batch) == [stale.id]
        got = {r.id: r.status for r in await b.get([one.id, two.id, marked.id, fresh.id])}
        assert got == {one.id: "succeeded", two.id: "succeeded", marked.id: "running",
                       fresh.id: "failed"}  # fmt: skip
        assert await b.counts("q") == {"succeeded": 2, "running": 1, "failed": 1, "reserved": 1}

    run(backend_factory, body)
