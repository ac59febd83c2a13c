"""Backoff formulas and attempt budgets (seed behaviours D9-D12, G39-G43)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dowork import Backoff, RetryPolicy

MIN = 60.0


def delays(policy: RetryPolicy, n: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    out: list[float] = []
    prev = None
    for failure in range(1, n + 1):
        prev = policy.delay(failure, prev, rng)
        out.append(prev)
    return out


def test_default_policy_is_the_seeds() -> None:
    policy = RetryPolicy()
    assert policy.retries == 0
    assert policy.base == MIN
    assert policy.max_delay == 30 * MIN
    assert policy.backoff is Backoff.EXPONENTIAL
    assert policy.jittered


def test_no_jitter_doubles_from_two_minutes_and_caps_at_thirty() -> None:
    policy = RetryPolicy(retries=10, jitter=False)
    assert delays(policy, 7) == [2 * MIN, 4 * MIN, 8 * MIN, 16 * MIN, 30 * MIN, 30 * MIN, 30 * MIN]


def test_no_jitter_respects_a_smaller_cap() -> None:
    policy = RetryPolicy(retries=10, jitter=False, max_delay=timedelta(minutes=10))
    assert delays(policy, 5) == [2 * MIN, 4 * MIN, 8 * MIN, 10 * MIN, 10 * MIN]


def test_jitter_first_delay_is_one_two_or_three_whole_minutes() -> None:
    policy = RetryPolicy(retries=10)
    seen = {policy.delay(1, None, random.Random(seed)) for seed in range(200)}
    assert seen == {1 * MIN, 2 * MIN, 3 * MIN}


def test_uncapped_grows_without_bound_and_never_zero() -> None:
    for cap in (None, 0):
        policy = RetryPolicy(retries=-1, jitter=False, max_delay=cap)
        assert policy.max_delay is None
        got = delays(policy, 40)
        assert got[0] == 2 * MIN
        assert got[-1] == MIN * 2.0**40
        assert all(d > 0 for d in got)


def test_uncapped_exponent_does_not_overflow() -> None:
    policy = RetryPolicy(retries=-1, jitter=False, max_delay=None)
    assert policy.delay(5000, None, random.Random()) > 0


def test_fixed_linear_immediate() -> None:
    assert delays(RetryPolicy(backoff="fixed", base=1), 3) == [1, 1, 1]
    assert delays(RetryPolicy(backoff=Backoff.LINEAR, base=2), 3) == [2, 4, 6]
    assert delays(RetryPolicy(backoff="immediate"), 3) == [0, 0, 0]
    assert RetryPolicy().delay(0, None, random.Random()) == 0


def test_jitter_on_fixed_stays_within_half_to_one_and_a_half_and_cap() -> None:
    policy = RetryPolicy(backoff="fixed", base=10, jitter=True, max_delay=12)
    got = [policy.delay(1, None, random.Random(s)) for s in range(200)]
    assert min(got) >= 5
    assert max(got) <= 12
    assert len(set(got)) > 50


def test_retries_budget_counts_reruns() -> None:
    policy = RetryPolicy(retries=2)
    err = ValueError()
    assert policy.may_retry(1, err)
    assert policy.may_retry(2, err)
    assert not policy.may_retry(3, err)
    assert RetryPolicy(retries=-1).may_retry(10**6, err)
    assert not RetryPolicy().may_retry(1, err)


def test_should_retry_predicate() -> None:
    policy = RetryPolicy(retries=5, should_retry=lambda e: isinstance(e, OSError))
    assert policy.may_retry(1, OSError())
    assert not policy.may_retry(1, ValueError())


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"retries": -2}, ValueError),
        ({"retries": 1.5}, TypeError),
        ({"retries": True}, TypeError),
        ({"max_delay": -1}, ValueError),
        ({"base": -0.1}, ValueError),
        ({"backoff": "quadratic"}, ValueError),
        ({"should_retry": 3}, TypeError),
    ],
)
def test_bad_policy_options_raise(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]  # deliberately bad options


@given(
    backoff=st.sampled_from(list(Backoff)),
    base=st.floats(min_value=0.001, max_value=3600),
    cap=st.one_of(st.none(), st.floats(min_value=0.001, max_value=10**6)),
    jitter=st.one_of(st.none(), st.booleans()),
    failures=st.integers(min_value=1, max_value=200),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delays_are_never_negative_and_never_above_the_cap(
    backoff: Backoff,
    base: float,
    cap: float | None,
    jitter: bool | None,
    failures: int,
    seed: int,
) -> None:
    policy = RetryPolicy(retries=-1, backoff=backoff, base=base, max_delay=cap, jitter=jitter)
    rng = random.Random(seed)
    prev = None
    for n in range(1, failures + 1):
        prev = policy.delay(n, prev, rng)
        assert prev >= 0
        if cap is not None:
            assert prev <= cap
        if backoff is not Backoff.IMMEDIATE and not policy.jittered:
            assert prev > 0
