"""Hooks: the extension point logging (and later metrics) is built on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

import dowork
from dowork import FakeClock, Hooks, Queue, Task


class Recorder(Hooks):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_enqueue(self, task: Task[Any]) -> None:
        self.events.append(("enqueue", task.name))

    def before_attempt(self, task: Task[Any]) -> None:
        self.events.append(("before", task.attempts))

    def after_attempt(self, task: Task[Any], error: BaseException | None, duration: float) -> None:
        assert duration >= 0
        self.events.append(("after", type(error).__name__ if error else None))

    def on_retry(self, task: Task[Any], error: BaseException, delay: float) -> None:
        self.events.append(("retry", delay))

    def on_success(self, task: Task[Any]) -> None:
        self.events.append(("success", task.result(0)))

    def on_failure(self, task: Task[Any], error: BaseException) -> None:
        self.events.append(("failure", type(error).__name__))


def flaky_factory() -> Callable[[], str]:
    calls = [0]

    def flaky() -> str:
        calls[0] += 1
        if calls[0] == 1:
            raise OSError
        return "ok"

    return flaky


def test_hook_events_in_order(make_queue: Callable[..., Queue], clock: FakeClock) -> None:
    rec = Recorder()
    queue = make_queue(hooks=[rec], log=False)
    queue.enqueue(Task(flaky_factory(), retries=1, backoff="fixed", base_delay=7))
    queue.dispatch()
    clock.advance(7)
    queue.dispatch()
    queue.submit(_boom)
    queue.dispatch()
    assert rec.events == [
        ("enqueue", "flaky_factory.<locals>.flaky"),
        ("before", 1),
        ("after", "OSError"),
        ("retry", 7.0),
        ("before", 2),
        ("after", None),
        ("success", "ok"),
        ("enqueue", "_boom"),
        ("before", 1),
        ("after", "ZeroDivisionError"),
        ("failure", "MaxRetriesExceeded"),
    ]


def _boom() -> None:
    raise ZeroDivisionError


def test_a_failing_hook_is_logged_and_changes_nothing(
    make_queue: Callable[..., Queue], caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Hooks):
        def before_attempt(self, task: Task[Any]) -> None:
            raise RuntimeError("hook bug")

    queue = make_queue(hooks=[Broken()])
    task = queue.submit(lambda: 3)
    queue.dispatch()
    assert task.result(0) == 3
    assert any("hook" in r.message and r.levelno == logging.ERROR for r in caplog.records)


def test_logging_hooks_report_retries_and_failures(
    make_queue: Callable[..., Queue], caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    caplog.set_level(logging.INFO, logger="dowork")
    queue = make_queue()
    task = queue.enqueue(Task(_boom, retries=1, backoff="fixed", base_delay=5))
    queue.dispatch()
    clock.advance(5)
    queue.dispatch()
    retry = [r for r in caplog.records if "retrying in" in r.message]
    failed = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(retry) == 1
    assert "attempt 1/2 failed" in retry[0].message
    assert vars(retry[0])["task_id"] == task.id  # set through the log call's extra=
    assert len(failed) == 1
    assert vars(failed[0])["attempt"] == 2


def test_no_logging_when_disabled(
    make_queue: Callable[..., Queue], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dowork")
    queue = make_queue(log=False)
    queue.submit(_boom)
    queue.dispatch()
    assert not [r for r in caplog.records if r.name == "dowork"]
    assert dowork.LoggingHooks().logger.name == "dowork"
