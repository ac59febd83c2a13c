"""OpenTelemetry tracing: enqueue, attempts and outcome form one trace, across processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from dowork import FakeClock, Queue, Task
from dowork.tracing import TracingHooks

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _flaky() -> Callable[[], str]:
    calls = [0]

    def flaky() -> str:
        calls[0] += 1
        if calls[0] == 1:
            raise ConnectionError("first attempt")
        return "ok"

    return flaky


def test_enqueue_attempts_and_outcome_share_one_trace(
    make_queue: Callable[..., Queue],
    clock: FakeClock,
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = traced
    queue = make_queue(hooks=[TracingHooks(provider)], log=False)
    with provider.get_tracer("web").start_as_current_span("POST /upload") as request:
        task = queue.enqueue(Task(_flaky(), retries=1, backoff="fixed", base_delay=5))
    assert "traceparent" in task.headers
    queue.dispatch()
    clock.advance(5)
    queue.dispatch()
    assert task.result(0) == "ok"

    spans = {s.name: s for s in exporter.get_finished_spans() if not s.name.startswith("run")}
    runs = [s for s in exporter.get_finished_spans() if s.name.startswith("run")]
    enqueue = spans[f"enqueue {task.name}"]
    trace_id = request.get_span_context().trace_id
    assert enqueue.kind is SpanKind.PRODUCER
    assert enqueue.parent is not None
    assert enqueue.parent.span_id == request.get_span_context().span_id
    assert [s.attributes["dowork.attempt"] for s in runs if s.attributes] == [1, 2]
    first, second = runs
    for span in (enqueue, first, second):
        assert span.context is not None
        assert span.context.trace_id == trace_id
    for run in runs:
        assert run.kind is SpanKind.CONSUMER
        assert run.parent is not None
        assert run.parent.span_id == enqueue.context.span_id
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes is not None
    assert first.attributes["dowork.outcome"] == "retry"
    assert [e.name for e in first.events] == ["exception"]
    assert second.status.status_code is StatusCode.UNSET
    assert second.attributes is not None
    assert second.attributes["dowork.outcome"] == "succeeded"


def test_a_task_cancelled_before_running_still_ends_its_trace(
    make_queue: Callable[..., Queue], traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = traced
    queue = make_queue(hooks=[TracingHooks(provider)], log=False)
    task = queue.enqueue(Task(lambda: 1, delay=60))
    assert task.cancel()
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == [f"enqueue {task.name}", f"cancelled {task.name}"]
    ended = exporter.get_finished_spans()[1]
    assert ended.attributes is not None
    assert ended.attributes["dowork.outcome"] == "cancelled"


@pytest.mark.timeout(60)
def test_one_trace_from_the_producer_to_a_worker_process(
    tmp_path: Path, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = traced
    backend = f"sqlite:///{tmp_path / 'traced.sqlite3'}"
    spans_file = tmp_path / "spans.jsonl"
    producer = Queue("traced", backend=backend, hooks=[TracingHooks(provider)], log=False)

    @producer.task(name="flaky")
    def flaky(fail: int) -> str:  # only the name matters here: a worker process runs it
        raise AssertionError("runs in the worker")

    environ = dict(os.environ, PYTHONPATH=str(ROOT), DOWORK_TEST_BACKEND=backend)
    environ["DOWORK_TEST_SPANS"] = str(spans_file)
    worker = subprocess.Popen(
        [sys.executable, "-m", "dowork", "worker", "tests.tracing.traced_app:queue"],
        cwd=ROOT,
        env=environ,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with provider.get_tracer("web").start_as_current_span("POST /upload") as request:
            handle = flaky.submit(1)
        assert handle.result(30) == "ok after 2"
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
        producer.shutdown(timeout=5)
    assert worker.returncode == 0, err
    trace_id = f"0x{request.get_span_context().trace_id:032x}"
    remote: list[dict[str, Any]] = [
        json.loads(line) for line in spans_file.read_text().splitlines() if line
    ]
    enqueue: ReadableSpan = next(
        s for s in exporter.get_finished_spans() if s.name.startswith("enqueue")
    )
    assert enqueue.context is not None
    assert [s["attributes"]["dowork.attempt"] for s in remote] == [1, 2]
    for span in remote:
        assert span["context"]["trace_id"] == trace_id
        assert span["parent_id"] == f"0x{enqueue.context.span_id:016x}"
        assert span["attributes"]["messaging.message.id"] == handle.id
    assert [s["attributes"]["dowork.outcome"] for s in remote] == ["retry", "succeeded"]
