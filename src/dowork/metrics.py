"""Prometheus metrics, built on hooks, and a small HTTP server to expose them.

``Queue(hooks=[PrometheusHooks()])`` counts every task event under names prefixed ``queue_``
(as the dowork seed does), labelled by queue name, in a registry of your choice (a private
one by default, so tests and several apps never collide). ``serve_metrics()`` serves that
registry on a secondary port, bound to 127.0.0.1 unless told otherwise; port 0 (the default,
as in the seed) lets the kernel pick a free one, which it returns.

prometheus_client (and the HTTP server modules it brings) is imported only when a registry is
made or served: counting needs none of it, so ``dowork worker`` starts its queues first and
serves its metrics a moment later, on a socket it bound before.
"""

from __future__ import annotations

import socket
import threading
import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from ._metric_counts import (
    ATTEMPT_BUCKETS,
    DURATION_BUCKETS,
    FAILED,
    LATENCY_BUCKETS,
    Counts,
    HooksCollector,
    observe,
)
from .backends.extras import StoreExtras
from .hooks import Hooks
from .task import Task

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector

    from .queue import Queue
else:
    Collector = object  # prometheus_client's Collector is an ABC asking for collect() only

__all__ = ["BackendCollector", "MetricsServer", "PrometheusHooks", "serve_metrics"]

_get_ident = threading.get_ident


class PrometheusHooks(Hooks):
    """Count task events into Prometheus metrics named ``queue_*``, labelled ``queue``.

    Metrics: ``queue_tasks_enqueued_total``, ``queue_tasks_run_total`` (first attempts),
    ``queue_tasks_retried_total``, ``queue_tasks_completed_total`` (= succeeded + failed),
    ``queue_tasks_succeeded_total``, ``queue_tasks_failed_total`` (failed, cancelled or
    dead-lettered, by ``status``), ``queue_tasks_buried_total`` (records dead-lettered unrun
    because they could not be read, by the worker or by the store, by ``reason``: see
    ``Hooks.on_buried``),
    ``queue_tasks_in_flight`` and ``queue_tasks_pending``
    (gauges), ``queue_task_attempts`` (attempts per finished task, the seed's buckets),
    ``queue_task_duration_seconds`` (each attempt) and ``queue_task_latency_seconds``
    (enqueue to first start).

    The hooks count into plain integers, per thread and queue (a task event costs about a
    microsecond, where prometheus_client's labelled children and locks cost about twenty);
    a collector in ``registry`` turns them into the metrics when it is scraped.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._registry = registry
        self._counts: dict[tuple[int, str], Counts] = {}
        self._enqueued_at: dict[int, float] = {}
        if registry is not None:
            registry.register(HooksCollector(self._counts))

    @property
    def registry(self) -> CollectorRegistry:
        """The registry the metrics are in (a private one, made on first use, by default)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry()
            registry.register(HooksCollector(self._counts))
            self._registry = registry
        return self._registry

    def _for(self, task: Task[Any]) -> Counts:
        """The figures of the task's queue that the calling thread counts into."""
        engine = task._engine
        key = (_get_ident(), engine.name if engine is not None else "unknown")
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = Counts()
        return counts

    @property
    def counted(self) -> bool:
        """Whether any event was counted yet."""
        return bool(self._counts)

    @staticmethod
    def _local(task: Task[Any]) -> bool:
        """Whether the task lives in memory (a durable queue's pending count is the store's)."""
        engine = task._engine
        return engine is None or not engine.durable

    def on_enqueue(self, task: Task[Any]) -> None:
        """Count the task and remember when it arrived."""
        counts = self._for(task)
        counts.enqueued += 1
        if self._local(task):
            counts.accepted += 1
        self._enqueued_at[id(task)] = time.monotonic()

    def before_attempt(self, task: Task[Any]) -> None:
        """Count a start; on the first attempt, observe the enqueue-to-start latency."""
        counts = self._for(task)
        counts.began += 1
        if task._attempts == 1:
            counts.run += 1
            if self._enqueued_at:
                since = self._enqueued_at.pop(id(task), None)
                if since is not None:
                    observe(counts.latency, LATENCY_BUCKETS, time.monotonic() - since)

    def after_attempt(self, task: Task[Any], error: BaseException | None, duration: float) -> None:
        """Observe the attempt's duration."""
        counts = self._for(task)
        counts.ended += 1
        histogram = counts.duration  # observe(), inline: this runs for every attempt
        histogram.counts[bisect_left(DURATION_BUCKETS, duration)] += 1
        histogram.sum += duration

    def on_retry(self, task: Task[Any], error: BaseException, delay: float) -> None:
        """Count a retry."""
        self._for(task).retried += 1

    def on_success(self, task: Task[Any]) -> None:
        """Count a success."""
        counts = self._for(task)
        counts.succeeded += 1
        self._completed(task, counts)

    def on_failure(self, task: Task[Any], error: BaseException) -> None:
        """Count a failure (labelled failed, cancelled or dead)."""
        counts = self._for(task)
        status = task.status
        label = status.value if status.final else FAILED
        counts.failed[label] = counts.failed.get(label, 0) + 1
        self._completed(task, counts)

    def on_buried(self, queue: str, task_id: str, reason: str) -> None:
        """Count a record dead-lettered unread (by ``reason``)."""
        key = (_get_ident(), queue)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = Counts()
        counts.buried[reason] = counts.buried.get(reason, 0) + 1

    def _completed(self, task: Task[Any], counts: Counts) -> None:
        engine = task._engine
        if engine is None or not engine.durable:  # in memory: the pending gauge
            counts.finished += 1
        attempts = task._attempts
        histogram = counts.attempts  # observe(), inline: this runs for every task
        histogram.counts[bisect_left(ATTEMPT_BUCKETS, attempts)] += 1
        histogram.sum += attempts
        if self._enqueued_at:
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
    registry: CollectorRegistry | PrometheusHooks,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    sock: socket.socket | None = None,
) -> MetricsServer:
    """Serve ``registry`` (or a ``PrometheusHooks``' registry) over HTTP in a thread.

    Binds 127.0.0.1 by default (metrics can reveal task names); ``port=0`` picks a free port,
    which the returned server reports. With ``sock`` (from ``listen(host, port)``), serves on
    that socket instead of binding one (``dowork._http.listen``).
    """
    if isinstance(registry, PrometheusHooks):
        registry = registry.registry
    if sock is None:
        from prometheus_client import start_http_server

        server, thread = start_http_server(port, addr=host, registry=registry)
        return MetricsServer(server, thread, host)
    from prometheus_client import make_wsgi_app

    from ._http import serve_wsgi

    server, thread = serve_wsgi(sock, make_wsgi_app(registry))
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
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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
            backend = queue.backend
            seen = None if backend is None else StoreExtras.of(backend).resets_seen
            if seen is not None:
                resets.add_metric([queue.name], seen())
        yield resets
