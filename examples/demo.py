"""The main job: a few thousand tasks through an in-process dowork queue, with a live summary.

Some tasks are slow, some fail and are retried with backoff, a few fail for good, a few raise
DoNotRetry, and sync and async functions share the queue. Run: ``python examples/demo.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from typing import Any

import dowork


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--tasks", type=int, default=3000, help="how many tasks")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="workers")
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    retried = Counter[str]()

    class Count(dowork.Hooks):
        def on_retry(self, task: dowork.Task[Any], error: BaseException, delay: float) -> None:
            retried["retries"] += 1

    queue = dowork.Queue(
        "demo",
        concurrency=args.concurrency,
        hooks=[Count()],
        log=False,
        retry=dowork.RetryPolicy(retries=3, backoff="exponential", base=0.01, max_delay=0.2),
    )

    def record(task: dowork.Task[Any]) -> None:
        outcomes[task.status.value] += 1

    def resize_image(n: int, fail_times: int) -> int:
        """A sync task: fails `fail_times` times, then succeeds."""
        attempt = dowork.current_task().attempts
        if attempt <= fail_times:
            raise OSError(f"image {n}: storage busy (attempt {attempt})")
        return n * 2

    async def send_email(n: int, slow: bool) -> str:
        """An async task: some are slow."""
        await asyncio.sleep(0.05 if slow else 0.001)
        if n % 997 == 0:
            raise dowork.DoNotRetry(f"email {n}: address rejected")
        return f"sent {n}"

    start = time.perf_counter()
    with queue:
        for n in range(args.tasks):
            roll = rnd.random()
            if roll < 0.5:
                fail_times = 0 if rnd.random() < 0.8 else rnd.choice([1, 2, 5])
                task = dowork.Task(resize_image, args=(n, fail_times), after=record)
            else:
                task = dowork.Task(send_email, args=(n, rnd.random() < 0.05), after=record)
            queue.enqueue(task)
        while len(queue):
            done = sum(outcomes.values())
            bar = "#" * int(30 * done / args.tasks)
            print(f"\r[{bar:<30}] {done}/{args.tasks} done", end="", file=sys.stderr)
            time.sleep(0.05)
    elapsed = time.perf_counter() - start
    print(f"\r[{'#' * 30}] {args.tasks}/{args.tasks} done", file=sys.stderr)
    print()
    print(f"{'outcome':<12}{'tasks':>8}")
    for name in ("succeeded", "failed", "cancelled"):
        print(f"{name:<12}{outcomes[name]:>8}")
    print(f"{'retries':<12}{retried['retries']:>8}")
    print(f"{'elapsed':<12}{elapsed:>7.2f}s  ({args.tasks / elapsed:,.0f} tasks/s)")
    ok = sum(outcomes.values()) == args.tasks
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
