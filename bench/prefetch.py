"""Head-of-line blocking: short tasks behind long ones, with each prefetch setting.

Two workers (queue objects of their own, ``--concurrency`` slots each) share a store; a backlog
of ``--short`` tasks of ``--short-ms`` and ``--longs`` tasks of ``--long-s`` (as many as one
worker's slots, by default) is pushed before they start: the long ones first (``--at head``) or
after half the short ones (``--at middle``). A worker that holds short tasks behind its long
ones makes them wait while the other worker could run them. For each setting it prints the
makespan (push to the last outcome), the ideal makespan (the work spread evenly over every
slot), and the short tasks' wait from the start of the run to their start (p50, p99, max),
medians of ``--repeat`` runs:

- ``fixed 32``: ``prefetch=32, prefetch_window=None`` (dowork's default before b535f37);
- ``adaptive``: the default (what the slots finish in ``prefetch_window``, at most 64; tasks
  held behind long ones given back once every slot stayed busy for a second);
- ``none``: ``prefetch=0`` (claims only for free slots).

    python bench/prefetch.py sqlite
    python bench/prefetch.py redis --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from typing import Any

import dowork
from worker_cpu import redis_server  # (bench/ is on the path: the script's directory)

SETTINGS: dict[str, dict[str, Any]] = {
    "fixed 32": {"prefetch": 32, "prefetch_window": None},
    "adaptive": {},
    "none": {"prefetch": 0},
}


def run_once(args: argparse.Namespace, backend: str, setting: dict[str, Any]) -> dict[str, float]:
    """One run: push the backlog, start two workers, wait for every task; the figures."""
    durable = dowork.DurableSettings(lease=60.0, maintenance=5.0, **setting)
    producer = dowork.Queue("hol", backend=backend, log=False)
    started: dict[int, float] = {}
    lock = threading.Lock()
    done = threading.Event()
    total = [0]

    def work(n: int, seconds: float) -> None:
        with lock:
            started[n] = time.monotonic()
        time.sleep(seconds)
        with lock:
            total[0] += 1
            if total[0] == expected:
                done.set()

    longs = [(-1 - n, args.long_s) for n in range(args.longs or args.concurrency)]
    shorts = [(n, args.short_ms / 1000) for n in range(args.short)]
    cut = 0 if args.at == "head" else len(shorts) // 2
    calls = shorts[:cut] + longs + shorts[cut:]
    expected = len(calls)
    fn = producer.task(name="work")(work)
    fn.map(calls)
    producer.shutdown()
    workers = [
        dowork.Queue(
            "hol", backend=backend, log=False, concurrency=args.concurrency, durable=durable
        )
        for _ in range(2)
    ]
    for worker in workers:
        worker.task(name="work")(work)
    began = time.monotonic()
    for worker in workers:
        worker.start()
    if not done.wait(600):
        raise SystemExit(f"only {total[0]} of {expected} tasks ran")
    makespan = time.monotonic() - began
    for worker in workers:
        worker.shutdown()
    waits = sorted(started[n] - began for n in range(args.short))
    return {
        "makespan": makespan,
        "p50": waits[len(waits) // 2],
        "p99": waits[int(len(waits) * 0.99)],
        "max": waits[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store", choices=("redis", "sqlite"))
    parser.add_argument("--concurrency", type=int, default=4, help="slots of each worker")
    parser.add_argument("--short", type=int, default=400, help="short tasks")
    parser.add_argument("--short-ms", type=float, default=2.0, help="a short task's sleep")
    parser.add_argument("--long-s", type=float, default=1.0, help="a long task's sleep")
    parser.add_argument("--longs", type=int, default=0, help="long tasks (0: --concurrency)")
    parser.add_argument("--at", choices=("head", "middle"), default="head", help="where")
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting (median)")
    args = parser.parse_args()
    longs = args.longs or args.concurrency
    ideal = max(
        args.long_s,
        (longs * args.long_s + args.short * args.short_ms / 1000) / (2 * args.concurrency),
    )
    print(
        f"{args.store}: 2 workers x {args.concurrency} slots; {args.short} tasks of "
        f"{args.short_ms:g} ms and {longs} of {args.long_s:g} s (at the {args.at}); "
        f"ideal makespan {ideal:.2f} s"
    )
    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as stack:
        url = ""
        if args.store == "redis":
            import redis  # (the redis extra: only for this store)

            _, url = stack.enter_context(redis_server(work))
        for name, setting in SETTINGS.items():
            runs = []
            for i in range(args.repeat):
                if args.store == "redis":
                    backend = f"{url.rsplit('/', 1)[0]}/{i % 16}"
                    redis.Redis.from_url(backend).flushdb()
                else:
                    backend = f"sqlite:///{work}/{name.replace(' ', '')}-{i}.db"
                runs.append(run_once(args, backend, setting))
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(
                f"  {name:9s} makespan {med['makespan']:5.2f} s "
                f"({min(r['makespan'] for r in runs):.2f}-"
                f"{max(r['makespan'] for r in runs):.2f}); short tasks' wait p50 "
                f"{med['p50']:.2f} s, p99 {med['p99']:.2f}, max {med['max']:.2f}"
            )


if __name__ == "__main__":
    main()
