"""The figures ``PrometheusHooks`` counts, and the collector that shows them as metrics.

The hooks count into plain integers per thread and queue (``Counts``); a scrape sums them
into the same families, samples and order as prometheus_client's ``Counter``, ``Gauge`` and
``Histogram`` would give. prometheus_client is imported only by a scrape.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from .task import TaskStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector
else:
    Collector = object  # prometheus_client's Collector is an ABC asking for collect() only

__all__ = [
    "ATTEMPT_BUCKETS", "DURATION_BUCKETS", "FAILED", "LATENCY_BUCKETS", "Counts", "HooksCollector",
    "observe",
]  # fmt: skip

ATTEMPT_BUCKETS = (1, 2, 3, 5, 8, 13, 21)
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 900, 1800)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30, 300)
FAILED = TaskStatus.FAILED.value


class Histogram:
    """One histogram's figures: a count per bucket (the last is +Inf) and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0


class Counts:
    """One queue's figures as counted by one thread, which alone writes them.

    Plain integers, no lock: a scrape reads them (sums over threads) and may miss the event
    being counted that moment, never lose one. ``in_flight`` is ``began - ended`` and
    ``pending`` is ``accepted - finished`` (in-memory tasks), so either side may be counted
    by any thread.
    """

    __slots__ = (
        "accepted", "attempts", "began", "buried", "created", "duration", "ended", "enqueued",
        "failed", "finished", "latency", "retried", "run", "succeeded",
    )  # fmt: skip

    def __init__(self) -> None:
        self.created = time.time()
        self.enqueued = self.run = self.retried = self.succeeded = 0
        self.began = self.ended = self.accepted = self.finished = 0
        self.failed: dict[str, int] = {}  # status -> tasks
        self.buried: dict[str, int] = {}  # reason -> records
        self.attempts = Histogram(ATTEMPT_BUCKETS)
        self.duration = Histogram(DURATION_BUCKETS)
        self.latency = Histogram(LATENCY_BUCKETS)


def observe(histogram: Histogram, bounds: tuple[float, ...], value: float) -> None:
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
    ("queue_task_attempts", "Attempts per finished task", "attempts", ATTEMPT_BUCKETS),
    ("queue_task_duration_seconds", "Duration of each attempt", "duration", DURATION_BUCKETS),
    (
        "queue_task_latency_seconds", "Time from enqueue to the first start", "latency",
        LATENCY_BUCKETS,
    ),
)  # fmt: skip


class HooksCollector(Collector):
    """The metrics of one ``PrometheusHooks``, summed over the threads that counted them.

    The same families, samples and order as prometheus_client's own ``Counter``, ``Gauge``
    and ``Histogram`` would give: a queue's series appears once its first event is counted.
    """

    def __init__(self, counts: dict[tuple[int, str], Counts]) -> None:
        self.counts = counts  #: the hooks' figures by (thread, queue), added to as they run

    def describe(self) -> Iterator[Metric]:
        """The families without samples (so a registry refuses a second set of the names)."""
        return iter(self._families({}))

    def collect(self) -> Iterator[Metric]:
        """Every family, with a series per queue that has counted something."""
        by_queue: dict[str, list[Counts]] = {}
        for (_, name), counts in list(self.counts.items()):
            by_queue.setdefault(name, []).append(counts)
        return iter(self._families(by_queue))

    def _families(self, by_queue: dict[str, list[Counts]]) -> list[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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
        families.append(
            _labelled(
                "queue_tasks_failed", "Tasks finished without success", "status", "failed",
                by_queue, created,
            )
        )  # fmt: skip
        families.append(
            _labelled(
                "queue_tasks_buried", "Records dead-lettered unrun: they could not be read",
                "reason", "buried", by_queue, created,
            )
        )  # fmt: skip
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


def _labelled(
    name: str, text: str, label: str, attr: str, by_queue: dict[str, list[Counts]], created: bool
) -> Metric:
    """A counter family labelled ``queue`` and ``label``, from the ``attr`` dicts of counts."""
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, text, labels=["queue", label])
    for queue, parts in by_queue.items():
        totals: dict[str, int] = {}
        for c in parts:
            figures: dict[str, int] = getattr(c, attr)
            for value, count in list(figures.items()):
                totals[value] = totals.get(value, 0) + count
        first = min(c.created for c in parts) if created else None
        for value, count in totals.items():
            family.add_metric([queue, value], count, created=first)
    return family


def _histogram(
    name: str,
    text: str,
    attr: str,
    bounds: tuple[float, ...],
    by_queue: dict[str, list[Counts]],
    created: bool,
) -> Metric:
    """A histogram family as prometheus_client's ``Histogram`` shows it."""
    from prometheus_client.core import Metric
    from prometheus_client.samples import Sample

    family = Metric(name, text, "histogram")
    les = [repr(float(b)) for b in bounds] + ["+Inf"]  # as prometheus_client writes them
    for queue, parts in by_queue.items():
        figures: Iterable[Histogram] = [getattr(c, attr) for c in parts]
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
