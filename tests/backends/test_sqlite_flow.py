"""Flow control on SQLite: what the contract cannot see (indexes, shared state, cost).

The contract (``test_contract_flow.py``) fixes the behaviour; these check that the SQLite claim
gets it through index probes (whatever a key's backlog), keeps rate-limit and turn state in the
file for every handle, and claims exactly what ``MemoryBackend`` claims on random queues, with
priorities, rate limits, concurrency keys, ``per_key``, crashes and cancellations.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Awaitable, Mapping
from pathlib import Path

import pytest

from dowork.backends import ClaimRequest, MemoryBackend, Outcome, Record, Settlement, SQLiteBackend
from tests.upkeep import reap

from .test_contract import LEASE, NOW, rec


def _plans(path: Path, statements: list[str]) -> list[str]:
    """``EXPLAIN QUERY PLAN`` details of each SELECT (or UPDATE) statement traced."""
    conn = sqlite3.connect(path)
    try:
        details = []
        for sql in statements:
            if sql.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE", "DELETE")):
                details += [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
        return details
    finally:
        conn.close()


def _assert_index_ranges_only(details: list[str]) -> None:
    """No full scan of the tasks table and no sort of it: every read is a range of an index
    made for claims (not, say, ``dowork_listing``'s range of every waiting record)."""
    tasks = [d for d in details if "dowork_tasks" in d or d.startswith(("SCAN t", "SEARCH t "))]
    assert tasks
    assert not [d for d in tasks if d.startswith("SCAN")]
    assert not [d for d in tasks if "TEMP B-TREE" in d]
    assert not [d for d in tasks if "dowork_listing" in d or "dowork_created" in d]


async def _traced(store: SQLiteBackend, calls: list[str], body: Awaitable[object]) -> None:
    """Run ``body`` (a coroutine) with every statement of the store's connection traced."""
    conn = store._conn
    assert conn is not None
    await store._run(conn.set_trace_callback, calls.append)
    try:
        await body
    finally:
        await store._run(conn.set_trace_callback, None)


@pytest.mark.parametrize("priorities", [[0], [0, 5], list(range(-9, 10))])
def test_claim_and_next_due_read_the_due_index_only(tmp_path: Path, priorities: list[int]) -> None:
    path = tmp_path / "plan.db"

    async def body() -> list[str]:
        store = SQLiteBackend(path)
        try:
            await store.push([rec(name="n", priority=p) for p in priorities for _ in range(3)])
            await store.push([rec(run_at=NOW + 5, status="scheduled", priority=priorities[0])])
            calls: list[str] = []
            await _traced(store, calls, store.claim(ClaimRequest("q", NOW, 4, LEASE, "w")))
            await _traced(
                store,
                calls,
                store.claim(ClaimRequest("q", NOW, 4, LEASE, "w", rates={"n": (1, 9)})),
            )
            await _traced(store, calls, store.next_due("q"))
            waiting = await store.list("q", ["pending", "scheduled"], limit=1000)
            assert await store.next_due("q") == min(r.run_at for r in waiting)
            return calls
        finally:
            await store.close()

    details = _plans(path, asyncio.run(body()))
    ranges = [d for d in details if "USING INDEX dowork_ready" in d]
    assert any("(queue=? AND priority=? AND run_at<?)" in d for d in ranges)  # due, per level
    assert any("(queue=? AND priority>?)" in d for d in ranges)  # the next level
    _assert_index_ranges_only(details)


def test_the_claimed_records_come_back_in_claim_order(tmp_path: Path) -> None:
    async def body() -> None:
        store = SQLiteBackend(tmp_path / "order.db")
        try:
            await store.push([rec(name=f"p{p}", priority=p) for p in (-9, 3, 0, 9, -1, 3)])
            got = await store.claim(ClaimRequest("q", NOW, 5, LEASE, "w"))
            assert [r.name for r in got] == ["p9", "p3", "p3", "p0", "p-1"]
            assert [r.priority for r in got] == [9, 3, 3, 0, -1]
        finally:
            await store.close()

    asyncio.run(body())


def test_a_claim_returns_the_records_as_stored(tmp_path: Path) -> None:
    """The claim reads back only what it did not set itself: the rest must match the file."""

    async def body() -> None:
        store = SQLiteBackend(tmp_path / "same.db")
        try:
            await store.push([rec(name="a", priority=2, options='{"x":1}'), rec(name="b")])
            for rates in (None, {"b": (5, 1.0)}):
                got = await store.claim(ClaimRequest("q", NOW, 1, LEASE, "w", rates=rates))
                assert got == await store.get([r.id for r in got])
        finally:
            await store.close()

    asyncio.run(body())


def test_rate_limit_state_is_shared_by_every_handle_on_the_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    rates = {"api": (1, 10.0)}

    async def body() -> None:
        first, second = SQLiteBackend(path), SQLiteBackend(path)
        try:
            await first.push([rec(name="api", id="a0"), rec(name="api", id="a1")])
            assert [
                r.id for r in await first.claim(ClaimRequest("q", NOW, 1, LEASE, "w1", rates=rates))
            ] == ["a0"]
            assert await second.claim(ClaimRequest("q", NOW, 5, LEASE, "w2", rates=rates)) == []
            (delayed,) = await second.get(["a1"])
            assert (delayed.slot, delayed.run_at) == (NOW + 10, NOW + 10)
        finally:
            await first.close()
            await second.close()
        reopened = SQLiteBackend(path)  # the start times live in the file, not the process
        try:
            await reopened.push([rec(name="api", id="a2")])
            assert (
                await reopened.claim(ClaimRequest("q", NOW + 10, 5, LEASE, "w", rates=rates)) != []
            )
            (late,) = await reopened.get(["a2"])
            assert late.slot == NOW + 20
        finally:
            await reopened.close()

    asyncio.run(body())


def _random_records(rng: random.Random, n: int) -> list[Record]:
    levels = rng.sample(range(-9, 10), rng.randint(1, 6))
    return [
        rec(
            id=f"r{i}",
            name=rng.choice(["api", "mail", "free"]),
            run_at=NOW + rng.choice([-300, -120, -60, -30, -1, 0, 0, 0, 20, 90]),
            priority=rng.choice(levels),
        )
        for i in range(n)
    ]


async def _claims(
    store: MemoryBackend | SQLiteBackend,
    pushes: list[list[Record]],
    rates: Mapping[str, tuple[int, float]] | None,
    aging: float,
) -> tuple[list[list[str]], list[tuple[str, str, float, float | None, int]]]:
    """Push in batches, claim as time goes by; return the claims and the final records."""
    await store.open()
    try:
        claims = []
        for step, batch in enumerate(pushes):
            await store.push(batch)
            now = NOW + 7 * step
            for limit in (1, 3, 8):
                got = await store.claim(
                    ClaimRequest("q", now, limit, LEASE, "w", aging=aging, rates=rates)
                )
                claims.append([r.id for r in got])
        ids = [r.id for batch in pushes for r in batch]
        final = sorted((r.id, r.status, r.run_at, r.slot, r.attempts) for r in await store.get(ids))
        return claims, final
    finally:
        await store.close()


@pytest.mark.parametrize("seed", range(12))
def test_claims_match_the_memory_reference_on_random_queues(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    records = _random_records(rng, 60)
    cuts = sorted(rng.sample(range(1, 60), 4))
    pushes = [records[a:b] for a, b in zip([0, *cuts], [*cuts, 60], strict=True)]
    rates: dict[str, tuple[int, float]] | None = rng.choice(
        [None, {"api": (2, 15.0)}, {"": (3, 10.0), "mail": (1, 30.0)}]
    )
    aging = rng.choice([0.0, 10.0, 60.0])
    memory = asyncio.run(_claims(MemoryBackend(), pushes, rates, aging))
    sqlite = asyncio.run(_claims(SQLiteBackend(tmp_path / "random.db"), pushes, rates, aging))
    assert sqlite == memory


# -- fair turns between concurrency keys, and per_key --

_KEYS = [None, None, "A", "A", "A", "A", "B", "C", "D"]  # A is the big tenant


def _keyed_records(rng: random.Random, step: int, now: float) -> list[Record]:
    levels = rng.sample(range(-3, 4), rng.randint(1, 3))
    records = []
    for i in range(rng.randint(0, 12)):
        run_at = now + rng.choice([-90, -30, -1, 0, 0, 0, 5, 20])
        records.append(
            rec(
                id=f"s{step}r{i}",
                queue=rng.choice(["q", "q", "q", "other"]),
                name=rng.choice(["api", "mail", "free", "free"]),
                run_at=run_at,
                status="scheduled" if run_at > now else "pending",
                priority=rng.choice(levels),
                concurrency_key=rng.choice(_KEYS),
            )
        )
    return records


#: What ``_drive`` saw: (operation, what the store returned) for each step, then the records.
DriveLog = list[tuple[str, object] | list[tuple[object, ...]]]


async def _drive(store: MemoryBackend | SQLiteBackend, seed: int) -> DriveLog:
    """Random pushes, claims, settlements, cancellations and reaps; what each one returned.

    The choices come from ``seed`` and from what the store returned, so two stores that
    behave alike are driven alike.
    """
    rng = random.Random(seed)
    rates = rng.choice([None, None, {"api": (2, 15.0)}, {"": (3, 10.0), "mail": (1, 30.0)}])
    aging = rng.choice([0.0, 10.0, 60.0])
    running: dict[str, int] = {}
    pushed: list[str] = []
    log: DriveLog = []
    await store.open()
    try:
        for step in range(14):
            now = NOW + 7 * step
            batch = _keyed_records(rng, step, now)
            await store.push(batch)
            pushed += [r.id for r in batch]
            for _ in range(rng.randint(1, 4)):
                op = rng.random()
                queue = rng.choice(["q", "q", "q", "other"])
                if op < 0.55:
                    got = await store.claim(
                        ClaimRequest(
                            queue,
                            now,
                            rng.choice([1, 2, 3, 5, 8]),
                            LEASE,
                            rng.choice(["w1", "w2"]),
                            rng.choice([None, None, 6]),
                            rng.choice([None, None, 1]),
                            aging=aging,
                            rates=rates,
                            per_key=rng.choice([None, 1, 2]),
                        )
                    )
                    running.update((r.id, r.attempts) for r in got)
                    log.append(("claim", [(r.id, r.concurrency_key) for r in got]))
                elif op < 0.75 and running:
                    ids = rng.sample(sorted(running), rng.randint(1, len(running)))
                    done = [
                        Settlement(i, running.pop(i), Outcome.SUCCEEDED, now)
                        if rng.random() < 0.6
                        else Settlement(
                            i, running.pop(i), Outcome.RETRY, now, run_at=now + rng.choice([0, 9])
                        )
                        for i in ids
                    ]
                    log.append(("settle", await store.settle(done)))
                elif op < 0.85 and pushed:
                    log.append(("cancel", await store.cancel(rng.choice(pushed), now)))
                elif op < 0.95:
                    log.append(("reap", await reap(store, queue, now, 3)))
                else:
                    log.append(("next_due", await store.next_due(queue)))
        records = await store.get(pushed)
        log.append(
            sorted(
                (r.id, r.status, r.run_at, r.slot, r.attempts, r.crashes, r.concurrency_key)
                for r in records
            )
        )
        return log
    finally:
        await store.close()


@pytest.mark.parametrize("seed", range(40))
def test_keyed_claims_match_the_memory_reference_on_random_queues(
    tmp_path: Path, seed: int
) -> None:
    memory = asyncio.run(_drive(MemoryBackend(), seed))
    sqlite = asyncio.run(_drive(SQLiteBackend(tmp_path / "keyed.db"), seed))
    assert sqlite == memory
    assert any(entry[0] == "claim" and entry[1] for entry in memory[:-1])


def _mixed(n_big: int) -> list[Record]:
    """A big tenant's backlog, small tenants on two levels, and records without a key."""
    records = [rec(id=f"big{i}", concurrency_key="big", run_at=NOW - 50) for i in range(n_big)]
    records += [
        rec(id=f"{key}{i}", concurrency_key=key, priority=i % 2, run_at=NOW - 10 + i)
        for key in ("s1", "s2", "s3")
        for i in range(4)
    ]
    records += [rec(id=f"plain{i}", name="api", priority=i % 3) for i in range(6)]
    return records


def test_keyed_claims_read_indexes_only(tmp_path: Path) -> None:
    path = tmp_path / "keyed-plan.db"

    async def body() -> list[str]:
        store = SQLiteBackend(path)
        try:
            await store.push(_mixed(50))
            await store.push([rec(id="later", concurrency_key="s1", run_at=NOW + 9)])
            calls: list[str] = []
            for per_key in (None, 2):  # never served, then remembered turns
                claim = store.claim(
                    ClaimRequest("q", NOW, 4, LEASE, "w", per_key=per_key, rates={"api": (1, 9)})
                )
                await _traced(store, calls, claim)
            await _traced(store, calls, store.next_due("q"))
            assert await store.next_due("q") == NOW - 50
            return calls
        finally:
            await store.close()

    calls = asyncio.run(body())
    assert any("dowork_turns" in sql and sql.startswith("INSERT") for sql in calls)
    details = _plans(path, calls)
    used = " ".join(details)
    for index in ("dowork_lanes", "dowork_ready", "dowork_leases", "dowork_turn_order"):
        assert f"USING INDEX {index}" in used or f"USING COVERING INDEX {index}" in used
    assert "dowork_lanes (queue=? AND concurrency_key=? AND priority=? AND run_at<?)" in used
    assert "dowork_lanes (queue=? AND concurrency_key>?)" in used  # the keys, one probe each
    assert "dowork_leases (queue=?)" in used  # the running records, counted by key
    assert "dowork_lanes (queue=? AND concurrency_key=? AND priority=?)" in used  # next_due
    _assert_index_ranges_only(details)


def _vm_steps(
    loop: asyncio.AbstractEventLoop, store: SQLiteBackend, body: Awaitable[object]
) -> int:
    """SQLite virtual machine steps (in hundreds) that ``body`` (a coroutine) took."""
    conn = store._conn
    assert conn is not None
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    async def measured() -> None:
        await store._run(conn.set_progress_handler, tick, 100)
        try:
            await body
        finally:
            await store._run(conn.set_progress_handler, None, 0)

    loop.run_until_complete(measured())
    return steps[0]


@pytest.mark.parametrize("per_key", [None, 3])
def test_a_big_backlog_costs_a_keyed_claim_nothing(tmp_path: Path, per_key: int | None) -> None:
    """A claim reads a key's few most urgent records, however big its backlog."""
    costs = []
    for n_big in (100, 20_000):
        loop = asyncio.new_event_loop()
        store = SQLiteBackend(tmp_path / f"big{n_big}.db")
        try:
            loop.run_until_complete(store.push(_mixed(n_big)))
            steps = []
            for _ in range(4):
                claim = store.claim(ClaimRequest("q", NOW, 8, LEASE, "w", per_key=per_key))
                steps.append(_vm_steps(loop, store, claim))
            costs.append(steps)
            running = loop.run_until_complete(store.list("q", ["reserved"], limit=100))
            assert {r.concurrency_key for r in running} == {"big", "s1", "s2", "s3", None}
        finally:
            loop.run_until_complete(store.close())
            loop.close()
    small, big = costs
    assert sum(big) < 1.5 * sum(small) + 20, costs


def test_turns_are_shared_by_every_handle_on_the_file(tmp_path: Path) -> None:
    path = tmp_path / "turns.db"

    async def body() -> None:
        first, second = SQLiteBackend(path), SQLiteBackend(path)
        try:
            await first.push([rec(id=f"a{i}", concurrency_key="A") for i in range(4)])
            await first.push([rec(id=f"b{i}", concurrency_key="B") for i in range(4)])
            claimed = []
            for store in (first, second, first, second):
                claimed += [r.id for r in await store.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))]
            assert claimed == ["a0", "b0", "a1", "b1"]
            (a0,) = await second.get(["a0"])
            await second.settle([Settlement("a0", a0.attempts, Outcome.SUCCEEDED, NOW)])
            # A has 1 running (a1, on either handle's worker), B has 2: B's turn waits.
            assert [
                r.id for r in await first.claim(ClaimRequest("q", NOW, 5, LEASE, "w", per_key=2))
            ] == ["a2"]
        finally:
            await first.close()
            await second.close()
        reopened = SQLiteBackend(path)  # the turns live in the file, not the process
        try:
            got = await reopened.claim(ClaimRequest("q", NOW, 2, LEASE, "w"))
            assert [r.id for r in got] == ["b2", "a3"]
        finally:
            await reopened.close()

    asyncio.run(body())


def test_a_queue_without_keys_writes_no_turns_while_it_has_a_backlog(tmp_path: Path) -> None:
    """The fast path: no key waiting, so a claim adds one probe and, in steady state, no write."""

    async def body() -> list[str]:
        store = SQLiteBackend(tmp_path / "plain.db")
        try:
            await store.push([rec(id=f"p{i}", priority=i % 2) for i in range(40)])
            # Remembers the turn of the plain records:
            await store.claim(ClaimRequest("q", NOW, 4, LEASE, "w"))
            calls: list[str] = []
            for _ in range(5):
                await _traced(store, calls, store.claim(ClaimRequest("q", NOW, 4, LEASE, "w")))
            # A key arrives: it goes first, never having been served.
            await store.push([rec(id="k0", concurrency_key="K")])
            assert [r.id for r in await store.claim(ClaimRequest("q", NOW, 2, LEASE, "w"))] == [
                "k0",
                "p8",
            ]
            return calls
        finally:
            await store.close()

    calls = asyncio.run(body())
    assert not [sql for sql in calls if sql.startswith(("INSERT", "DELETE"))]
    assert len([sql for sql in calls if "dowork_turns" in sql]) == 5  # the probe, once a claim
