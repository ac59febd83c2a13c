"""Flow-control figures: fair turns between tenants, and a rate limit shared by two workers.

``fairness``: a big tenant enqueues a backlog, then a small tenant enqueues a few tasks; how
long until the small tenant's tasks are done, with concurrency keys (turns) and without
(first in, first out), while the big backlog drains. ``rate``: two workers on one store run
tasks declared with ``rate_limit``; the most starts seen in any window of the period (must
not exceed the limit) and the rate achieved. Medians of ``--runs`` runs, per backend.

    python bench/flow.py                       # memory, sqlite and a private redis-server
    python bench/flow.py --backends sqlite --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.redis_server import RedisServer  # noqa: E402

from dowork import DurableSettings, Queue  # noqa: E402
from dowork.backends import Backend, MemoryBackend  # noqa: E402

SETTINGS = DurableSettings(lease=30.0, maintenance=1.0)
#: The limit holds for claims, at the store's clock; a task starts a few ms after its claim,
#: by a delay that varies, so starts are also counted in windows this much shorter.
SLACK = 0.02


def _store(kind: str, workdir: Path, redis: RedisServer | None) -> Backend | str:
    """A fresh store: one object shared by the queues (memory) or a URL each opens."""
    if kind == "memory":
        return MemoryBackend()
    if kind == "sqlite":
        return f"sqlite:///{workdir / f'{uuid.uuid4().hex}.db'}"
    assert redis is not None
    return f"{redis.url}?prefix=b{uuid.uuid4().hex[:10]}"


def fairness(
    store: Backend | str, big: int, small: int, keyed: bool, work: float
) -> dict[str, float]:
    """Seconds until the small tenant's tasks are done, and until everything is."""
    queue = Queue("fair", backend=store, concurrency=4, log=False, durable=SETTINGS)
    done: dict[str, float] = {}
    lock = threading.Lock()

    @queue.task(name="job")
    def job(label: str) -> None:
        time.sleep(work)
        with lock:
            done[label] = time.perf_counter()

    def key(tenant: str) -> dict[str, Any]:
        return {"concurrency_key": tenant} if keyed else {}

    queue.enqueue_many(job.task(f"big{i}").configure(**key("big")) for i in range(big))
    start = time.perf_counter()
    tasks = [queue.enqueue(job.task(f"small{i}").configure(**key("small"))) for i in range(small)]
    queue.start()
    for task in tasks:
        task.result(timeout=600)
    small_done = max(done[f"small{i}"] for i in range(small)) - start
    deadline = time.monotonic() + 600
    while len(done) < big + small and time.monotonic() < deadline:
        time.sleep(0.01)
    all_done = max(done.values()) - start
    queue.shutdown(timeout=30)
    return {"small": small_done, "all": all_done}


def rate(store: Backend | str, n: int, limit: int, per: float) -> dict[str, float]:
    """Two workers, one limit: the most starts in any ``per`` seconds, and the rate achieved."""
    starts: list[float] = []
    lock = threading.Lock()
    workers = []
    for _ in range(2):
        queue = Queue("rated", backend=store, concurrency=8, log=False, durable=SETTINGS)

        @queue.task(name="call", rate_limit=(limit, per))
        def call() -> None:
            with lock:
                starts.append(time.time())

        workers.append((queue, call))
    first, call = workers[0]
    tasks = first.enqueue_many(call.task() for _ in range(n))
    for queue, _ in workers:
        queue.start()
    for task in tasks:
        task.result(timeout=600)
    for queue, _ in workers:
        queue.shutdown(timeout=30)
    starts.sort()
    span = starts[-1] - starts[0]
    return {
        "most": float(_most_within(starts, per)),
        "most_short": float(_most_within(starts, per - SLACK)),
        "rate": (n - limit) / span if span else float("inf"),
    }


def _most_within(starts: list[float], window: float) -> int:
    """The most of the (sorted) start times in any window ``(at - window, at]``."""
    most, j = 0, 0
    for i, at in enumerate(starts):
        while starts[j] <= at - window:
            j += 1
        most = max(most, i - j + 1)
    return most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="memory,sqlite,redis")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big", type=int, default=2000, help="the big tenant's backlog")
    parser.add_argument("--small", type=int, default=10, help="the small tenant's tasks")
    parser.add_argument("--work", type=float, default=0.002, help="seconds each task sleeps")
    parser.add_argument("--limit", type=int, default=50, help="starts allowed per period")
    parser.add_argument("--per", type=float, default=1.0, help="the rate limit's period")
    parser.add_argument("--tasks", type=int, default=200, help="tasks of the rate scenario")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.backends.split(",") if k.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        redis = None
        if "redis" in kinds:
            redis = RedisServer(workdir / "redis")
            redis.start()
        try:
            print(
                f"fairness: {args.big} tasks of tenant 'big' then {args.small} of 'small', "
                f"{args.work * 1000:g} ms each, concurrency 4; medians of {args.runs} runs"
            )
            print(f"{'backend':8} {'small done, FIFO':>17} {'small done, keys':>17} "
                  f"{'ratio':>7} {'all done, keys':>15}")  # fmt: skip
            for kind in kinds:
                fifo = [
                    fairness(_store(kind, workdir, redis), args.big, args.small, False, args.work)
                    for _ in range(args.runs)
                ]
                fair = [
                    fairness(_store(kind, workdir, redis), args.big, args.small, True, args.work)
                    for _ in range(args.runs)
                ]
                f_small = statistics.median(r["small"] for r in fifo)
                k_small = statistics.median(r["small"] for r in fair)
                k_all = statistics.median(r["all"] for r in fair)
                print(
                    f"{kind:8} {f_small * 1000:15.0f}ms {k_small * 1000:15.0f}ms "
                    f"{f_small / k_small:6.0f}x {k_all * 1000:13.0f}ms"
                )
            print()
            print(
                f"rate limit {args.limit}/{args.per:g}s on one task, two workers, "
                f"{args.tasks} tasks; medians of {args.runs} runs"
            )
            print(
                f"{'backend':8} {'most starts in a period':>24} "
                f"{f'in {args.per - SLACK:g}s':>9} {'rate after the burst':>21}"
            )
            for kind in kinds:
                runs = [
                    rate(_store(kind, workdir, redis), args.tasks, args.limit, args.per)
                    for _ in range(args.runs)
                ]
                most = max(r["most"] for r in runs)
                short = max(r["most_short"] for r in runs)
                achieved = statistics.median(r["rate"] for r in runs)
                print(
                    f"{kind:8} {most:18.0f} (max) {short:9.0f} {achieved:16.1f}/{args.per:g}s "
                    f"(limit {args.limit})"
                )
        finally:
            if redis is not None:
                redis.stop()


if __name__ == "__main__":
    main()
