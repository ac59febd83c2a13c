"""Decoding limits (nesting depth, size) hold at ``submit()`` and again when a worker claims.

A record that breaks them, or that cannot be decoded at all, is dead-lettered ``malformed``
at once: never left ``running``, and its neighbours start normally, charged nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dowork
from dowork import DurableSettings, FakeClock, Queue, TaskStatus
from dowork.backends import Backend, Record, SQLiteBackend
from dowork.codec import MAX_DEPTH, check_depth
from tests.durable.conftest import store_of
from tests.durable.reads import records_of


def nested(depth: int) -> Any:
    """A value nesting ``depth`` lists (0: a scalar)."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def deep_json(depth: int) -> bytes:
    """A stored payload whose one argument nests ``depth`` lists, written as raw JSON."""
    return b'{"a":[' + b"[" * depth + b"1" + b"]" * depth + b'],"k":{}}'


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return store_of(str(request.param), request, tmp_path)


@pytest.fixture
def queues(queues: Callable[..., Queue]) -> Callable[..., Queue]:
    """The shared ``queues``, on a fake clock (at 1000) unless given a clock."""

    def make(backend: Backend | str, **options: Any) -> Queue:
        options.setdefault("clock", FakeClock(1000.0))
        return queues(backend, **options)

    return make


def push(queue: Queue, records: list[Record]) -> None:
    backend = queue.backend
    assert backend is not None
    queue._engine.run_on_home(backend.push(records))


def drain(queue: Queue) -> None:
    for _ in range(20):
        if not queue.dispatch():
            return
    raise AssertionError("the queue did not drain")


# -- at submit --------------------------------------------------------------------------------


def test_submit_refuses_arguments_nested_over_the_limit(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    queue = queues(store)
    echo = queue.task(name="echo")(lambda value, other=None: "ok")
    assert MAX_DEPTH == 100
    with pytest.raises(dowork.TooDeeplyNested) as caught:
        echo.submit(nested(MAX_DEPTH + 1))
    assert isinstance(caught.value, dowork.NotSerializable)  # what callers already catch
    assert caught.value.limit == MAX_DEPTH
    assert "100 levels" in str(caught.value)
    with pytest.raises(dowork.TooDeeplyNested):
        echo.submit(1, other={"k": nested(MAX_DEPTH)})  # the dict is one level more
    with pytest.raises(dowork.TooDeeplyNested):
        echo.submit(nested(1000))  # the case that used to be stored and stall a worker
    assert records_of(queue) == {}  # nothing was stored
    fits = echo.submit(nested(MAX_DEPTH))
    drain(queue)
    assert fits.result(timeout=5) == "ok"


def test_submit_refuses_a_cycle_and_deep_tuples_or_dicts(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    queue = queues(store)
    echo = queue.task(name="echo")(lambda value: "ok")
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(dowork.NotSerializable):
        echo.submit(loop)
    deep: Any = 1
    for i in range(MAX_DEPTH + 1):
        deep = (deep,) if i % 2 else {"k": deep}
    with pytest.raises(dowork.TooDeeplyNested):
        echo.submit(deep)
    assert records_of(queue) == {}


def test_check_depth_is_iterative_and_visits_shared_values_once() -> None:
    check_depth([nested(MAX_DEPTH)])
    with pytest.raises(dowork.TooDeeplyNested):
        check_depth([nested(100_000)])  # no RecursionError: the walk is iterative
    ladder: Any = [1]
    for _ in range(60):  # 2**60 paths, 61 values: each visited about once
        ladder = [ladder, ladder]
    started = time.monotonic()
    check_depth([ladder])
    assert time.monotonic() - started < 5.0
    check_depth(["text", 1, 2.5, None, b"bytes"])
    with pytest.raises(dowork.TooDeeplyNested):
        check_depth([{"a": nested(10)}], limit=10)


# -- at claim ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        (deep_json(MAX_DEPTH + 1), "TooDeeplyNested"),
        (deep_json(1_000), "TooDeeplyNested|RecursionError"),  # depends on the stack left
        (deep_json(200_000), "RecursionError"),  # the decoder itself gives up
        (b'{"a":[],"k":{"x":' + b"[" * 500 + b"]" * 500 + b"}}", "TooDeeplyNested"),
        (b'{"a":[],"k":{"x":[[[1]]]},"h":{"t":"v"}}', ""),  # shallow: fine
    ],
)
def test_a_record_too_deep_to_read_is_dead_lettered_malformed(
    store: Backend, queues: Callable[..., Queue], payload: bytes, what: str
) -> None:
    queue = queues(store, durable=DurableSettings(batch=64))
    echo = queue.task(name="echo")(lambda *args, **kwargs: "ok")
    before = [echo.submit(i) for i in range(5)]
    now = queue._engine.clock.now()
    push(queue, [Record("poison", "jobs", "echo", payload, now, now)])
    after = [echo.submit(i) for i in range(5)]
    drain(queue)
    assert [t.result(timeout=5) for t in before + after] == ["ok"] * 10
    records = records_of(queue)
    assert all(records[t.id].crashes == 0 for t in before + after)
    poison = records["poison"]
    assert poison.crashes == 0
    if not what:
        assert poison.status == "succeeded"
        return
    assert (poison.status, poison.reason) == ("dead", "malformed"), poison
    assert any(name in (poison.error or "") for name in what.split("|"))
    assert queue.status("poison") is TaskStatus.DEAD


def test_a_stored_payload_over_max_payload_is_malformed_at_claim(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    queue = queues(store, durable=DurableSettings(max_payload=1024))
    echo = queue.task(name="echo")(lambda value: len(value))
    with pytest.raises(dowork.PayloadTooLarge):
        echo.submit("x" * 2000)
    now = queue._engine.clock.now()
    big = json.dumps({"a": ["x" * 2000], "k": {}}).encode()
    push(queue, [Record("big", "jobs", "echo", big, now, now)])
    fine = echo.submit("x" * 10)
    drain(queue)
    assert fine.result(timeout=5) == 10
    record = records_of(queue)["big"]
    assert (record.status, record.reason) == ("dead", "malformed")
    assert "PayloadTooLarge" in (record.error or "")


@pytest.mark.parametrize(
    "options",
    [
        '{"retries": "many"}',
        '{"within": "soon"}',
        '{"within": -1}',
        '{"expires_at": "tomorrow"}',
        '{"backoff": "sideways"}',
        "[1, 2]",
        '{"within": NaN}',
        '{"retries": -3}',
    ],
)
def test_stored_options_of_the_wrong_type_dead_letter_the_record_alone(
    store: Backend, queues: Callable[..., Queue], options: str
) -> None:
    queue = queues(store)
    echo = queue.task(name="echo")(lambda value: value)
    before = echo.submit(1)
    now = queue._engine.clock.now()
    push(queue, [Record("odd", "jobs", "echo", b'{"a":[2],"k":{}}', now, now, options=options)])
    after = echo.submit(3)
    drain(queue)
    assert (before.result(timeout=5), after.result(timeout=5)) == (1, 3)
    record = records_of(queue)["odd"]
    assert record.status == "dead", record
    assert record.reason in ("malformed", "undecodable")
    assert record.crashes == 0


def test_a_running_worker_dead_letters_a_deep_record_and_keeps_going(tmp_path: Path) -> None:
    """The case of the issue: a started worker, a 1,000-deep argument, neighbours in its batch."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    queue = Queue("jobs", backend=url, log=False, durable=DurableSettings(lease=2, maintenance=1))
    try:
        echo = queue.task(name="echo")(lambda value: value)
        first = [echo.submit(i) for i in range(20)]
        now = time.time()
        asyncio.run(
            _push(tmp_path / "w.db", [Record("deep", "jobs", "echo", deep_json(1000), now, now)])
        )
        last = [echo.submit(i) for i in range(20)]
        queue.start()
        assert [t.result(timeout=20) for t in first + last] == list(range(20)) * 2
        deadline = time.monotonic() + 20
        while queue.status("deep") is not TaskStatus.DEAD and time.monotonic() < deadline:
            time.sleep(0.02)
        assert queue.status("deep") is TaskStatus.DEAD
        records = asyncio.run(_get(tmp_path / "w.db", [t.id for t in first + last] + ["deep"]))
        assert records["deep"].reason == "malformed"
        assert {r.crashes for r in records.values()} == {0}
    finally:
        queue.shutdown(timeout=5)


async def _push(path: Path, records: list[Record]) -> None:
    backend = SQLiteBackend(path)
    try:
        await backend.push(records)
    finally:
        await backend.close()


async def _get(path: Path, ids: list[str]) -> dict[str, Record]:
    backend = SQLiteBackend(path)
    try:
        return {r.id: r for r in await backend.get(ids)}
    finally:
        await backend.close()
