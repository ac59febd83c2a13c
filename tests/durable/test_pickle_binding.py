"""Signed pickle bound to its task (its registered name and its id), on every durable store
(the in-process ``MemoryBackend``, SQLite and Redis)."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dowork import DurableSettings, FakeClock, Queue
from dowork.backends import Backend, Record
from dowork.codec import JSONCodec, PickleCodec, decode_for, encode_for, task_context
from dowork.errors import DecodeError
from tests.durable.reads import records_of

KEY = "a-test-key-of-32-bytes-for-hmac!"


# -- the pickle signature covers the task's name and id ----------------------------------------


def test_a_signed_payload_moved_to_another_id_or_name_is_dead_lettered(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    codec = PickleCodec(key=KEY)
    queue = queues(store, codec=codec, clock=FakeClock())
    ran: list[tuple[str, Any]] = []
    echo = queue.task(name="echo")(lambda v: ran.append(("echo", v)))
    queue.task(name="other")(lambda v: ran.append(("other", v)))
    original = echo.submit(frozenset({1}))
    stored = records_of(queue)[original.id].payload
    signed_for_victim = encode_for(codec, {"a": [2], "k": {}}, "echo", "victim")
    now = time.time()
    copies = [
        Record("copy-of-original", "jobs", "echo", stored, 0, now),  # another id
        Record("victim", "jobs", "other", signed_for_victim, 0, now),  # another name
    ]
    backend = queue.backend
    assert backend is not None
    queue._engine.run_on_home(backend.push(copies))
    while queue.dispatch():
        pass
    assert ran == [("echo", frozenset({1}))]  # only the genuine record ran
    got = {i: (r.status, r.reason) for i, r in records_of(queue).items()}
    assert got == {
        original.id: ("succeeded", None),
        "copy-of-original": ("dead", "bad_signature"),
        "victim": ("dead", "bad_signature"),
    }
    assert "signed for another task" in (records_of(queue)["victim"].error or "")


def test_bound_signatures_round_trip_and_refuse_every_other_context() -> None:
    codec = PickleCodec(key=KEY)
    value = {"a": [(1, "x")], "k": {}}
    data = encode_for(codec, value, "send", "id-1")
    assert decode_for(codec, data, "send", "id-1") == value
    for name, task_id in [("send", "id-2"), ("sendx", "id-1"), ("", "id-1"), ("sen", "did-1")]:
        with pytest.raises(DecodeError) as caught:
            decode_for(codec, data, name, task_id)
        assert caught.value.reason == "bad_signature"
    # Length-prefixed: a shifted boundary between name and id is another context.
    assert task_context("ab", "c") != task_context("a", "bc")
    # Results are signed with an empty context: a plain encode/decode pair still works.
    assert codec.decode(codec.encode([1, 2])) == [1, 2]
    with pytest.raises(DecodeError):
        codec.decode(data)  # arguments are bound: not readable as an unbound value


def test_old_unbound_signatures_are_refused_with_a_reason(tmp_path: Path) -> None:
    """dwp1 (signed without name and id) could be copied anywhere: it is refused, not read."""
    import hashlib
    import hmac

    body = pickle.dumps({"a": [1], "k": {}})
    old = b"dwp1" + hmac.new(KEY.encode(), body, hashlib.sha256).digest() + body
    with pytest.raises(DecodeError, match="dwp1") as caught:
        decode_for(PickleCodec(key=KEY), old, "echo", "x")
    assert caught.value.reason == "bad_signature"


def test_json_payloads_are_unchanged() -> None:
    codec = JSONCodec()
    value = {"a": [1, "é"], "k": {"x": None}}
    assert (
        encode_for(codec, value, "echo", "id")
        == codec.encode(value)
        == ('{"a":[1,"é"],"k":{"x":null}}'.encode())
    )
    assert decode_for(codec, codec.encode(value), "anything", "else") == value


@pytest.mark.realtime
def test_a_pickled_schedule_fires_once_across_workers_and_runs(
    store: Backend, queues: Callable[..., Queue]
) -> None:
    """Each worker fires a schedule under one id derived from its content: still one id when
    the payload is signed for it, so two workers store one firing, which decodes and runs."""
    clock = FakeClock(1_700_000_000.0)
    runs: list[str] = []
    workers = []
    made = []
    for _ in range(2):
        queue = queues(
            store,
            codec=PickleCodec(key=KEY),
            clock=clock,
            durable=DurableSettings(lease=2.0, maintenance=0.25),
        )
        tick = queue.task(name="tick")(runs.append)
        workers.append(queue.every(60, tick, "a"))
        made.append(queue)
        queue.start()
    clock.set(1_700_000_000.0 + 61)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
        runs and sum(s.fired_elsewhere for s in workers) + sum(s.runs for s in workers) >= 2
    ):
        time.sleep(0.01)
    time.sleep(0.2)
    assert runs == ["a"]  # decoded (not dead-lettered as bad_signature) and run once
    assert sum(s.runs for s in workers) == 1
    statuses = [r.status for r in records_of(made[0]).values()]
    assert statuses == ["succeeded"], statuses
