"""``ThreadLane.take_back``: a staged attempt belongs to whichever pops it first.

A worker gives back tasks waiting behind long ones (``_hand_back_waiting``): one taken back
must never run, and one a thread already started must not be taken back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

from dowork._threads import ThreadLane
from dowork.task import TaskStatus

WAIT = 10.0


def _attempt(fn: Any, status: TaskStatus) -> tuple[Any, object]:
    token = object()
    task = SimpleNamespace(
        fn=fn, args=(), kwargs={}, _runner=token, _status=status, _start_by=None, _attempts=0
    )
    return task, token


def _settle(loop: asyncio.AbstractEventLoop, until: Any) -> None:
    """Run ``loop`` (the lane's drains) until ``until()`` holds."""
    deadline = time.monotonic() + WAIT
    while not until():
        assert time.monotonic() < deadline
        loop.run_until_complete(asyncio.sleep(0.002))


def test_a_staged_attempt_taken_back_never_runs() -> None:
    loop = asyncio.new_event_loop()
    done: list[Any] = []
    lane = ThreadLane("t", 1, loop, done.append, lambda task: None, lambda: None)
    gate, ran = threading.Event(), []
    first, first_token = _attempt(lambda: gate.wait(WAIT), TaskStatus.RUNNING)
    lane.submit(first, first_token)
    assert lane.saturated
    second, second_token = _attempt(lambda: ran.append(2), TaskStatus.RESERVED)
    lane.submit(second, second_token)
    assert lane.staged() == [(second_token, second)]
    assert lane.take_back(second_token)
    assert not lane.take_back(second_token)  # (once)
    assert lane._busy == 1  # the first attempt only
    third, third_token = _attempt(lambda: ran.append(3), TaskStatus.RESERVED)
    lane.submit(third, third_token)  # behind the second in the thread's queue
    gate.set()
    _settle(loop, lambda: len(done) == 2)  # the third ran: the thread went past the second
    assert [item[0] for item in done] == [first, third]
    assert ran == [3]
    assert lane._busy == 0
    lane.stop()
    loop.close()


def test_an_attempt_a_thread_started_is_not_taken_back() -> None:
    loop = asyncio.new_event_loop()
    done: list[Any] = []
    started: list[Any] = []
    lane = ThreadLane("t", 1, loop, done.append, started.append, lambda: None)
    gate, ran = threading.Event(), []
    first, first_token = _attempt(lambda: gate.wait(WAIT), TaskStatus.RUNNING)
    lane.submit(first, first_token)
    second, second_token = _attempt(lambda: ran.append(2), TaskStatus.RESERVED)
    lane.submit(second, second_token)
    gate.set()
    _settle(loop, lambda: len(done) == 2)
    assert not lane.take_back(second_token)
    assert ran == [2]
    assert started == [second]  # it waited for the thread, which started it
    assert lane.staged() == []
    lane.stop()
    loop.close()
