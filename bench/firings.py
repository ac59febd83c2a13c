"""Many schedules due at once on a durable queue (Redis): how long their firings take.

Each round starts a redis-server of its own (``tests/redis_server.py``), declares ``--n``
``every(60)`` schedules on a queue with a ``FakeClock``, starts it (a worker: it claims and
runs the firings too, as in production), moves the clock past the next grid point so that
every schedule is due at once, and times until every firing is stored (each schedule's
``runs`` is 1), then until every one has run. With ``--workers W``, W such queues (on
connections of their own, in this one process) fire the same schedules: "stored" is then
until every worker's firing is stored or refused as pushed by another. It prints, per
round, those two times and the process's CPU time until each (``time.process_time``, less
sensitive to the machine's load than wall time; the worker's claims and runs overlap the
pushes, so "cpu ran" is the fair total). To compare two commits, run it against each
(``PYTHONPATH=<other>/src``), alternating, under ``flock /work/bench.lock``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.redis_server import RedisServer

import dowork
from dowork.backends import RedisBackend

START = 1_700_000_000.0
WHAT = ("stored", "ran", "cpu stored", "cpu ran")
ran = [0]


def job(n: int) -> int:
    ran[0] += 1
    return n


def one_round(n: int, workers: int, directory: Path) -> tuple[float, float, float, float]:
    """Seconds until every firing is stored and until every one ran, and the CPU of each."""
    server = RedisServer(directory)
    server.start()
    ran[0] = 0
    prefix = f"fire{uuid.uuid4().hex[:8]}"
    try:
        clock = dowork.FakeClock(START)
        queues = []
        schedules = []
        for _ in range(workers):  # each on its own connections, as separate processes are
            backend = RedisBackend(
                server.url,
                prefix=prefix,
                connect_timeout=60.0,
                socket_timeout=60.0,
                pool_timeout=120.0,
            )
            queue = dowork.Queue(
                "sched",
                backend=backend,
                clock=clock,
                log=False,
                durable=dowork.DurableSettings(lease=60.0, maintenance=5.0),
            )
            queue.task(name="job")(job)
            schedules += [queue.every(60, job, i) for i in range(n)]
            queues.append(queue)
        for queue in queues:
            queue.start()
        try:
            cpu_began = time.process_time()
            began = time.monotonic()
            clock.set(START + 61)  # past the next grid point: all are due
            while sum(s.runs + s.fired_elsewhere for s in schedules) < n * workers:
                time.sleep(0.005)
            stored = time.monotonic() - began
            cpu_stored = time.process_time() - cpu_began
            while ran[0] < n:
                time.sleep(0.005)
            done = time.monotonic() - began
            cpu_done = time.process_time() - cpu_began
        finally:
            for queue in queues:
                queue.shutdown(timeout=30)
        assert sum(s.runs for s in schedules) == n, "a firing stored twice or not at all"
        return stored, done, cpu_stored, cpu_done
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="schedules due at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=1, help="queues firing the same schedules (one process)"
    )
    args = parser.parse_args()
    print(f"dowork from {Path(dowork.__file__).parent}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            row = one_round(args.n, args.workers, Path(tmp) / f"r{r}")
            rows.append(row)
            print(
                f"  round {r + 1}: "
                + "  ".join(f"{w} {v:6.2f} s" for w, v in zip(WHAT, row, strict=True))
            )
    for i, what in enumerate(WHAT):
        print(f"  median {what:<10} {statistics.median(r[i] for r in rows):6.2f} s")


if __name__ == "__main__":
    main()
