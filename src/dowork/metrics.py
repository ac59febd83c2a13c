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
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from .hooks import Hooks
from .task import Task, TaskStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from .queue import Queue

__all__ = ["BackendCollector", "MetricsServer", "PrometheusHooks", "serve_metrics"]

_ATTEMPT_BUCKETS = (1, 2, 3, 5, 8, 13, 21)
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 900, 1800)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30, 300)
_FAILED = TaskStatus.FAILED.value


class _Histogram:
    """One histogram's figures: a count per bucket (the last is +Inf) and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0


class _Counts:
    """One queue's figures as counted by one thread, which alone writes them.

    Plain integers, no lock: a scrape reads them (sums over threads) and may miss the event
    being counted that moment, never lose one. ``in_flight`` is ``began - ended`` and
    ``pending`` is ``accepted - finished`` (in-memory tasks), so either side may be counted
    by any thread.
    """

    __slots__ = (
        "accepted", "attempts", "began", "created", "duration", "ended", "enqueued", "failed",
        "finished", "latency", "retried", "run", "succeeded",
    )  # fmt: skip

    def __init__(self) -> None:
        self.created = time.time()
        self.enqueued = self.run = self.retried = self.succeeded = 0
        self.began = self.ended = self.accepted = self.finished = 0
        self.failed: dict[str, int] = {}
        self.attempts = _Histogram(_ATTEMPT_BUCKETS)
        self.duration = _Histogram(_DURATION_BUCKETS)
        self.latency = _Histogram(_LATENCY_BUCKETS)


class PrometheusHooks(Hooks):
    """Count task events into Prometheus metrics named ``queue_*``, labelled ``queue``.

    Metrics: ``queue_tasks_enqueued_total``, ``queue_tasks_run_total`` (first attempts),
    ``queue_tasks_retried_total``, ``queue_tasks_completed_total`` (= succeeded + failed),
    ``queue_tasks_succeeded_total``, ``queue_tasks_failed_total`` (failed, cancelled or
    dead-lettered, by ``status``), ``queue_tasks_in_flight`` and ``queue_tasks_pending``
    (gauges), ``queue_task_attempts`` (attempts per finished task, the seed's buckets),
    ``queue_task_duration_seconds`` (each attempt) and ``queue_task_latency_seconds``
    (enqueue to first start).

    The hooks count into plain integers, per thread and queue (a task event costs about a
    microsecond, where prometheus_client's labelled children and locks cost about twenty);
    a collector in ``registry`` turns them into the metrics when it is scraped.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._counts: dict[tuple[int, str], _Counts] = {}
        self._enqueued_at: dict[int, float] = {}
        self.registry.register(_HooksCollector(self))

    def _for(self, task: Task[Any]) -> _Counts:
        """The figures of the task's queue that the calling thread counts into."""
        engine = task._engine
        key = (threading.get_ident(), (engine.name if engine is not None else None) or "unknown")
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = _Counts()
        return counts

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
                    _observe(counts.latency, _LATENCY_BUCKETS, time.monotonic() - since)

    def after_attempt(self, task: Task[Any], error: BaseException | None, duration: float) -> None:
        """Observe the attempt's duration."""
        counts = self._for(task)
        counts.ended += 1
        _observe(counts.duration, _DURATION_BUCKETS, duration)

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
        label = status.value if status.final else _FAILED
        counts.failed[label] = counts.failed.get(label, 0) + 1
        self._completed(task, counts)

    def _completed(self, task: Task[Any], counts: _Counts) -> None:
        if self._local(task):
            counts.finished += 1
        _observe(counts.attempts, _ATTEMPT_BUCKETS, task._attempts)
        if self._enqueued_at:
            self._enqueued_at.pop(id(task), None)


def _observe(histogram: _Histogram, bounds: tuple[float, ...], value: float) -> None:
    """Count ``value`` in the first bucket whose bound is at least ``value`` (+Inf last)."""
    histogram.counts[bisect_left(bounds, value)] += 1
    histogram.sum += value


#: The metrics of ``PrometheusHooks``: name, help, type, labels, what a queue's value is.
_COUNTERS: tuple[tuple[str, str, Any], ...] = (
    ("queue_tasks_enqueued", "Tasks accepted", lambda c: c.enqueued),
    ("queue_tasks_run", "Tasks started (first attempts)", lambda c: c.run),
    ("queue_tasks_retried", "Failed attempts retried", lambda c: c.retried),
    ("queue_tasks_completed", "Tasks finished", lambda c: c.succeeded + sum(c.failed.values())),
    ("queue_tasks_succeeded", "Tasks succeeded", lambda c: c.succeeded),
)
_GAUGES: tuple[tuple[str, str, Any, Any], ...] = (
    ("queue_tasks_in_flight", "Attempts running now", lambda c: c.began, lambda c: c.ended),
    (
        "queue_tasks_pending", "Tasks accepted and not finished",
        lambda c: c.accepted, lambda c: c.finished,
    ),
)  # fmt: skip
_HISTOGRAMS: tuple[tuple[str, str, str, tuple[float, ...]], ...] = (
    ("queue_task_attempts", "Attempts per finished task", "attempts", _ATTEMPT_BUCKETS),
    ("queue_task_duration_seconds", "Duration of each attempt", "duration", _DURATION_BUCKETS),
    (
        "queue_task_latency_seconds", "Time from enqueue to the first start", "latency",
        _LATENCY_BUCKETS,
    ),
)  # fmt: skip


class _HooksCollector(Collector):
    """The metrics of one ``PrometheusHooks``, summed over the threads that counted them.

    The same families, samples and order as prometheus_client's own ``Counter``, ``Gauge``
    and ``Histogram`` would give: a queue's series appears once its first event is counted.
    """

    def __init__(self, hooks: PrometheusHooks) -> None:
        self.hooks = hooks

    def describe(self) -> Iterator[Metric]:
        """The families without samples (so a registry refuses a second set of the names)."""
        return iter(self._families({}))

    def collect(self) -> Iterator[Metric]:
        """Every family, with a series per queue that has counted something."""
        by_queue: dict[str, list[_Counts]] = {}
        for (_, name), counts in list(self.hooks._counts.items()):
            by_queue.setdefault(name, []).append(counts)
        return iter(self._families(by_queue))

    def _families(self, by_queue: dict[str, list[_Counts]]) -> list[Metric]:
        created = _use_created()
        families: list[Metric] = []
        for name, text, value in _COUNTERS:
            counter = CounterMetricFamily(name, text, labels=["queue"])
            for queue, parts in by_queue.items():
                total = sum(value(c) for c in parts)
                if total:
                    first = min(c.created for c in parts) if created else None
                    counter.add_metric([queue], total, created=first)
            families.append(counter)
        families.append(self._failed(by_queue, created))
        for name, text, up, down in _GAUGES:
            gauge = GaugeMetricFamily(name, text, labels=["queue"])
            for queue, parts in by_queue.items():
                ups, downs = sum(up(c) for c in parts), sum(down(c) for c in parts)
                if ups or downs:
                    gauge.add_metric([queue], ups - downs)
            families.append(gauge)
        for name, text, attr, bounds in _HISTOGRAMS:
            families.append(_histogram(name, text, attr, bounds, by_queue, created))
        return families

    @staticmethod
    def _failed(by_queue: dict[str, list[_Counts]], created: bool) -> Metric:
        failed = CounterMetricFamily(
            "queue_tasks_failed", "Tasks finished without success", labels=["queue", "status"]
        )
        for queue, parts in by_queue.items():
            totals: dict[str, int] = {}
            for c in parts:
                for status, count in list(c.failed.items()):
                    totals[status] = totals.get(status, 0) + count
            first = min(c.created for c in parts) if created else None
            for status, count in totals.items():
                failed.add_metric([queue, status], count, created=first)
        return failed


def _histogram(
    name: str,
    text: str,
    attr: str,
    bounds: tuple[float, ...],
    by_queue: dict[str, list[_Counts]],
    created: bool,
) -> Metric:
    """A histogram family as prometheus_client's ``Histogram`` shows it."""
    family = Metric(name, text, "histogram")
    les = [repr(float(b)) for b in bounds] + ["+Inf"]  # as prometheus_client writes them
    for queue, parts in by_queue.items():
        figures: Iterable[_Histogram] = [getattr(c, attr) for c in parts]
        counts = [0] * (len(bounds) + 1)
        total_sum = 0.0
        for h in figures:
            counts = [a + b for a, b in zip(counts, list(h.counts), strict=True)]
            total_sum += h.sum
        if not any(counts):
            continue
        acc = 0.0
        for le, count in zip(les, counts, strict=True):
            acc += count
            family.samples.append(Sample(f"{name}_bucket", {"queue": queue, "le": le}, acc))
        family.samples.append(Sample(f"{name}_count", {"queue": queue}, acc))
        family.samples.append(Sample(f"{name}_sum", {"queue": queue}, total_sum))
        if created:
            first = min(c.created for c in parts)
            family.samples.append(Sample(f"{name}_created", {"queue": queue}, first))
    return family


def _use_created() -> bool:
    """Whether prometheus_client shows ``_created`` series (PROMETHEUS_DISABLE_CREATED_SERIES)."""
    from prometheus_client import metrics

    return bool(metrics._use_created)


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
