"""Groups and fan-in: a callback runs once, with every member's result, after all finished."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dowork
from dowork import DurableSettings, FakeClock, Queue, Task, TaskStatus


def _drain(queue: Queue) -> None:
    for _ in range(20):
        if not queue.dispatch():
            return
    raise AssertionError("the queue never ran dry")


def test_the_callback_gets_every_result_in_member_order(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(log=False)
    events: list[str] = []

    def square(n: int) -> int:
        events.append(f"square {n}")
        return n * n

    def total(results: list[int], label: str) -> str:
        events.append("total")
        return f"{label}={sum(results)} from {results}"

    group = queue.group(
        [Task(square, args=(n,)) for n in (3, 1, 2)], then=Task(total, args=("sum",))
    )
    assert group.callback.status is TaskStatus.PENDING
    _drain(queue)
    assert group.result(0) == "sum=14 from [9, 1, 4]"
    assert events[-1] == "total"  # only after every member
    assert sorted(events[:-1]) == ["square 1", "square 2", "square 3"]
    assert group.id == group.callback.id


def test_a_failed_member_fails_the_callback_unrun(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(log=False)
    ran: list[Any] = []

    def ok() -> int:
        return 1

    def boom() -> int:
        raise KeyError("missing")

    bad = Task(boom)
    group = queue.group([Task(ok), bad], then=Task(ran.append))
    _drain(queue)
    assert ran == []
    assert group.callback.status is TaskStatus.FAILED
    with pytest.raises(dowork.GroupFailed, match="1 of 2 group member") as caught:
        group.result(0)
    assert [task_id for task_id, _ in caught.value.failures] == [bad.id]


def test_pass_hands_the_exceptions_to_the_callback(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(log=False)

    def boom() -> int:
        raise KeyError("missing")

    def describe(results: list[Any]) -> list[str]:
        return [type(r).__name__ if isinstance(r, BaseException) else str(r) for r in results]

    group = queue.group(
        [Task(int, args=("5",)), Task(boom)], then=Task(describe), on_failure="pass"
    )
    _drain(queue)
    assert group.result(0) == ["5", "MaxRetriesExceeded"]


def test_a_cancelled_member_still_completes_the_group(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(log=False)
    later = Task(int, args=("1",), delay=3600)
    group = queue.group([Task(int, args=("2",)), later], then=Task(len), on_failure="pass")
    _drain_once = queue.dispatch()
    assert _drain_once
    assert later.cancel()
    _drain(queue)
    assert group.result(0) == 2


def test_chained_jobs_are_members(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(log=False)

    def add_one(args: dowork.ArgsMap) -> dowork.ArgsMap:
        return {**args, "n": args["n"] + 1}

    def double(args: dowork.ArgsMap) -> dowork.ArgsMap:
        return {**args, "n": args["n"] * 2}

    job = queue.chain("grow", add_one, double)
    group = queue.group(
        [job.task({"n": 1}), job.task({"n": 10})],
        then=Task(lambda results: [r["n"] for r in results]),
    )
    _drain(queue)
    assert group.result(0) == [4, 22]


def test_bad_groups_are_refused(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(log=False)
    member = Task(int)
    with pytest.raises(ValueError, match="on_failure"):
        queue.group([member], then=Task(len), on_failure="ignore")  # type: ignore[arg-type]  # no such mode
    with pytest.raises(ValueError, match="at least one"):
        queue.group([], then=Task(len))
    with pytest.raises(ValueError, match="twice"):
        queue.group([member, member], then=Task(len))
    assert not member.frozen  # nothing was enqueued


def test_group_tasks_cannot_be_de_duplicated(durable_queue: Callable[..., Queue]) -> None:
    queue = durable_queue()
    tasks = _declare(queue, [])
    keyed = tasks["square"].task(1).configure(idempotency_key="once")
    with pytest.raises(ValueError, match="idempotency_key"):
        queue.group([keyed], then=tasks["total"].task("x"))
    assert not keyed.frozen


# -- on every backend ----------------------------------------------------------------------


def _declare(queue: Queue, log: list[str]) -> dict[str, Any]:
    @queue.task(name="square")
    def square(n: int) -> int:
        log.append(f"square {n}")
        return n * n

    @queue.task(name="fail")
    def fail(n: int) -> int:
        raise ValueError(f"bad {n}")

    @queue.task(name="total")
    def total(results: list[Any], label: str) -> str:
        log.append("total")
        shown = [r if isinstance(r, int) else type(r).__name__ for r in results]
        return f"{label}: {shown}"

    return {"square": square, "fail": fail, "total": total}


def test_durable_groups_run_the_callback_once(durable_queue: Callable[..., Queue]) -> None:
    queue = durable_queue()
    log: list[str] = []
    tasks = _declare(queue, log)
    group = queue.group(
        [tasks["square"].task(n) for n in range(4)], then=tasks["total"].task("squares")
    )
    _drain(queue)
    assert group.result(0) == "squares: [0, 1, 4, 9]"
    assert log.count("total") == 1
    assert log[-1] == "total"
    assert queue.status(group.id) is TaskStatus.SUCCEEDED


def test_durable_group_policies(durable_queue: Callable[..., Queue]) -> None:
    queue = durable_queue()
    log: list[str] = []
    tasks = _declare(queue, log)
    failing = queue.group(
        [tasks["square"].task(2), tasks["fail"].task(1)], then=tasks["total"].task("x")
    )
    passing = queue.group(
        [tasks["square"].task(3), tasks["fail"].task(2)],
        then=tasks["total"].task("y"),
        on_failure="pass",
    )
    _drain(queue)
    assert "total" in log
    assert passing.result(0) == "y: [9, 'TaskFailed']"
    assert queue.status(failing.id) is TaskStatus.FAILED
    with pytest.raises(dowork.GroupFailed, match="1 of 2 group member"):
        failing.result(0)  # this process's handle holds the error itself


def test_a_lost_release_is_covered_by_the_callbacks_own_check(
    durable_queue: Callable[..., Queue],
) -> None:
    """A member finished without a worker releasing the callback (cancelled by id here)."""
    clock = FakeClock()
    queue = durable_queue(clock=clock)
    log: list[str] = []
    tasks = _declare(queue, log)
    later = tasks["square"].task(5).configure(delay=3600)
    group = queue.group(
        [tasks["square"].task(1), later],
        then=tasks["total"].task("z"),
        on_failure="pass",
        check_every=30,
    )
    queue.dispatch()  # the first member runs; the other waits an hour
    assert queue.cancel(later.id)
    queue.dispatch()
    assert queue.status(group.id) is not TaskStatus.SUCCEEDED
    clock.advance(30)
    _drain(queue)
    stored = queue.get(group.id)
    assert stored is not None
    assert stored.result(0) == "z: [1, 'TaskFailed']"


@pytest.mark.timeout(60)
def test_two_workers_on_one_file_run_the_callback_exactly_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'groups.sqlite3'}"
    settings = DurableSettings(lease=5.0, maintenance=0.5)
    workers = [Queue("jobs", backend=url, durable=settings, log=False) for _ in range(2)]
    log: list[str] = []
    lock = threading.Lock()
    for worker in workers:

        @worker.task(name="square")
        def square(n: int) -> int:
            time.sleep(0.002)
            return n * n

        @worker.task(name="total")
        def total(results: list[int]) -> int:
            with lock:
                log.append("total")
            return sum(results)

    first = workers[0]
    square_fn, total_fn = first.registry.get("square"), first.registry.get("total")
    assert square_fn is not None
    assert total_fn is not None
    members = [square_fn.task(n) for n in range(40)]
    try:
        for worker in workers:
            worker.start()
        group = first.group(members, then=total_fn.task())
        assert group.result(30) == sum(n * n for n in range(40))
    finally:
        for worker in workers:
            worker.shutdown(timeout=10)
    assert log == ["total"]
