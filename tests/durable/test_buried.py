"""Records dead-lettered unread reach ``Hooks.on_buried`` and ``queue_tasks_buried_total``.

Once per record, on every store: records this worker cannot decode (it dead-letters them
itself) and records the store cannot read (it dead-letters them during a claim, a settlement
or the reaper), written by hand as another program or a person would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from dowork import FakeClock, Hooks, Queue, Task
from dowork.backends import Backend, Record
from dowork.codec import MAX_DEPTH
from dowork.metrics import PrometheusHooks
from tests.durable.reads import records_of

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
