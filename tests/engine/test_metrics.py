"""Prometheus metrics through hooks, scraped over HTTP and parsed with prometheus_client."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dowork import FakeClock, Queue, Task
from dowork.metrics import PrometheusHooks, serve_metrics


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _fail() -> None:
    raise OSError


def test_metrics_count_every_event_and_are_served(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    metrics = PrometheusHooks()
    queue = make_queue("mail", hooks=[metrics])
    for _ in range(3):
        queue.submit(lambda: None)
    queue.enqueue(Task(_fail, retries=1, backoff="fixed", base_delay=5))
    rejected = queue.call_later(60, lambda: None)
    rejected.cancel()
    queue.dispatch()
    clock.advance(5)
    queue.dispatch()
    server = serve_metrics(metrics)
    try:
        assert server.host == "127.0.0.1"
        assert server.port > 0
        got = scrape(server.url)
    finally:
        server.close()
    q = (("queue", "mail"),)
    assert got[("queue_tasks_enqueued_total", q)] == 5
    assert got[("queue_tasks_run_total", q)] == 4
    assert got[("queue_tasks_retried_total", q)] == 1
    assert got[("queue_tasks_succeeded_total", q)] == 3
    assert got[("queue_tasks_failed_total", (("queue", "mail"), ("status", "failed")))] == 1
    assert got[("queue_tasks_failed_total", (("queue", "mail"), ("status", "cancelled")))] == 1
    assert got[("queue_tasks_completed_total", q)] == 5  # = succeeded + failed (seed D31)
    assert got[("queue_tasks_in_flight", q)] == 0
    assert got[("queue_tasks_pending", q)] == 0
    assert got[("queue_task_attempts_bucket", (("le", "1.0"), ("queue", "mail")))] == 4  # D32
    assert got[("queue_task_attempts_count", q)] == 5
    assert got[("queue_task_duration_seconds_count", q)] == 5
    assert got[("queue_task_latency_seconds_count", q)] == 4


def test_two_hook_sets_do_not_collide(make_queue: Callable[..., Queue]) -> None:
    first, second = PrometheusHooks(), PrometheusHooks()
    make_queue("a", hooks=[first]).submit(print)
    assert first.registry is not second.registry


def test_metrics_listen_on_loopback_only_by_default() -> None:
    """The server socket is bound to 127.0.0.1, and so is the worker command's default."""
    from dowork.cli.work import worker

    server = serve_metrics(PrometheusHooks())
    try:
        assert server._server.server_address[:2] == ("127.0.0.1", server.port)
    finally:
        server.close()
    (host,) = [p for p in worker.params if p.name == "metrics_host"]
    assert host.default == "127.0.0.1"


def test_counts_from_many_threads_add_up_exactly(make_queue: Callable[..., Queue]) -> None:
    """Every thread counts into figures of its own: no event is lost to a race."""
    metrics = PrometheusHooks()
    queue = make_queue("busy", hooks=[metrics])
    task = Task(print)
    task._engine = queue._engine
    task._attempts = 1

    def count() -> None:
        for _ in range(5000):
            metrics.before_attempt(task)
            metrics.after_attempt(task, None, 0.002)
            metrics.on_success(task)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    get = metrics.registry.get_sample_value
    assert get("queue_tasks_run_total", {"queue": "busy"}) == 20000
    assert get("queue_tasks_succeeded_total", {"queue": "busy"}) == 20000
    assert get("queue_tasks_completed_total", {"queue": "busy"}) == 20000
    assert get("queue_tasks_in_flight", {"queue": "busy"}) == 0
    assert get("queue_task_duration_seconds_bucket", {"queue": "busy", "le": "0.001"}) == 0
    assert get("queue_task_duration_seconds_bucket", {"queue": "busy", "le": "0.005"}) == 20000
    assert get("queue_task_duration_seconds_count", {"queue": "busy"}) == 20000
    assert get("queue_task_attempts_bucket", {"queue": "busy", "le": "1.0"}) == 20000


def test_a_registry_takes_one_set_of_hooks() -> None:
    """The names are registered: a second ``PrometheusHooks`` on one registry is refused."""
    first = PrometheusHooks()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PrometheusHooks(first.registry)
