"""A durable queue whose worker exports its spans as JSON lines to ``DOWORK_TEST_SPANS``."""

from __future__ import annotations

import os

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import dowork
from dowork import DurableSettings
from dowork.tracing import TracingHooks

provider = TracerProvider()
_spans = os.environ.get("DOWORK_TEST_SPANS")
if _spans:
    _out = open(_spans, "a")  # noqa: SIM115 (open for the life of the worker process)
    provider.add_span_processor(
        SimpleSpanProcessor(
            ConsoleSpanExporter(out=_out, formatter=lambda span: span.to_json(indent=None) + "\n")
        )
    )

queue = dowork.Queue(
    "traced",
    backend=os.environ.get("DOWORK_TEST_BACKEND", "sqlite:///traced.sqlite3"),
    durable=DurableSettings(lease=2.0, maintenance=0.25),
    hooks=[TracingHooks(provider)],
    log=False,
)


@queue.task(name="flaky", retries=2, backoff="fixed", base_delay=0.01)
def flaky(fail: int) -> str:
    """Fail ``fail`` times, then succeed."""
    attempt = dowork.current_task().attempts
    if attempt <= fail:
        raise ConnectionError(f"attempt {attempt}")
    return f"ok after {attempt}"
