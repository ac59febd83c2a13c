"""Prometheus metrics, built on hooks, and a small HTTP server to expose them.

``Queue(hooks=[PrometheusHooks()])`` counts every task event under names prefixed ``queue_``
(as the dowork seed does), labelled by queue name, in a registry of your choice (a private
one by default, so tests and several apps never collide). ``serve_metrics()`` serves that
registry on a secondary port, bound to 127.0.0.1 unless told otherwise; port 0 (the default,
as in the seed) lets the kernel pick a free one, which it returns.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .hooks import Hooks
from .task import Task, TaskStatus

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from prometheus_client.metrics_core import Metric

    from .queue import Queue

__all__ = ["BackendCollector", "MetricsServer", "PrometheusHooks", "serve_metrics"]

_ATTEMPT_BUCKETS = (1, 2, 3, 5, 8, 13, 21)
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 900, 1800)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30, 300)


class PrometheusHooks(Hooks):
    """Count task events into Prometheus metrics named ``queue_*``, labelled ``queue``.

    Metrics: ``queue_tasks_enqueued_total``, ``queue_tasks_run_total`` (first attempts),
    ``queue_tasks_retried_total``, ``queue_tasks_completed_total`` (= succeeded + failed),
    ``queue_tasks_succeeded_total``, ``queue_tasks_failed_total`` (failed, cancelled or
    dead-lettered, by ``status``), ``queue_tasks_in_flight`` and ``queue_tasks_pending``
    (gauges), ``queue_task_attempts`` (attempts per finished task, the seed's buckets),
    ``queue_task_duration_seconds`` (each attempt) and ``queue_task_latency_seconds``
    (enqueue to first start).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.enqueued = Counter("queue_tasks_enqueued", "Tasks accepted", ["queue"], registry=r)
        self.run = Counter(
            "queue_tasks_run", "Tasks started (first attempts)", ["queue"], registry=r
        )
        self.retried = Counter(
            "queue_tasks_retried", "Failed attempts retried", ["queue"], registry=r
        )
        self.completed = Counter("queue_tasks_completed", "Tasks finished", ["queue"], registry=r)
        self.succeeded = Counter("queue_tasks_succeeded", "Tasks succeeded", ["queue"], registry=r)
        self.failed = Counter(
            "queue_tasks_failed", "Tasks finished without success", ["queue", "status"], registry=r
        )
        self.in_flight = Gauge(
            "queue_tasks_in_flight", "Attempts running now", ["queue"], registry=r
        )
        self.pending = Gauge(
            "queue_tasks_pending", "Tasks accepted and not finished", ["queue"], registry=r
        )
        self.attempts = Histogram(
            "queue_task_attempts", "Attempts per finished task", ["queue"],
            buckets=_ATTEMPT_BUCKETS, registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "queue_task_duration_seconds", "Duration of each attempt", ["queue"],
            buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "queue_task_latency_seconds", "Time from enqueue to the first start", ["queue"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._enqueued_at: dict[int, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _queue(task: Task[Any]) -> str:
        return task.queue_name or "unknown"

    @staticmethod
    def _local(task: Task[Any]) -> bool:
        """Whether the task lives in memory (a durable queue's pending count is the store's)."""
        engine = task._engine
        return engine is None or not engine.durable

    def on_enqueue(self, task: Task[Any]) -> None:
        """Count the task and remember when it arrived."""
        name = self._queue(task)
        self.enqueued.labels(name).inc()
        if self._local(task):
            self.pending.labels(name).inc()
        with self._lock:
            self._enqueued_at[id(task)] = time.monotonic()

    def before_attempt(self, task: Task[Any]) -> None:
        """Count a start; on the first attempt, observe the enqueue-to-start latency."""
        name = self._queue(task)
        self.in_flight.labels(name).inc()
        if task.attempts == 1:
            self.run.labels(name).inc()
            with self._lock:
                since = self._enqueued_at.pop(id(task), None)
            if since is not None:
                self.latency.labels(name).observe(time.monotonic() - since)

    def after_attempt(self, task: Task[Any], error: BaseException | None, duration: float) -> None:
        """Observe the attempt's duration."""
        name = self._queue(task)
        self.in_flight.labels(name).dec()
        self.duration.labels(name).observe(duration)

    def on_retry(self, task: Task[Any], error: BaseException, delay: float) -> None:
        """Count a retry."""
        self.retried.labels(self._queue(task)).inc()

    def on_success(self, task: Task[Any]) -> None:
        """Count a success."""
        name = self._queue(task)
        self.succeeded.labels(name).inc()
        self._completed(task, name)

    def on_failure(self, task: Task[Any], error: BaseException) -> None:
        """Count a failure (labelled failed, cancelled or dead)."""
        name = self._queue(task)
        status = task.status.value if task.status.final else TaskStatus.FAILED.value
        self.failed.labels(name, status).inc()
        self._completed(task, name)

    def _completed(self, task: Task[Any], name: str) -> None:
        self.completed.labels(name).inc()
        if self._local(task):
            self.pending.labels(name).dec()
        self.attempts.labels(name).observe(task.attempts)
        with self._lock:
            self._enqueued_at.pop(id(task), None)


class MetricsServer:
    """A running metrics HTTP server: ``host``, ``port``, ``url`` and ``close()``."""

    def __init__(self, server: Any, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port: int = server.server_port

    @property
    def url(self) -> str:
        """The address of the ``/metrics`` page."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(
    registry: CollectorRegistry | PrometheusHooks, *, host: str = "127.0.0.1", port: int = 0
) -> MetricsServer:
    """Serve ``registry`` (or a ``PrometheusHooks``' registry) over HTTP in a thread.

    Binds 127.0.0.1 by default (metrics can reveal task names); ``port=0`` picks a free port,
    which the returned server reports.
    """
    if isinstance(registry, PrometheusHooks):
        registry = registry.registry
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread, host)


class BackendCollector(Collector):
    """``queue_tasks{queue,status}``: the durable queues' tasks by status, read from the store.

    Also ``queue_backend_resets_total{queue}`` for backends that detect a wiped store (Redis).

    Every worker process sees the same figures (they come from the shared store), so any one
    scrape shows the whole queue; in-memory queues are skipped (their hooks count them).
    """

    def __init__(self, queues: Sequence[Queue], timeout: float = 2.0) -> None:
        self.queues = list(queues)
        self.timeout = timeout

    def collect(self) -> Iterator[Metric]:
        """Read each durable queue's counts by status (bounded by ``timeout``)."""
        family = GaugeMetricFamily(
            "queue_tasks", "Tasks in the store by status", labels=["queue", "status"]
        )
        for queue in self.queues:
            backend = queue.backend
            if backend is None:
                continue
            try:
                counts = queue._engine.run_on_home(backend.counts(queue.name), self.timeout)
            except Exception:  # a scrape must not fail because the store is slow or down
                continue
            for status, count in sorted(counts.items()):
                family.add_metric([queue.name, status], count)
        yield family
        resets = CounterMetricFamily(
            "queue_backend_resets",
            "Times this process found the store wiped (Redis lost its data: tasks were lost)",
            labels=["queue"],
        )
        for queue in self.queues:
            found = getattr(queue.backend, "resets", None)
            if isinstance(found, int):
                resets.add_metric([queue.name], found)
        yield resets
