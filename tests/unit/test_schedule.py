"""Interval and cron triggers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dowork import Cron, Every


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def test_every_fires_one_interval_later() -> None:
    assert Every(30).next_after(100.0) == 130.0
    assert Every.of(timedelta(minutes=2)).next_after(0.0) == 120.0


@pytest.mark.parametrize("bad", [0, -1, timedelta(0)])
def test_every_rejects_non_positive_intervals(bad: float | timedelta) -> None:
    with pytest.raises(ValueError, match="interval"):
        Every.of(bad)


def test_cron_next_is_strictly_after() -> None:
    cron = Cron("*/5 * * * *")
    assert cron.next_after(ts(2025, 1, 1, 0, 5)) == ts(2025, 1, 1, 0, 10)
    assert cron.next_after(ts(2025, 1, 1, 0, 4, 59)) == ts(2025, 1, 1, 0, 5)


def test_cron_in_a_time_zone() -> None:
    cron = Cron("0 9 * * *", tz="Europe/Paris")
    nxt = datetime.fromtimestamp(cron.next_after(ts(2025, 6, 1, 12)), UTC)
    assert nxt == datetime(2025, 6, 2, 7, tzinfo=UTC)  # 09:00 CEST


@pytest.mark.parametrize("expr", ["bad", "* * *", "61 * * * *", "* * * * * * *"])
def test_invalid_cron_is_a_value_error(expr: str) -> None:
    with pytest.raises(ValueError, match="invalid cron expression"):
        Cron(expr)
