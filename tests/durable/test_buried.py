"""Records dead-lettered unread reach ``Hooks.on_buried`` and ``queue_tasks_buried_total``.

Once per record, on every store: records this worker cannot decode (it dead-letters them
itself) and records the store cannot read (it dead-letters them during a claim, a settlement
or the reaper), written by hand as another program or a person would.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

import dowork
from dowork import DurableSettings, FakeClock, Hooks, Queue, Task
from dowork.backends import (
    Backend,
    ClaimRequest,
    Outcome,
    Record,
    RedisBackend,
    Settlement,
    SQLiteBackend,
)
from dowork.codec import MAX_DEPTH, JSONCodec
from dowork.metrics import PrometheusHooks
from tests.backends.test_sqlite_poison import legacy_file
from tests.durable.reads import records_of
from tests.redis_server import RedisServer

NOW = 1000.0


class Burials(Hooks):
    """The ``on_buried`` and ``on_failure`` events a queue's hooks saw."""

    def __init__(self) -> None:
        self.buried: list[tuple[str, str, str]] = []
        self.failed: list[str] = []

    def on_buried(self, queue: str, task_id: str, reason: str) -> None:
        self.buried.append((queue, task_id, reason))

    def on_failure(self, task: Task[Any], error: BaseException) -> None:
        self.failed.append(task.id)


def record(task_id: str, payload: bytes, name: str = "echo", **more: Any) -> Record:
    return Record(task_id, "jobs", name, payload, NOW - 1, NOW - 1, **more)


def buried_metric(metrics: PrometheusHooks, reason: str) -> float | None:
    labels = {"queue": "jobs", "reason": reason}
    return metrics.registry.get_sample_value("queue_tasks_buried_total", labels)


def drain(queue: Queue) -> None:
    for _ in range(10):
        if not queue.dispatch():
            return
    raise AssertionError("the queue did not drain")


def test_records_a_worker_cannot_decode_are_told_once_each(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    seen, metrics = Burials(), PrometheusHooks()
    queue = queues(store, clock=FakeClock(NOW), hooks=[seen, metrics])
    queue.task(name="echo")(lambda value=None: value)
    deep = b'{"a":[' + b"[" * (MAX_DEPTH + 5) + b"1" + b"]" * (MAX_DEPTH + 5) + b'],"k":{}}'
    records = [
        record("not-json", b"not json"),  # undecodable (DecodeError)
        record("no-args", b'{"a": 1, "k": {}}'),  # undecodable (TypeError)
        record("bad-options", b'{"a": [], "k": {}}', options="[1]"),  # undecodable
        record("too-deep", deep),  # malformed (TooDeeplyNested)
        record("unknown", b'{"a": [], "k": {}}', name="gone"),  # dead, but it could be read
        record("healthy", b'{"a": [7], "k": {}}'),
    ]
    queue._engine.run_on_home(store.push(records))
    drain(queue)
    assert sorted(seen.buried) == [
        ("jobs", "bad-options", "undecodable"),
        ("jobs", "no-args", "undecodable"),
        ("jobs", "not-json", "undecodable"),
        ("jobs", "too-deep", "malformed"),
    ]
    assert buried_metric(metrics, "undecodable") == 3
    assert buried_metric(metrics, "malformed") == 1
    assert Counter(seen.failed) == Counter(  # on_failure sees them as before, through stand-ins
        ["not-json", "no-args", "bad-options", "too-deep", "unknown"]
    )
    found = records_of(queue)
    assert {i: (r.status, r.reason) for i, r in found.items()} == {
        "not-json": ("dead", "undecodable"),
        "no-args": ("dead", "undecodable"),
        "bad-options": ("dead", "undecodable"),
        "too-deep": ("dead", "malformed"),
        "unknown": ("dead", "unknown_task"),
        "healthy": ("succeeded", None),
    }


def watched(
    queues: Callable[..., Queue], backend: Backend, clock: FakeClock
) -> tuple[Queue, Burials, PrometheusHooks]:
    """A queue on ``backend`` with an ``echo`` task, its ``on_buried`` events and metrics."""
    seen, metrics = Burials(), PrometheusHooks()
    settings = DurableSettings(lease=30, maintenance=5)
    queue = queues(backend, clock=clock, hooks=[seen, metrics], durable=settings)
    queue.task(name="echo")(lambda value=None: value)
    return queue, seen, metrics


def test_records_the_sqlite_store_buries_are_told_once_each(
    tmp_path: Path, queues: Callable[..., Queue]
) -> None:
    """Rows written by another program (a file of the shape before STRICT tables takes any
    value): buried by a claim (text that is not UTF-8, a count that is not a number), by the
    reaper (a run_at never due, which no claim reads) and by a settlement (an outcome whose
    text SQLite cannot store)."""
    path = tmp_path / "legacy.db"
    legacy_file(path)
    queue, seen, metrics = watched(queues, SQLiteBackend(path, poll_interval=0.01), FakeClock(NOW))

    @queue.task(name="unstorable", retries=0)
    def unstorable() -> None:
        raise ValueError("a lone surrogate: \udc80")  # (the error text cannot be stored)

    insert = (
        "INSERT INTO dowork_tasks (id, queue, name, payload, status, run_at, created_at,"
        " updated_at) VALUES (?, 'jobs', 'echo', ?, 'pending', ?, ?, ?)"
    )
    payload = b'{"a": [1], "k": {}}'
    conn = sqlite3.connect(path)
    with conn:
        for task_id in ("healthy", "bad-name", "bad-crashes", "never"):
            conn.execute(insert, (task_id, payload, NOW - 1, NOW - 1, NOW - 1))
        conn.execute("UPDATE dowork_tasks SET name = CAST(x'c3' AS TEXT) WHERE id = 'bad-name'")
        conn.execute("UPDATE dowork_tasks SET crashes = 'many' WHERE id = 'bad-crashes'")
        conn.execute("UPDATE dowork_tasks SET run_at = 'soon' WHERE id = 'never'")
    conn.close()
    handles = [unstorable.submit() for _ in range(3)]  # (settled in one batch)
    expected = ["bad-name", "bad-crashes", "never", *(h.id for h in handles)]
    drain(queue)
    assert sorted(seen.buried) == sorted(("jobs", i, "malformed") for i in expected)
    assert buried_metric(metrics, "malformed") == 6
    found = records_of(queue)
    assert {i: (r.status, r.reason) for i, r in found.items()} == {
        "healthy": ("succeeded", None),
        **{i: ("dead", "malformed") for i in expected},
    }
    drain(queue)  # nothing buried twice
    assert len(seen.buried) == 6


def test_records_the_redis_store_buries_are_told_once_each(
    redis_server: RedisServer, queues: Callable[..., Queue]
) -> None:
    """Hashes changed by hand: buried by a claim (in its script: a priority that is not a
    number, an inbox entry of no usable time; after it, in Python: a name that is not UTF-8),
    by the reaper (a running record spoiled, whose worker is gone) and by a settlement (a
    record spoiled while it ran)."""
    prefix = f"buried-{uuid.uuid4().hex[:10]}"
    admin = redis.Redis.from_url(redis_server.url)
    clock = FakeClock(NOW)
    queue, seen, metrics = watched(queues, RedisBackend(redis_server.url, prefix=prefix), clock)

    def spoil(task_id: str, field: str, value: bytes) -> None:
        admin.hset(f"{prefix}:task:{task_id}", field, value)

    @queue.task(name="spoiled")
    def spoiled() -> None:
        task = dowork.current_task()
        assert task is not None
        spoil(task.id, "created_at", b"yesterday")  # changed by hand while it runs

    other = RedisBackend(redis_server.url, prefix=prefix)  # a worker that dies

    async def elsewhere() -> None:
        await other.push([record("lapsed", b'{"a": [], "k": {}}')])
        (claimed,) = await other.claim(ClaimRequest("jobs", NOW, 1, 30, "gone"))
        await other.settle([Settlement("lapsed", claimed.attempts, Outcome.STARTED, NOW)])
        await other.close()

    queue._engine.run_on_home(elsewhere())
    spoil("lapsed", "crashes", b"many")
    backend = queue.backend
    assert backend is not None
    payload = b'{"a": [1], "k": {}}'
    records = [record(i, payload) for i in ("healthy", "bad-priority", "bad-name")]
    queue._engine.run_on_home(backend.push(records))
    spoil("bad-priority", "priority", b"high")
    spoil("bad-name", "name", b"\xff\xfe")
    entry = b"rbad-time\0echo\0nan\0\0{}"  # (see inbox.lua: stored as junk-<n>)
    admin.rpush(f"{prefix}:q:jobs:inbox", entry)
    handle = spoiled.submit()
    assert queue.dispatch()  # "lapsed" still holds its lease
    clock.advance(60)  # it lapses: the reaper finds it
    drain(queue)
    found = records_of(queue)
    (junk,) = [i for i in found if i.startswith("junk-")]
    expected = ("bad-priority", "bad-name", junk, "lapsed", handle.id)
    assert sorted(seen.buried) == sorted(("jobs", i, "malformed") for i in expected)
    assert buried_metric(metrics, "malformed") == 5
    assert {i: (r.status, r.reason) for i, r in found.items()} == {
        "healthy": ("succeeded", None),
        **{i: ("dead", "malformed") for i in expected},
    }
    drain(queue)  # nothing buried twice
    assert len(seen.buried) == 5
    admin.close()


class IntKeys(JSONCodec):
    """JSON whose keyword names ``"#<n>"`` come back as the integer ``n``, as pickle can."""

    def decode(self, data: bytes) -> Any:
        value = super().decode(data)
        if isinstance(value, dict) and isinstance(value.get("k"), dict):
            value["k"] = {int(k[1:]) if k.startswith("#") else k: v for k, v in value["k"].items()}
        return value


def test_a_stored_keyword_that_is_not_a_string_is_malformed(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    """A decoded payload with a non-string keyword is dead-lettered, and the rest run."""
    seen = Burials()
    queue = queues(store, clock=FakeClock(NOW), hooks=[seen], codec=IntKeys())
    queue.task(name="echo")(lambda value=None: value)
    records = [
        record("int-keyword", b'{"a": [], "k": {"#1": 2}}'),
        record("healthy", b'{"a": [], "k": {"value": 7}}'),
    ]
    queue._engine.run_on_home(store.push(records))
    drain(queue)
    assert seen.buried == [("jobs", "int-keyword", "malformed")]
    found = records_of(queue)
    assert {i: (r.status, r.reason) for i, r in found.items()} == {
        "int-keyword": ("dead", "malformed"),
        "healthy": ("succeeded", None),
    }
