"""Task options, typed and frozen (issue 15): configure, policy, expiry, storing, dumps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

import dowork
from dowork.dump import line_of, requeue_into_queue
from dowork.errors import NotSerializable
from dowork.options import EMPTY, STORABLE, UNSET, Options
from dowork.retry import Backoff, RetryPolicy

NOW = 1_700_000_000.0


def work(n: int) -> int:
    return n


def test_configure_builds_frozen_options_and_an_unset_field_defers() -> None:
    task = dowork.Task(work, (1,), retries=2, backoff="linear")
    first = task._overrides
    assert first == Options(retries=2, backoff="linear")
    task.configure(max_delay=5)
    assert task._overrides == Options(retries=2, backoff="linear", max_delay=5)
    assert first == Options(retries=2, backoff="linear")  # not changed in place
    with pytest.raises(AttributeError):
        first.retries = 3  # type: ignore[misc]  # deliberately: frozen
    assert task.policy == RetryPolicy(retries=2, backoff=Backoff.LINEAR, max_delay=5)


def test_a_policy_replaces_the_retry_options_set_before_and_none_clears_them() -> None:
    task = dowork.Task(work, (1,), retries=2)
    task.configure(policy=RetryPolicy(retries=7, base=1.0))
    assert task._overrides == Options(policy=RetryPolicy(retries=7, base=1.0))
    task.configure(jitter=False)
    assert task.policy == RetryPolicy(retries=7, base=1.0, jitter=False)
    task.configure(policy=None)
    assert task._overrides is None
    assert task.policy == RetryPolicy()


def test_expiry_takes_the_earlier_of_relative_and_absolute() -> None:
    assert Options(expires=10.0).expiry(NOW) == NOW + 10
    assert Options(expires_at=NOW + 5).expiry(NOW) == NOW + 5
    assert Options(expires=10.0, expires_at=NOW + 5).expiry(NOW) == NOW + 5
    assert EMPTY.expiry(NOW) is None
    when = datetime.fromtimestamp(NOW + 60, UTC)
    assert EMPTY.configured(UNSET, {"expires": when}) == Options(expires_at=NOW + 60)
    assert Options(expires=3.0).configured(UNSET, {"expires": None}) is None


def test_storing_round_trips_and_refuses_what_cannot_be_stored() -> None:
    options = Options(retries=3, backoff=Backoff.FIXED, base_delay=2.5, keep_result=0.0)
    text = options.to_stored(within=4.0, expires_at=NOW)
    assert json.loads(text) == {
        "retries": 3, "backoff": "fixed", "base_delay": 2.5, "keep_result": 0.0,
        "within": 4.0, "expires_at": NOW,
    }  # fmt: skip
    back, within, expires_at = Options.from_stored(json.loads(text))
    assert (back, within, expires_at) == (
        Options(retries=3, backoff="fixed", base_delay=2.5, keep_result=0.0), 4.0, NOW,
    )  # fmt: skip
    with pytest.raises(NotSerializable, match="should_retry"):
        Options(should_retry=lambda e: True).to_stored(None, None)
    with pytest.raises(NotSerializable, match="policy"):
        Options(policy=RetryPolicy()).to_stored(None, None)
    assert set(STORABLE) >= {"expires", "expires_at", "keep_result", "retries"}


@pytest.mark.parametrize(
    "stored",
    [{"retries": "3"}, {"backoff": "sometimes"}, {"keep_result": -1}, {"within": 0},
     {"within": "soon"}, {"expires_at": "later"}, {"jitter": "yes"}],
)  # fmt: skip
def test_a_stored_option_of_the_wrong_type_or_value_is_refused(stored: dict[str, object]) -> None:
    with pytest.raises((TypeError, ValueError)):
        Options.from_stored(stored)


def test_unknown_stored_keys_are_ignored() -> None:
    assert Options.from_stored({"group": "g1", "future_option": 1}) == (None, None, None)


def test_a_dump_line_keeps_the_expiry_and_a_restored_task_expires_then_too() -> None:
    queue = dowork.Queue("dumped", clock=dowork.FakeClock(NOW), log=False)
    fn = queue.task(work)
    task = fn.task(1).configure(retries=2, expires=timedelta(seconds=30))
    queue.enqueue(task)
    line = line_of(task, "dumped")
    assert line.options == {"retries": 2, "expires_at": NOW + 30}
    restored = requeue_into_queue(line, queue)
    assert restored.expires_at == datetime.fromtimestamp(NOW + 30, UTC)
    assert restored.policy.retries == 2
    assert queue.run_until_idle() == 2
