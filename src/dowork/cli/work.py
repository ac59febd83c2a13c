"""``dowork worker``: run the queues of an app until SIGINT/SIGTERM, with metrics and logs.

The worker applies --backend and --concurrency to the queues it loads, serves Prometheus
metrics, checks at start that every store can be reached (and that a Redis will not evict
tasks), then runs until a signal: the first is a warm shutdown, a second stops at once.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time
from typing import Any

import click

from .._http import listen
from .._load import LoadError, load_queues
from .._redact import printable, redact_text
from ..backends import SQLiteBackend
from ..backends.extras import StoreExtras
from ..errors import EvictionPolicyError
from ..metrics import PrometheusHooks
from ..queue import Queue
from ..signals import ShutdownResult, run_until_signalled
from .common import BACKEND_ENV, fail, verbose
from .processes import Children, parent_gone, process_count, reload_worker

__all__ = ["worker"]


class _Fields(logging.Formatter):
    """Log lines with dowork's task fields appended when a record carries them."""

    FIELDS = ("queue", "task_name", "task_id", "attempt", "delay", "duration", "outcome")

    def format(self, record: logging.LogRecord) -> str:
        """Format the message, then the task fields; hide passwords, escape control characters.

        (Task errors and names come from the store: they must not drive the terminal.)
        """
        text = super().format(record)
        extra = [f"{k}={getattr(record, k)}" for k in self.FIELDS if hasattr(record, k)]
        text = f"{text} [{' '.join(extra)}]" if extra else text
        return printable(redact_text(text), lines=True)


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Fields("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("asyncio").setLevel(logging.WARNING)


def _processes(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Check ``--processes``: ``auto`` or a whole number of at least 1."""
    if value == "auto" or (value.isdigit() and int(value) >= 1):
        return value
    raise click.BadParameter(f"{value!r} is neither 'auto' nor a whole number >= 1")


@click.command()
@click.argument("target")
@click.option("--backend", metavar="URL", envvar=BACKEND_ENV,
              help=f"Use this backend instead of the queue's own (or ${BACKEND_ENV}).")  # fmt: skip
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Attempts at once.")
@click.option("-q", "--queue", "queue_names", multiple=True, help="Only these queues.")
@click.option("--metrics-port", type=click.IntRange(min=0), default=0, show_default=True,
              help="Port of the /metrics server (0: a free one).")  # fmt: skip
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--no-metrics", is_flag=True, help="Do not serve metrics.")
@click.option("-p", "--processes", default="auto", show_default=True, callback=_processes,
              help="Worker processes: N, or auto (one per core, shared stores).")  # fmt: skip
@click.option("--reload", is_flag=True, help="Restart when the code changes (development).")
@click.option("--grace", type=float, default=30.0, show_default=True,
              help="Seconds a warm shutdown may take before stopping at once.")  # fmt: skip
@click.option("--dump-file", default="dowork-dump.jsonl", show_default=True,
              help="Where a forced stop writes unfinished in-memory tasks "
              "(durable queues hand theirs back to the store).")  # fmt: skip
@click.option("--allow-eviction", is_flag=True,
              help="Work even on a Redis that may evict tasks (allkeys-* policy).")  # fmt: skip
def worker(
    target: str,
    backend: str | None,
    concurrency: int | None,
    queue_names: tuple[str, ...],
    metrics_port: int,
    metrics_host: str,
    no_metrics: bool,
    processes: str,
    reload: bool,
    grace: float,
    dump_file: str,
    allow_eviction: bool,
) -> None:
    """Run the queues of TARGET (MODULE or MODULE:QUEUE) until SIGINT/SIGTERM.

    The first signal is a warm shutdown; a second stops at once, handing durable tasks back
    to their store and dumping in-memory ones to --dump-file.
    """
    _setup_logging(verbose())
    if reload:
        reload_worker(backend)
        return
    try:
        queues = load_queues(target, queue_names)
    except LoadError as exc:
        raise fail(str(exc), exc) from None
    metrics_at = None if no_metrics else (metrics_host, metrics_port)
    metrics = _prepare(queues, backend, concurrency, metrics_at)
    if allow_eviction:
        _allow_eviction(queues)
    _check_reachable(queues)
    tune_gc()
    count = process_count(processes, all(q.backend is not None for q in queues))
    others = Children(count, metrics_port, dump_file, backend) if count > 1 else None
    result = _run(queues, metrics, others, grace, dump_file)
    clean = others is None or others.finish()
    logging.shutdown()
    if not result.clean:
        os._exit(result.exit_code)  # threads of abandoned attempts must not hold the exit
    if result.exit_code or not clean:  # a store was lost (logged CRITICAL): let a supervisor
        sys.exit(result.exit_code or 1)  # restart us


def _run(
    queues: list[Queue],
    metrics: _Metrics | None,
    others: Children | None,
    grace: float,
    dump_file: str,
) -> ShutdownResult:
    """Run the queues until a signal (or this process's starter is gone); serve metrics."""
    names = ", ".join(f"{q.name} ({_where(q)})" for q in queues)
    click.echo(f"dowork: worker {os.getpid()} running {names}", err=True)
    if metrics is not None:
        click.echo(f"dowork: metrics on {metrics.url}", err=True)

    def started() -> None:
        if metrics is not None:
            metrics.serve()
        if others is not None:
            others.start()

    try:
        return run_until_signalled(
            queues,
            grace=grace,
            dump_path=dump_file,
            started=started,
            on_signal=None if others is None else others.forward,
            stop_when=parent_gone(),
        )
    finally:
        if metrics is not None:
            metrics.close()


class _Metrics:
    """The worker's metrics: its hooks and port, bound at once and served once the queues run.

    Serving imports prometheus_client and the HTTP server modules, which would delay the
    first task; a scrape that comes before waits in the socket's backlog.
    """

    def __init__(self, hooks: PrometheusHooks, queues: list[Queue], host: str, port: int) -> None:
        self.hooks, self.queues, self.host = hooks, queues, host
        self.sock = listen(host, port)
        self.port: int = self.sock.getsockname()[1]
        self.server: Any = None

    @property
    def url(self) -> str:
        """The address of the ``/metrics`` page."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def serve(self) -> None:
        """Serve the metrics (and the store's figures) on the bound socket, in a thread.

        Once the first attempt started, or half a second passed (an idle queue): the imports
        would otherwise take the GIL from the threads claiming and starting the first task.
        """
        deadline = time.monotonic() + 0.5
        while not self.hooks.counted and time.monotonic() < deadline:
            time.sleep(0.002)
        from ..metrics import BackendCollector, serve_metrics

        try:
            self.hooks.registry.register(BackendCollector(self.queues))
            self.server = serve_metrics(self.hooks, host=self.host, sock=self.sock)
        except Exception:  # the worker goes on without them rather than with half a start
            logging.getLogger("dowork").exception("cannot serve metrics on %s", self.url)

    def close(self) -> None:
        """Stop serving (or close the socket that was never served)."""
        if self.server is not None:
            self.server.close()
        else:
            self.sock.close()


def _prepare(
    queues: list[Queue],
    backend: str | None,
    concurrency: int | None,
    metrics_at: tuple[str, int] | None,
) -> _Metrics | None:
    """Apply --backend/--concurrency, install the metrics hooks, bind the metrics port."""
    changes: dict[str, Any] = {}
    if backend:
        changes["backend"] = backend
    if concurrency:
        changes["concurrency"] = concurrency
    metrics = None
    if metrics_at is not None:
        metrics = PrometheusHooks()
    for queue in queues:
        extra = dict(changes)
        if metrics is not None:
            extra["hooks"] = (*queue._settings["hooks"], metrics)
        if extra:
            try:
                queue.reconfigure(**extra)
            except (ValueError, TypeError, RuntimeError, ImportError) as exc:
                raise fail(f"queue {queue.name}: {exc}", exc) from None
    if metrics is None or metrics_at is None:
        return None
    host, port = metrics_at
    try:
        return _Metrics(metrics, queues, host, port)
    except OSError as exc:
        raise fail(f"cannot serve metrics on {host}:{port}: {exc}") from None


#: The garbage collector's first threshold in a worker process. A claimed task allocates a
#: few dozen container objects, so CPython's default (700) runs a young collection every 20
#: or so tasks, each looking again at every task still in flight: about 3 % of a worker's CPU.
GC_THRESHOLD = 10_000


def tune_gc() -> None:
    """Set up the collector for a worker: larger young generations, the app's objects frozen.

    ``gc.freeze()`` moves everything that exists now (modules, the app, its queues) to a
    generation no collection looks at again; the first threshold is raised to
    ``GC_THRESHOLD`` unless the app set it higher (or turned collection off with 0).
    """
    gc.freeze()
    first, *rest = gc.get_threshold()
    if 0 < first < GC_THRESHOLD:
        gc.set_threshold(GC_THRESHOLD, *rest)


def _allow_eviction(queues: list[Queue]) -> None:
    """--allow-eviction: let the queues on a Redis work even if it may evict tasks."""
    for queue in queues:
        backend = queue.backend
        permit = None if backend is None else StoreExtras.of(backend).permit_eviction
        if permit is not None:  # Redis
            permit()


def _check_reachable(queues: list[Queue]) -> None:
    """Fail at start, in one line, when a queue's store cannot be reached or is unsafe.

    A Redis whose ``maxmemory-policy`` may evict tasks is refused here (``check_worker``).
    """
    for queue in queues:
        backend = queue.backend
        if backend is None:
            continue
        try:
            queue._engine.run_on_home(backend.counts(queue.name), 10.0)
            check = StoreExtras.of(backend).check_worker
            if check is not None:
                queue._engine.run_on_home(check(), 10.0)
        except Exception as exc:
            for each in queues:  # close connections and loop threads: nothing after the line
                with contextlib.suppress(Exception):
                    each.shutdown(timeout=1.0)
            # A SQLite message names the file and the fix; a refused policy says what to set.
            if isinstance(backend, SQLiteBackend) or isinstance(exc, EvictionPolicyError):
                raise fail(f"queue {queue.name}: {exc}", exc) from None
            raise fail(
                f"queue {queue.name}: cannot reach {backend!r}: {exc}; is the server running "
                "and the URL right?",
                exc,
            ) from None


def _where(queue: Queue) -> str:
    backend = queue.backend
    return "in memory" if backend is None else repr(backend)
