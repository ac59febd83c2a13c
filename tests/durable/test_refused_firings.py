"""A schedule's firing that the store refuses for a moment (Redis restarting) is pushed again.

Each test runs a Redis of its own (appendfsync always, so a restart keeps every key), stops it
under a worker whose schedule is due, and starts it again: the firing is retried until it is
stored, and runs once, or is given up (logged lost once) when the schedule's next firing is
due first, and that one runs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from dowork import DurableSettings, FakeClock, Queue
from dowork.backends import Record, RedisBackend
from dowork.errors import OutcomeUnknown
from dowork.scheduling import Schedule
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(120)

START = 1_700_000_000.0
WAIT = 60.0  # seconds: a generous bound on a busy machine; passing runs take about one
RETRYING = "refused"
LOST = "firing lost"

ran: list[str] = []


def tick(label: str) -> None:
    ran.append(label)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (appendfsync always), to stop and start again."""
    server = RedisServer(tmp_path / "redis", persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def start_worker(backend: RedisBackend) -> tuple[Queue, Schedule, FakeClock]:
    """A started worker on ``backend`` on a fake clock, with an every(60) schedule of ``tick``."""
    ran.clear()
    clock = FakeClock(START)
    queue = Queue(
        "sched",
        backend=backend,
        clock=clock,
        log=False,
        durable=DurableSettings(lease=30.0, maintenance=0.5),
    )
    queue.task(name="tick")(tick)
    schedule = queue.every(60, tick, "a")
    queue.start()
    return queue, schedule, clock


@pytest.fixture
def worker(server: RedisServer) -> Iterator[tuple[Queue, Schedule, FakeClock]]:
    """A worker on ``server`` (see ``start_worker``)."""
    queue, schedule, clock = start_worker(
        RedisBackend(server.url, prefix=f"dowork:f{uuid.uuid4().hex[:8]}")
    )
    try:
        yield queue, schedule, clock
    finally:
        queue.shutdown(timeout=10)


def wait_until(predicate: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not reached in {timeout}s: {what}"
        time.sleep(0.02)


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and text in r.getMessage() and "schedule" in r.getMessage()
    ]


def refused_while_down(
    server: RedisServer, clock: FakeClock, caplog: pytest.LogCaptureFixture, due: float
) -> None:
    """Stop Redis, let ``due`` (a firing's time) pass on the fake clock, wait for the worker's log.

    The worker logs that the store refused the firing (or, wrongly, that it was lost).
    """
    caplog.set_level(logging.WARNING, logger="dowork")
    server.stop()
    clock.set(due + 1)
    wait_until(lambda: warnings(caplog, RETRYING) or warnings(caplog, LOST), "the refusal logged")


def stored(queue: Queue) -> dict[str, str]:
    """The records of the queue ``sched`` in the store: id -> status."""
    backend = queue.backend
    assert backend is not None
    records = queue._engine.run_on_home(backend.list("sched", limit=100))
    return {r.id: r.status for r in records}


def test_a_firing_refused_while_redis_restarts_is_retried_and_runs_once(
    server: RedisServer,
    worker: tuple[Queue, Schedule, FakeClock],
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue, schedule, clock = worker
    first = schedule.trigger.next_after(START)
    refused_while_down(server, clock, caplog, first)  # the firing is due while Redis is down
    assert warnings(caplog, LOST) == []  # retried, not given up
    assert schedule.runs == 0
    server.start()
    wait_until(lambda: schedule.runs == 1, "the firing stored once Redis is back")
    # The worker claims it (its fetcher backed off for at most a few seconds meanwhile).
    wait_until(lambda: ran == ["a"] and set(stored(queue).values()) == {"succeeded"}, "its run")
    assert [id_.endswith(f":{first:.3f}") for id_ in stored(queue)] == [True]
    assert schedule.fired_elsewhere == 0
    assert warnings(caplog, LOST) == []
    time.sleep(0.3)  # nothing more comes of it
    assert ran == ["a"]
    assert schedule.runs == 1


def test_a_firing_still_refused_when_the_next_is_due_is_lost_once_and_the_next_runs(
    server: RedisServer,
    worker: tuple[Queue, Schedule, FakeClock],
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue, schedule, clock = worker
    first = schedule.trigger.next_after(START)
    second = schedule.trigger.next_after(first)
    refused_while_down(server, clock, caplog, first)
    assert warnings(caplog, LOST) == []  # retried, not given up
    clock.set(second + 1)  # the next firing is due, Redis still down: the first is superseded
    wait_until(lambda: warnings(caplog, LOST), "the first firing logged lost")
    lost = warnings(caplog, LOST)
    assert len(lost) == 1
    assert time.strftime("%H:%M:%S", time.gmtime(first)) in lost[0]  # names its time
    server.start()
    wait_until(lambda: schedule.runs == 1, "the second firing stored once Redis is back")
    wait_until(lambda: ran == ["a"] and set(stored(queue).values()) == {"succeeded"}, "its run")
    assert [id_.endswith(f":{second:.3f}") for id_ in stored(queue)] == [True]
    time.sleep(0.3)
    assert len(warnings(caplog, LOST)) == 1  # logged once, not at every retry
    assert ran == ["a"]


def test_a_worker_stopping_while_a_firing_is_refused_gives_it_up_at_once(
    server: RedisServer,
    worker: tuple[Queue, Schedule, FakeClock],
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue, schedule, clock = worker
    caplog.set_level(logging.WARNING, logger="dowork")
    server.stop()
    clock.set(schedule.trigger.next_after(START) + 1)
    wait_until(lambda: warnings(caplog, RETRYING), "the refusal logged")
    time.sleep(3.5)  # the pauses between pushes grew (0.1 s to 1.6 s), one of 3.2 s begins
    began = time.monotonic()
    queue.shutdown(timeout=10)
    took = time.monotonic() - began
    lost = warnings(caplog, LOST)
    assert len(lost) == 1
    assert "the queue stopped" in lost[0]
    assert took < 1.5, took  # not held up by the pause: it ends with the queue's accepting
    assert schedule.runs == 0


def test_firings_due_together_refused_are_pushed_again_together_each_once(
    server: RedisServer,
    worker: tuple[Queue, Schedule, FakeClock],
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue, schedule, clock = worker
    others = [queue.every(60, tick, f"b{n}") for n in range(19)]  # 20 due on the same point
    refused_while_down(server, clock, caplog, schedule.trigger.next_after(START))
    server.start()
    every = [schedule, *others]
    wait_until(lambda: all(s.runs == 1 for s in every), "each firing stored once")
    wait_until(lambda: len(ran) == 20 and len(stored(queue)) == 20, "each firing's run")
    time.sleep(0.3)
    assert sorted(ran) == sorted(["a", *(f"b{n}" for n in range(19))])
    refused = warnings(caplog, RETRYING)
    assert len(refused) == 1  # one batch: one line
    assert "the firings of 20 schedules (tick)" in refused[0]
    assert warnings(caplog, LOST) == []


def test_firings_superseded_together_are_logged_lost_in_one_line(
    server: RedisServer,
    worker: tuple[Queue, Schedule, FakeClock],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A long outage supersedes every schedule's firing at once: one line, not one each."""
    queue, schedule, clock = worker
    others = [queue.every(60, tick, f"b{n}") for n in range(19)]
    first = schedule.trigger.next_after(START)
    refused_while_down(server, clock, caplog, first)
    clock.set(schedule.trigger.next_after(first) + 1)  # every first firing is superseded
    wait_until(lambda: warnings(caplog, LOST), "the first firings logged lost")
    server.start()
    wait_until(lambda: all(s.runs == 1 for s in [schedule, *others]), "the next firings stored")
    lost = warnings(caplog, LOST)
    assert len(lost) == 1, lost
    assert "schedule firing lost for 20 schedules (tick)" in lost[0]
    assert time.strftime("%H:%M:%S", time.gmtime(first)) in lost[0]


class LostReply(RedisBackend):
    """A real Redis whose next push loses its reply (``lose``): after storing it, or before."""

    lose: str | None = None

    async def push(self, records: Sequence[Record], *, fresh: bool = False) -> dict[str, str]:
        how, self.lose = self.lose, None
        if how == "after":
            await super().push(records, fresh=fresh)
        if how is not None:
            raise OutcomeUnknown("the reply was lost (test)", tuple(r.id for r in records))
        return await super().push(records, fresh=fresh)


@pytest.mark.parametrize("stored_first", [True, False], ids=["stored", "not stored"])
def test_a_firing_whose_push_lost_its_reply_is_pushed_again_and_runs_once(
    server: RedisServer, caplog: pytest.LogCaptureFixture, stored_first: bool
) -> None:
    """Stored or not, a firing whose outcome is unknown is not lost: its second push is
    stored, or refused as the duplicate of the first (counted as fired elsewhere)."""
    caplog.set_level(logging.WARNING, logger="dowork")
    backend = LostReply(server.url, prefix=f"dowork:u{uuid.uuid4().hex[:8]}")
    queue, schedule, clock = start_worker(backend)
    try:
        backend.lose = "after" if stored_first else "before"
        clock.set(schedule.trigger.next_after(START) + 1)
        wait_until(lambda: ran == ["a"], "its run")
        wait_until(lambda: schedule.runs + schedule.fired_elsewhere == 1, "counted once")
        assert (schedule.runs, schedule.fired_elsewhere) == ((0, 1) if stored_first else (1, 0))
        assert backend.lose is None  # the lost reply happened
        assert warnings(caplog, LOST) == []
        assert len(stored(queue)) == 1
    finally:
        queue.shutdown(timeout=10)
    assert ran == ["a"]
