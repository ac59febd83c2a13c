"""Idle enqueue-to-start latency on SQLite across processes, with and without wake-ups.

A worker runs in a child process on one SQLite file and is idle; this process (the
producer) takes ``time.monotonic()``, submits one task, and the task body writes its own
``time.monotonic()`` to a pipe as its first action (the monotonic clock is system-wide on
Linux). One sample at a time, with ``--gap`` seconds of idle time before each (randomised
±50 %); the first ``--warmup`` samples are dropped. The worker runs once with the wake-up
channel (``SQLiteBackend(wake=True)``, the default) and once polling only (``wake=False``,
``poll_interval`` 0.05 s, the default), so the two rows differ only by the channel.

    python bench/sqlite_latency.py --n 200
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import dowork
from dowork.backends import SQLiteBackend

QUEUE = "latency"


def _queue(db: str, wake: bool) -> tuple[dowork.Queue, dowork.SyncTaskFunction[[], None]]:
    queue = dowork.Queue(QUEUE, backend=SQLiteBackend(db, wake=wake), log=False, concurrency=4)
    stamp_fd = int(os.environ.get("DOWORK_BENCH_STAMP_FD", "-1"))

    @queue.task(name="bench:stamp", keep_result=0)
    def stamp() -> None:
        if stamp_fd >= 0:
            os.write(stamp_fd, f"{time.monotonic()!r}\n".encode())

    return queue, stamp


def _worker(db: str, wake: bool, stamp_fd: int, ready: multiprocessing.synchronize.Event) -> None:
    os.environ["DOWORK_BENCH_STAMP_FD"] = str(stamp_fd)
    queue, _ = _queue(db, wake)
    queue.start()
    ready.set()
    while True:
        time.sleep(3600)


def measure(n: int, gap: float, warmup: int, wake: bool) -> list[float]:
    """Milliseconds from submit to the task's first line, per sample."""
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "latency.db")
        read_fd, write_fd = os.pipe()
        ready = multiprocessing.get_context("fork").Event()
        child = multiprocessing.get_context("fork").Process(
            target=_worker, args=(db, wake, write_fd, ready), daemon=True
        )
        child.start()
        os.close(write_fd)
        assert ready.wait(30), "the worker did not start"
        _, stamp = _queue(db, wake)
        reader = os.fdopen(read_fd)
        samples = []
        try:
            for i in range(n + warmup):
                time.sleep(gap * random.uniform(0.5, 1.5))
                began = time.monotonic()
                stamp.submit()
                started = float(reader.readline())
                if i >= warmup:
                    samples.append((started - began) * 1000)
        finally:
            child.kill()
            child.join()
            reader.close()
        return samples


def main() -> None:
    """Run both rows and print p50, p90, p99 and max per row, with the machine's load."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="samples per row")
    parser.add_argument("--gap", type=float, default=0.05, help="idle seconds before a sample")
    parser.add_argument("--warmup", type=int, default=10, help="samples dropped first")
    args = parser.parse_args()
    print(f"load {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores, n={args.n}, gap={args.gap}s")
    for wake in (True, False):
        samples = sorted(measure(args.n, args.gap, args.warmup, wake))
        q = statistics.quantiles(samples, n=100, method="inclusive")
        label = "wake-up channel" if wake else "polling only (0.05 s)"
        print(
            f"{label:24} p50 {q[49]:6.2f} ms  p90 {q[89]:6.2f} ms  p99 {q[98]:6.2f} ms  "
            f"max {samples[-1]:6.2f} ms"
        )


if __name__ == "__main__":
    main()
