"""``backends.flow``: the pure flow control every store's claim runs, against simple references.

Each shared piece is checked against a plain restatement of ``Store.claim``'s rules: the
ranking (priority with aging), the rate slots (never more than ``n`` starts in any ``per``,
each as early as that allows), the walk across concurrency keys (turns, ``per_key``, a
repeat crasher alone, rate-limited records keeping their key's turn) and the single-lane
walks the SQLite store takes without keys (``pace``, ``alone_count``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace

from hypothesis import given
from hypothesis import strategies as st

from dowork.backends.flow import (
    Lane,
    Pacer,
    Turns,
    alone,
    alone_count,
    pace,
    rank,
    rate_key,
    room,
    take_slot,
)


@dataclass(frozen=True)
class Row:
    """A due record as a test store holds it."""

    id: str
    key: str  # "" for none
    priority: int
    run_at: float
    crashes: int
    name: str
    slot: float | None
    seq: int


AGING = 10.0


def urgency(row: Row) -> tuple[float, int]:
    return rank(row.run_at, row.priority, AGING), row.seq


class ListTurns(Turns[Row]):
    """``Turns`` over lists, as ``MemoryBackend`` uses it."""

    def __init__(self, limit: int, per_key: int | None, held: dict[str, int], last: int):
        super().__init__(limit, per_key, crashes)
        self._running = held
        self._last = last

    def urgency(self, row: Row) -> tuple[float, int]:
        return urgency(row)

    def running(self) -> dict[str, int]:
        return dict(self._running)

    def last_turn(self) -> int:
        return self._last


def crashes(row: Row) -> int:
    return row.crashes


def pacer_of(rates: dict[str, tuple[int, float]] | None) -> Pacer[Row]:
    """A pacer over rows, keeping its start times in a dict of its own."""
    return Pacer(10.0, rates, starts_of({}), lambda row: (row.id, row.name, row.slot))


def starts_of(kept: dict[str, list[float]]) -> Callable[[str], list[float]]:
    return lambda key: kept.setdefault(key, [])


rows_st = st.lists(
    st.tuples(
        st.sampled_from(["", "a", "b", "c"]),
        st.integers(-2, 2),
        st.integers(0, 30).map(float),
        st.integers(0, 3),
        st.sampled_from(["f", "g", "h"]),
        st.one_of(st.none(), st.integers(0, 30).map(float)),
    ),
    max_size=25,
).map(
    lambda ts: [
        Row(f"t{i}", k, p, at, c, name, slot, i) for i, (k, p, at, c, name, slot) in enumerate(ts)
    ]
)
rates_st = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["", "f", "g"]),
        st.tuples(st.integers(1, 3), st.integers(1, 20).map(float)),
        max_size=2,
    ),
)


# -- ranking and rate slots ---------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(-3, 3)), min_size=2, max_size=10))
def test_rank_puts_a_priority_ahead_of_up_to_aging_seconds_per_level(
    due: list[tuple[int, int]],
) -> None:
    """``a`` ranks before ``b`` iff ``a`` became due before ``b`` did, less ``aging`` per level."""
    for run_a, p_a in due:
        for run_b, p_b in due:
            before = rank(run_a, p_a, AGING) < rank(run_b, p_b, AGING)
            assert before == (run_a < run_b + (p_a - p_b) * AGING)


def test_rate_key_names_the_record_s_own_limit_or_the_queue_s() -> None:
    assert rate_key("f", {"f": (1, 1.0), "": (2, 1.0)}) == "f"
    assert rate_key("g", {"f": (1, 1.0), "": (2, 1.0)}) == ""
    assert rate_key("g", {"f": (1, 1.0)}) is None


@given(
    st.integers(1, 4),
    st.integers(1, 10),
    st.lists(st.integers(0, 5), min_size=1, max_size=30),
)
def test_take_slot_keeps_n_per_window_each_as_early_as_it_may(
    n: int, per: int, steps: list[int]
) -> None:
    """Never more than ``n`` starts in any ``per``-long window; none later than needed."""
    kept: list[float] = []
    given_out: list[float] = []
    now = 0.0
    for step in steps:
        now += step
        start = take_slot(kept, n, float(per), now)
        assert start >= now
        assert start >= max(given_out, default=now)
        # At ``start`` the window (start - per, start] holds at most n - 1 earlier starts ...
        assert sum(start - per < s <= start for s in given_out) <= n - 1
        # ... and any earlier time from ``now`` on would hold n already.
        if start > now:
            assert sum(start - per <= s for s in given_out) >= n
        given_out.append(start)
        assert kept == given_out[-n:]


def test_room_and_alone() -> None:
    assert room(5, None, 100) == 5
    assert room(5, 7, 4) == 3
    assert room(5, 3, 4) == -1
    assert alone(2, 2)
    assert not alone(1, 2)
    assert not alone(9, None)


@given(st.lists(st.integers(0, 30), max_size=20), st.data())
def test_pacer_gives_the_slots_take_slot_gives_and_delays_the_rest(
    names: list[int], data: st.DataObject
) -> None:
    rates = data.draw(rates_st)
    now = 5.0
    kept: dict[str, list[float]] = {}
    pacer: Pacer[tuple[str, str, float | None]] = Pacer(now, rates, starts_of(kept), lambda t: t)
    expected_kept: dict[str, list[float]] = {}
    delayed = []
    for i, k in enumerate(names):
        name, slot = "fgh"[k % 3], (float(k) if k > 20 else None)
        key = None if slot is not None or not rates else rate_key(name, rates)
        if key is None:
            expected = True
        else:
            n, per = rates[key]  # type: ignore[index]
            start = take_slot(expected_kept.setdefault(key, []), n, per, now)
            expected = start <= now
            if not expected:
                delayed.append((start, f"t{i}"))
        assert pacer.may_start((f"t{i}", name, slot)) == expected
    assert pacer.delayed == delayed
    assert kept == expected_kept


# -- the walk across keys -----------------------------------------------------------------


def reference_walk(
    rows: list[Row],
    served: dict[str, int],
    limit: int,
    per_key: int | None,
    held: dict[str, int],
    alone_from: int | None,
    may_start: Callable[[Row], bool],
    last: int,
) -> tuple[list[Row], dict[str, int]]:
    """``Store.claim``'s walk, restated: at each step the eligible key served longest ago."""
    lanes: dict[str, list[Row]] = {}
    for row in sorted(rows, key=urgency):
        lanes.setdefault(row.key, []).append(row)
    turns = {key: served.get(key, 0) for key in lanes}
    held = dict(held)
    taken: list[Row] = []
    given: dict[str, int] = {}
    looked = 0
    while looked < 2 * limit and len(taken) < limit:
        eligible = [
            (turns[k], urgency(lane[0]), k)
            for k, lane in lanes.items()
            if lane and not (k and per_key is not None and held.get(k, 0) >= per_key)
        ]
        if not eligible:
            break
        key = min(eligible)[2]
        row = lanes[key].pop(0)
        looked += 1
        crasher = alone_from is not None and row.crashes >= alone_from
        if crasher and taken:
            break
        if not may_start(row):
            continue
        taken.append(row)
        if crasher:
            break
        held[key] = held.get(key, 0) + 1
        last += 1
        turns[key] = given[key] = last
    return taken, given


def prefix(rows: list[Row], count: int) -> list[Row]:
    return rows[:count]


def walk(
    rows: list[Row],
    served: dict[str, int],
    limit: int,
    per_key: int | None,
    held: dict[str, int],
    alone_from: int | None,
    may_start: Callable[[Row], bool] | None,
    last: int,
    fetched: bool,
) -> tuple[list[Row], dict[str, int]]:
    """The same with ``flow.Turns``: lanes given whole, or read a row or two at a time."""
    lanes: dict[str, list[Row]] = {}
    for row in sorted(rows, key=urgency):
        lanes.setdefault(row.key, []).append(row)
    turns = ListTurns(limit, per_key, held, last)
    for key, lane in lanes.items():
        if fetched:
            turns.add(key, served.get(key, 0), Lane(lane[:1], functools.partial(prefix, lane)))
        else:
            turns.add(key, served.get(key, 0), Lane(lane))
    return turns.take(limit, alone_from, may_start), turns.served


@given(
    rows_st,
    st.dictionaries(st.sampled_from(["", "a", "b", "c"]), st.integers(1, 6), max_size=4),
    st.integers(1, 8),
    st.one_of(st.none(), st.integers(1, 3)),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 3), max_size=3),
    st.one_of(st.none(), st.integers(1, 3)),
    rates_st,
    st.booleans(),
)
def test_turns_walk_keys_as_the_claim_rules_say(
    rows: list[Row],
    served: dict[str, int],
    limit: int,
    per_key: int | None,
    held: dict[str, int],
    alone_from: int | None,
    rates: dict[str, tuple[int, float]] | None,
    fetched: bool,
) -> None:
    last = max(served.values(), default=0)
    expected_pacer = pacer_of(rates)
    expected = reference_walk(
        rows, served, limit, per_key, held, alone_from, expected_pacer.may_start, last
    )
    pacer = pacer_of(rates)
    may_start = pacer.may_start if rates else None  # as the stores ask: not at all without limits
    got = walk(rows, served, limit, per_key, held, alone_from, may_start, last, fetched)
    assert got == expected
    assert pacer.delayed == expected_pacer.delayed


@given(rows_st, st.integers(1, 8), st.one_of(st.none(), st.integers(1, 3)), rates_st)
def test_pace_and_alone_count_are_the_walk_of_one_lane(
    rows: list[Row], limit: int, alone_from: int | None, rates: dict[str, tuple[int, float]] | None
) -> None:
    lane = sorted((replace(row, key="") for row in rows), key=urgency)
    looked = lane[: 2 * limit]  # what the SQLite store reads for a claim under rate limits
    expected_pacer = pacer_of(rates)
    expected, _ = reference_walk(lane, {}, limit, None, {}, alone_from, expected_pacer.may_start, 0)
    pacer = pacer_of(rates)
    assert pace(looked, limit, alone_from, crashes, pacer.may_start) == expected
    assert pacer.delayed == expected_pacer.delayed
    unlimited, _ = reference_walk(lane, {}, limit, None, {}, alone_from, lambda row: True, 0)
    assert lane[: alone_count(lane[:limit], alone_from, crashes)] == unlimited


@given(st.lists(st.integers(), max_size=30), st.integers(0, 3))
def test_a_lane_reads_more_as_it_is_taken(items: list[int], first: int) -> None:
    asked: list[int] = []

    def fetch(count: int) -> list[int]:
        asked.append(count)
        return items[:count]

    lane = Lane(items[:first], fetch)
    out = []
    while (head := lane.head()) is not None:
        assert lane.pop() == head
        out.append(head)
    assert out == items
    assert all(b > a for a, b in itertools.pairwise(asked))  # each read asks more
