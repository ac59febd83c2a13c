"""The backend contract for flow control at claim time: priorities and distributed rate limits.

Every backend must pass these unchanged (see ``Store.claim``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypedDict, Unpack

from dowork.backends import Backend, ClaimRequest, Outcome, Settlement

from .test_contract import LEASE, NOW, rec, run


class ClaimOptions(TypedDict, total=False):
    """The keyword options of ``Store.claim`` the tests below vary."""

    aging: float
    rates: Mapping[str, tuple[int, float]] | None
    per_key: int | None


async def _claim_names(b: Backend, now: float, limit: int, **kw: Unpack[ClaimOptions]) -> list[str]:
    got = await b.claim(ClaimRequest("q", now, limit, LEASE, "w", **kw))
    return [r.name for r in got]


def test_higher_priority_is_claimed_first_and_equal_ones_stay_fifo(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        order = [("low1", -1), ("mid1", 0), ("high1", 5), ("mid2", 0), ("high2", 5), ("low2", -1)]
        for name, priority in order:  # pushed one by one: push order is the tie-break
            await b.push([rec(name=name, priority=priority)])
        assert await _claim_names(b, NOW, 3) == ["high1", "high2", "mid1"]
        assert await _claim_names(b, NOW, 10) == ["mid2", "low1", "low2"]

    run(backend_factory, body)


def test_priority_of_a_batch_push_and_of_get(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        records = [rec(name=f"t{i}", priority=p) for i, p in enumerate([0, 9, -9, 3])]
        await b.push(records)
        got = {r.id: r.priority for r in await b.get([r.id for r in records])}
        assert got == {r.id: r.priority for r in records}
        assert await _claim_names(b, NOW, 10) == ["t1", "t3", "t0", "t2"]

    run(backend_factory, body)


def test_a_waiting_low_priority_ages_past_newer_high_ones(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        # Two levels apart with aging 60 s: the low one goes first once it has been due for
        # more than 120 s longer than the high one.
        await b.push([rec(name="old-low", run_at=NOW - 130, priority=-1)])
        await b.push([rec(name="new-high", run_at=NOW, priority=1)])
        await b.push([rec(name="recent-low", run_at=NOW - 110, priority=-1)])
        assert await _claim_names(b, NOW, 10, aging=60.0) == ["old-low", "new-high", "recent-low"]

    run(backend_factory, body)


def test_aging_is_a_claim_argument(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(name="old-low", run_at=NOW - 30, priority=0)])
        await b.push([rec(name="new-high", run_at=NOW, priority=1)])
        assert await _claim_names(b, NOW, 1, aging=10.0) == ["old-low"]
        await b.push([rec(name="older-low", run_at=NOW - 30, priority=0)])
        assert await _claim_names(b, NOW, 1, aging=3600.0) == ["new-high"]

    run(backend_factory, body)


def test_priorities_skip_records_not_yet_due(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(name="later-high", run_at=NOW + 5, priority=9, status="scheduled")])
        await b.push([rec(name="now-low", priority=-9)])
        assert await _claim_names(b, NOW, 10) == ["now-low"]
        assert await b.next_due("q") == NOW + 5
        assert await _claim_names(b, NOW + 5, 10) == ["later-high"]

    run(backend_factory, body)


def test_a_retried_record_keeps_its_priority(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(name="high", priority=2)])
        (claimed,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        await b.settle(
            [Settlement(claimed.id, claimed.attempts, Outcome.RETRY, NOW, run_at=NOW + 1)]
        )
        await b.push([rec(name="plain", run_at=NOW)])
        assert await _claim_names(b, NOW + 1, 10) == ["high", "plain"]

    run(backend_factory, body)


def test_a_rate_limit_delays_starts_over_it_to_reserved_slots(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        limited = [rec(name="api", id=f"api{i}") for i in range(5)]
        await b.push(limited)
        await b.push([rec(name="free", id=f"free{i}") for i in range(2)])
        rates = {"api": (2, 10.0)}
        got = await b.claim(ClaimRequest("q", NOW, 20, LEASE, "w", rates=rates))
        assert sorted(r.id for r in got) == ["api0", "api1", "free0", "free1"]
        assert all(r.slot is None for r in got)
        delayed = {r.id: r for r in await b.get(["api2", "api3", "api4"])}
        # At most 2 starts in any 10 s: slots NOW+10, NOW+10, NOW+20, in push order.
        assert [delayed[i].slot for i in ("api2", "api3", "api4")] == [NOW + 10, NOW + 10, NOW + 20]
        assert [delayed[i].run_at for i in ("api2", "api3", "api4")] == [
            NOW + 10,
            NOW + 10,
            NOW + 20,
        ]
        assert {r.status for r in delayed.values()} == {"pending"}
        assert await b.next_due("q") == NOW + 10
        assert await b.claim(ClaimRequest("q", NOW + 9, 20, LEASE, "w", rates=rates)) == []
        second = await b.claim(ClaimRequest("q", NOW + 10, 20, LEASE, "w", rates=rates))
        assert [r.id for r in second] == ["api2", "api3"]
        assert all(r.slot is None for r in second)
        # A newcomer after the reservations takes the next free slot, after api4's.
        await b.push([rec(name="api", id="api5")])
        assert await b.claim(ClaimRequest("q", NOW + 10, 20, LEASE, "w", rates=rates)) == []
        (late,) = await b.get(["api5"])
        assert late.slot == NOW + 20
        third = await b.claim(ClaimRequest("q", NOW + 20, 20, LEASE, "w", rates=rates))
        assert [r.id for r in third] == ["api4", "api5"]

    run(backend_factory, body)


def test_the_queue_rate_limit_is_shared_by_names_without_their_own(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(name="a", id="a0"), rec(name="b", id="b0"), rec(name="a", id="a1")])
        await b.push([rec(name="own", id=f"own{i}") for i in range(2)])
        rates = {"": (1, 5.0), "own": (2, 5.0)}
        got = await b.claim(ClaimRequest("q", NOW, 20, LEASE, "w", rates=rates))
        assert sorted(r.id for r in got) == ["a0", "own0", "own1"]
        slots = {r.id: r.slot for r in await b.get(["b0", "a1"])}
        assert slots == {"b0": NOW + 5, "a1": NOW + 10}
        assert [
            r.id for r in await b.claim(ClaimRequest("q", NOW + 5, 20, LEASE, "w", rates=rates))
        ] == ["b0"]

    run(backend_factory, body)


def test_rate_limits_apply_again_to_a_retry(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        rates = {"api": (1, 10.0)}
        await b.push([rec(name="api", id="x")])
        (claimed,) = await b.claim(ClaimRequest("q", NOW, 5, LEASE, "w", rates=rates))
        await b.settle([Settlement("x", claimed.attempts, Outcome.RETRY, NOW + 1, run_at=NOW + 1)])
        assert await b.claim(ClaimRequest("q", NOW + 1, 5, LEASE, "w", rates=rates)) == []
        (again,) = await b.get(["x"])
        assert again.slot == NOW + 10
        assert again.status == "retrying"
        assert [
            r.id for r in await b.claim(ClaimRequest("q", NOW + 10, 5, LEASE, "w", rates=rates))
        ] == ["x"]

    run(backend_factory, body)


def test_a_claim_looks_at_twice_its_limit_and_then_more_claims_get_the_rest(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        rates = {"api": (1, 60.0)}
        await b.push([rec(name="api", id=f"api{i}") for i in range(6)])
        await b.push([rec(name="free", id="free")])
        first = await b.claim(ClaimRequest("q", NOW, 2, LEASE, "w", rates=rates))
        assert [r.id for r in first] == ["api0"]  # api1..api3 delayed: four looked at
        claims = [first]
        for _ in range(5):
            claims.append(await b.claim(ClaimRequest("q", NOW, 2, LEASE, "w", rates=rates)))
        claimed = [r.id for batch in claims for r in batch]
        assert claimed == ["api0", "free"]
        slots = [r.slot for r in await b.get([f"api{i}" for i in range(1, 6)])]
        assert slots == [NOW + 60 * i for i in range(1, 6)]

    run(backend_factory, body)


def test_rate_limited_claims_respect_max_running_and_priorities(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(name="api", id="slow", priority=0)])
        await b.push([rec(name="api", id="urgent", priority=5)])
        await b.push([rec(name="free", id="free", priority=1)])
        rates = {"api": (1, 10.0)}
        got = await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w", max_running=2, rates=rates))
        assert [r.id for r in got] == ["urgent", "free"]
        # "slow" was never looked at (the cap of 2 was reached first): no slot for it.
        (slow,) = await b.get(["slow"])
        assert slow.slot is None
        assert slow.run_at == NOW

    run(backend_factory, body)


# -- fair turns between concurrency keys, and at most per_key running of one key --


async def _claim_ids(b: Backend, now: float, limit: int, **kw: Unpack[ClaimOptions]) -> list[str]:
    got = await b.claim(ClaimRequest("q", now, limit, LEASE, "w", **kw))
    return [r.id for r in got]


def test_keys_take_turns_whatever_their_backlog(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(id=f"a{i}", concurrency_key="A") for i in range(6)])
        await b.push([rec(id=f"b{i}", concurrency_key="B") for i in range(2)])
        await b.push([rec(id="c0", concurrency_key="C")])
        assert await _claim_ids(b, NOW, 6) == ["a0", "b0", "c0", "a1", "b1", "a2"]
        got = {r.id: r.concurrency_key for r in await b.get(["a0", "c0"])}
        assert got == {"a0": "A", "c0": "C"}

    run(backend_factory, body)


def test_turns_carry_over_from_one_claim_to_the_next(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(id=f"a{i}", concurrency_key="A") for i in range(100)])
        await b.push([rec(id=f"b{i}", concurrency_key="B") for i in range(3)])
        claimed = []
        for _ in range(6):
            claimed += await _claim_ids(b, NOW, 1)
        assert claimed == ["a0", "b0", "a1", "b1", "a2", "b2"]
        assert await _claim_ids(b, NOW, 2) == ["a3", "a4"]  # B has nothing left
        # B comes back: never served since it was forgotten, so it goes first.
        await b.push([rec(id="b3", concurrency_key="B")])
        assert await _claim_ids(b, NOW, 2) == ["b3", "a5"]

    run(backend_factory, body)


def test_records_without_a_key_take_turns_as_one_key(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(id=f"u{i}") for i in range(3)])
        await b.push([rec(id=f"a{i}", concurrency_key="A") for i in range(3)])
        assert await _claim_ids(b, NOW, 4) == ["u0", "a0", "u1", "a1"]

    run(backend_factory, body)


def test_per_key_caps_running_records_of_a_key_across_workers(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(id=f"a{i}", concurrency_key="A") for i in range(5)])
        await b.push([rec(id="b0", concurrency_key="B"), rec(id="u0")])
        first = await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w1", per_key=2))
        assert [r.id for r in first] == ["a0", "b0", "u0", "a1"]
        other = await b.claim(ClaimRequest("q", NOW, 10, LEASE, "w2", per_key=2))
        assert other == []  # A has 2 running (on w1): its turn waits
        a0 = first[0]
        await b.settle([Settlement("a0", a0.attempts, Outcome.SUCCEEDED, NOW)])
        assert await _claim_ids(b, NOW, 10, per_key=2) == ["a2"]
        assert await _claim_ids(b, NOW, 10, per_key=3) == ["a3"]
        # Without per_key, turns alone: the rest of A goes.
        assert await _claim_ids(b, NOW, 10) == ["a4"]

    run(backend_factory, body)


def test_priority_orders_records_within_a_key(backend_factory: Callable[[], Backend]) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(id="a-low", concurrency_key="A")])
        await b.push([rec(id="b0", concurrency_key="B")])
        await b.push([rec(id="a-high", concurrency_key="A", priority=5)])
        assert await _claim_ids(b, NOW, 3) == ["a-high", "b0", "a-low"]

    run(backend_factory, body)


def test_a_big_backlog_does_not_hold_back_a_small_key(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(id=f"big{i}", concurrency_key="big") for i in range(2000)])
        await b.push([rec(id=f"small{i}", concurrency_key="small") for i in range(10)])
        claimed: list[str] = []
        while len(claimed) < 20:
            claimed += await _claim_ids(b, NOW, 4)
        assert sorted(i for i in claimed if i.startswith("small")) == sorted(
            f"small{i}" for i in range(10)
        )

    run(backend_factory, body)


def test_a_rate_limited_record_does_not_use_up_its_keys_turn(
    backend_factory: Callable[[], Backend],
) -> None:
    async def body(b: Backend) -> None:
        await b.push([rec(id="a0", name="api", concurrency_key="A")])
        await b.push([rec(id="b0", name="api", concurrency_key="B")])
        await b.push([rec(id="a1", name="free", concurrency_key="A")])
        rates = {"api": (1, 60.0)}
        assert await _claim_ids(b, NOW, 2, rates=rates) == ["a0", "a1"]
        (b0,) = await b.get(["b0"])
        assert b0.slot == NOW + 60

    run(backend_factory, body)
