"""gotasks' chained jobs: handlers passing an args dict, reentrant steps, the result log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import dowork
from dowork import ArgsMap, ChainFailed, FakeClock, Queue, TaskStatus


def step_one(args: ArgsMap) -> ArgsMap:
    return args | {"one": True}


def step_two(args: ArgsMap) -> ArgsMap:
    assert args["one"] is True  # T55: what step one returned is step two's input
    return args | {"total": args["x"] * 2}


def test_t55_handlers_pass_the_args_dict_along(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    job = queue.chain("double", step_one, step_two)
    task = queue.submit_job("double", {"x": 21})
    other = job.submit({"x": 1})
    queue.dispatch()
    assert task.result(0) == {"x": 21, "one": True, "total": 42}
    assert other.result(0)["total"] == 2


def test_t54_duplicate_job_name_and_unknown_job(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.chain("j", step_one)
    with pytest.raises(ValueError, match="already registered"):
        queue.chain("j", step_two)
    with pytest.raises(dowork.UnknownTask):
        queue.submit_job("nope", {})
    with pytest.raises(ValueError, match="at least one handler"):
        queue.chain("empty")


def test_t56_t57_failed_step_stops_the_chain_and_is_logged(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    ran: list[str] = []

    def first(args: ArgsMap) -> ArgsMap:
        ran.append("first")
        return args | {"seen": 1}

    def broken(args: ArgsMap) -> ArgsMap:
        ran.append("broken")
        raise KeyError("missing")

    def never(args: ArgsMap) -> ArgsMap:
        ran.append("never")
        return args

    queue = make_queue()
    queue.chain("j", first, broken, never)
    task = queue.submit_job("j", {"x": 1})
    queue.dispatch()
    assert ran == ["first", "broken"]
    assert task.status is TaskStatus.FAILED
    log = queue.chain_log(task.id)
    assert log is not None
    assert log.reached == 1
    assert log.handler.endswith("broken")
    assert log.args == {"x": 1, "seen": 1}  # the failed step's input
    assert log.error == "KeyError: 'missing'"
    assert log.started_at == clock.now()
    assert [s.index for s in log.steps] == [0, 1]
    error = task.exception(0)
    assert isinstance(error, dowork.MaxRetriesExceeded)
    assert isinstance(error.last_error, ChainFailed)


def test_t59_t60_reentrant_steps(make_queue: Callable[..., Queue]) -> None:
    calls = {"always": 0, "once": 0}

    def always(args: ArgsMap) -> ArgsMap:
        calls["always"] += 1
        raise OSError

    def once(args: ArgsMap) -> ArgsMap:
        calls["once"] += 1
        if calls["once"] == 1:
            raise OSError
        return args | {"ok": True}

    queue = make_queue()
    queue.chain("a", dowork.reentrant(always, max_times=3, sleep=0))
    queue.chain("b", dowork.reentrant(once, max_times=3, sleep=0), step_one)
    failed = queue.submit_job("a")
    passed = queue.submit_job("b")
    queue.dispatch()
    assert calls["always"] == 3  # exactly max_times calls, then the job fails
    assert failed.status is TaskStatus.FAILED
    log = queue.chain_log(failed.id)
    assert log is not None
    assert log.steps[0].tries == 3
    assert passed.result(0) == {"ok": True, "one": True}


def test_retried_job_resumes_at_the_failed_step(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    """T67: the next attempt starts at the failed handler with its input; done steps are skipped."""
    ran: list[str] = []
    flaky_calls = [0]

    def first(args: ArgsMap) -> ArgsMap:
        ran.append("first")
        return args | {"a": 1}

    def flaky(args: ArgsMap) -> ArgsMap:
        ran.append("flaky")
        flaky_calls[0] += 1
        if flaky_calls[0] == 1:
            raise ConnectionError
        return args | {"b": 2}

    queue = make_queue()
    queue.chain("j", first, flaky, retries=2, backoff="fixed", base_delay=5)
    task = queue.submit_job("j", {})
    queue.dispatch()
    assert task.status is TaskStatus.RETRYING
    clock.advance(5)
    queue.dispatch()
    assert task.result(0) == {"a": 1, "b": 2}
    assert ran == ["first", "flaky", "flaky"]


def test_async_and_mixed_chains(make_queue: Callable[..., Queue]) -> None:
    async def fetch(args: ArgsMap) -> ArgsMap:
        await asyncio.sleep(0)
        return args | {"fetched": True}

    queue = make_queue()
    queue.chain("mixed", fetch, step_one, dowork.reentrant(fetch, max_times=2, sleep=0.001))
    task = queue.submit_job("mixed", {"x": 0})
    queue.dispatch()
    assert task.result(0) == {"x": 0, "fetched": True, "one": True}


def test_handler_must_return_a_dict(make_queue: Callable[..., Queue]) -> None:
    def bad(args: ArgsMap) -> Any:
        return [1, 2]

    queue = make_queue()
    queue.chain("bad", bad)
    task = queue.submit_job("bad")
    queue.dispatch()
    log = queue.chain_log(task.id)
    assert log is not None
    assert "must return a dict" in (log.error or "")


def test_reentrant_validation() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        dowork.reentrant(step_one, max_times=0)
    with pytest.raises(ValueError, match="negative"):
        dowork.reentrant(step_one, sleep=-1)
    with pytest.raises(TypeError):
        dowork.reentrant(42)  # type: ignore[arg-type]  # deliberately not callable
