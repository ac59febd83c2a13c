"""``Pace``: the hold beyond the slots follows the rate of tasks leaving a worker.

Times are given by hand, so nothing here depends on the machine's speed.
"""

from __future__ import annotations

import pytest

from dowork import DurableSettings
from dowork.durable.pace import Pace


def _run(pace: Pace, held: int, rate: float, start: float, seconds: float) -> float:
    """Let ``rate`` tasks a second leave a worker that keeps ``held`` for ``seconds``."""
    now, step = start, 0.01
    while now < start + seconds - 1e-9:
        now += step
        pace.claimed(round(rate * step), 0.001)  # what left is claimed again
        pace.hold(held, now)
    return now


def test_a_worker_that_finished_nothing_holds_nothing() -> None:
    pace = Pace(64, 0.02, 0.0)
    assert pace.hold(0, 0.0) == 0
    pace.claimed(8, 0.001)
    assert pace.hold(8, 1.0) == 0  # a second on, the 8 still run: long tasks


def test_short_tasks_are_held_for_the_window_up_to_the_cap() -> None:
    pace = Pace(64, 0.02, 0.0)
    _run(pace, 8, 1000.0, 0.0, 0.1)
    assert pace.hold(8, 0.1) == 20  # 1,000 a second for 20 ms
    _run(pace, 8, 10_000.0, 0.1, 0.1)
    assert pace.hold(8, 0.2) == 64  # 200 wanted: the cap


def test_long_tasks_hold_none() -> None:
    pace = Pace(64, 0.02, 0.0)
    _run(pace, 8, 40.0, 0.0, 1.0)  # 8 slots of 200 ms tasks
    assert pace.hold(8, 1.0) == 0  # 0.8 of a task in 20 ms


def test_the_hold_falls_when_tasks_stop_leaving() -> None:
    """Short tasks, then long ones: within a few tenths of a second it holds none."""
    pace = Pace(64, 0.02, 0.0)
    now = _run(pace, 8, 2000.0, 0.0, 0.1)
    assert pace.hold(8, now) == 40
    assert 0 < pace.hold(8, now + 0.02) < 40  # falls, not at once (a pause in a burst)
    assert pace.hold(8, now + 0.3) == 0


def test_the_hold_rises_at_once() -> None:
    pace = Pace(64, 0.02, 0.0)
    pace.hold(0, 5.0)  # idle for seconds
    pace.claimed(8, 0.001)
    assert pace.hold(0, 5.01) == 16  # 8 left in 10 ms: 800 a second, 16 in 20 ms


def test_a_slow_store_holds_what_two_claims_take() -> None:
    """Claims of 100 ms: the hold covers two of them, not just the window."""
    pace = Pace(1000, 0.02, 0.0)
    for _ in range(40):
        pace.claimed(0, 0.1)
    assert pace.latency == pytest.approx(0.1, rel=1e-3)
    pace.claimed(100, None)  # (a wait's claim: how long it took says nothing)
    assert pace.latency == pytest.approx(0.1, rel=1e-3)
    assert pace.hold(0, 0.1) == 199  # 1,000 a second for 2 x 100 ms (20 ms would give 20)


def test_a_short_sample_keeps_the_last_hold() -> None:
    pace = Pace(64, 0.02, 0.0)
    pace.claimed(10, 0.001)
    assert pace.hold(0, 0.004) == 0  # 4 ms is too short to measure over
    assert pace.hold(0, 0.01) == 20  # 10 in 10 ms


def test_a_fixed_prefetch_holds_the_cap() -> None:
    pace = Pace(8, None, 0.0)
    assert pace.hold(8, 0.0) == 8
    assert pace.hold(8, 100.0) == 8


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="prefetch_window"):
        DurableSettings(prefetch_window=0.0)
    assert DurableSettings(prefetch_window=None).prefetch_window is None
