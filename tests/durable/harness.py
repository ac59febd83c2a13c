"""Shared by the SQLite and Redis multi-process tests: worker processes running
``tests/durable/app.py``, the ledger they write outside the store, and the many-workers
exactly-once scenario run against each backend. Fault scenarios live in ``tests/faults``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import dowork
from dowork import Queue

ROOT = Path(__file__).resolve().parents[2]
WAIT = 20.0


def worker_env(backend: str, ledger: Path, lease: float = 2.0) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DOWORK_TEST_BACKEND=backend,
        DOWORK_TEST_LEDGER=str(ledger),
        DOWORK_TEST_LEASE=str(lease),
        PYTHONPATH=str(ROOT),
    )
    return env


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    code = "from tests.durable import app; app.main()"
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)


def read_ledger(ledger: Path) -> Counter[str]:
    return Counter(ledger.read_text().splitlines() if ledger.exists() else [])


def wait_ledger(
    ledger: Path, predicate: Callable[[Counter[str]], bool], timeout: float
) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while True:
        counts = read_ledger(ledger)
        if predicate(counts) or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def _stub(n: int, seconds: float = 0.0) -> int:  # producers need only the registered name
    return n


def producer(
    backend: str,
) -> tuple[Queue, dowork.TaskFunction[..., int], dowork.TaskFunction[..., int]]:
    queue = Queue("app", backend=backend, log=False)
    record = queue.task(name="record")(_stub)
    slow = queue.task(name="slow")(_stub)
    return queue, record, slow


def each_runs_once(backend: str, ledger: Path, n: int, *, bulk: bool) -> None:
    """n tasks (submitted one by one, or in batches), 4 worker processes: each runs once."""
    queue, record, _ = producer(backend)
    if bulk:
        for start in range(0, n, 1000):
            record.map([(i,) for i in range(start, min(n, start + 1000))])
    else:
        for i in range(n):
            record.submit(i)
    # A lease far longer than any stall of a loaded machine: no crash, so no rerun allowed.
    workers = [start_worker(worker_env(backend, ledger, lease=10.0)) for _ in range(4)]
    _each_ran_once(workers, ledger, n)
    queue.shutdown(timeout=1)


def _each_ran_once(workers: list[subprocess.Popen[bytes]], ledger: Path, n: int) -> None:
    """Wait for n runs in the ledger, stop the workers, assert n tasks ran once each."""
    try:
        wait_ledger(ledger, lambda c: sum(c.values()) >= n, 120)
        time.sleep(0.3)  # let a late duplicate show up if there were one
        counts = read_ledger(ledger)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(20)
    assert len(counts) == n, f"lost {n - len(counts)}"
    assert max(counts.values()) == 1, "a task ran twice without any crash"


def idle_workers_run_each_once(backend: str, ledger: Path, n: int, workers: int = 3) -> None:
    """n tasks submitted one by one to workers that are up and mostly idle: each runs once.

    On Redis an idle worker pops a task straight from the inbox and records its lease after
    starting it, while busy ones drain the inbox in their claims: both at once, many times.
    """
    queue, record, _ = producer(backend)
    procs = [start_worker(worker_env(backend, ledger, lease=10.0)) for _ in range(workers)]
    try:
        for i in range(workers):  # one task each, so every worker is up
            record.submit(-1 - i)
        wait_ledger(ledger, lambda c: sum(c.values()) >= workers, 60)
        for i in range(n):
            record.submit(i)
            if i % 50 == 0:
                time.sleep(0.01)  # let the workers fall idle again
    except BaseException:
        for w in procs:
            w.kill()
        raise
    _each_ran_once(procs, ledger, n + workers)
    queue.shutdown(timeout=1)
