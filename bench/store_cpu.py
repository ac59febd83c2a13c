"""Redis server CPU per task, by phase: push, claim, settle (``INFO commandstats``).

Starts its own ``redis-server`` on a free loopback port (so nothing else is counted), then
for each round pushes ``--n`` tasks in batches, claims them ``--batch`` at a time and settles
them as succeeded, reading the server's command time between the phases. Prints, per phase,
the median and the spread of the rounds in microseconds of Redis CPU per task: the figure
issue 16 asks about (submit + claim + settle), and a way to compare two commits of dowork
without the noise of a whole worker (run it in each checkout).

The workload is a worker's: times from the clock (17 significant digits, as ``time.time()``
gives them), and each outcome carries the history line a worker sends with it.
``--synthetic`` is the workload of the figures before 2026-12-07: times 1.0, 2.0 and 3.0 and no
history line (short scores and small hashes: cheaper). ``--callgrind`` runs the server under
valgrind's callgrind instead and prints instructions per task, load-insensitive: the whole
server's and the scripts' own (``evalGenericCommand`` inclusive), from one round after a
warm-up (``--n 1000`` takes a few seconds). Each round has a queue of its own on a new prefix,
so the listings of finished tasks and the expiry zset start empty, and their first 128 members
each go into a listpack zset, where an insert parses the score of every member before it
(about 5k instructions a task at ``--n 3000``); ``--steady`` runs every round, the warm-up
included, on one queue and keeps their records, as on a Redis that keeps finished tasks a
while (7 days by default). ``--started K`` has each settle batch send the STARTED marks of K of
its tasks before their outcomes, as a busy worker's batches often do (a mark and the outcome
of one task in one batch).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import itertools
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable

import redis

from dowork.backends import ClaimRequest, Outcome, Record, RedisBackend, Settlement


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_usec(client: redis.Redis) -> float:
    """Microseconds Redis spent executing the scripts so far (every call of one).

    Only the script rows: a command a script runs is counted on its own row too, and within
    the script's, so a sum of every row counts a script's work twice.
    """
    stats = client.info("commandstats")
    rows = ("cmdstat_evalsha", "cmdstat_eval")
    return float(sum(stats[k]["usec"] for k in rows if k in stats))


def attempt_line(token: int, now: float, took: float) -> str:
    """The history line a worker sends with a succeeded outcome (see durable/flush.py)."""
    return f'{{"n":{token},"start":{now - took!r},"took":{took!r},"outcome":"succeeded"}}'


async def one_round(
    url: str, n: int, args: argparse.Namespace, mark: Callable[[], float]
) -> list[float]:
    """Push, claim and settle ``n`` tasks; ``mark()`` before and after each phase."""
    batch, synthetic, tag = args.batch, args.synthetic, time.monotonic_ns()
    backend = RedisBackend(url, prefix="cpu" if args.steady else f"cpu{tag}")
    clock = (lambda: 1.0) if synthetic else time.time
    at = clock()
    ids = [f"{next(_rounds)}t" if args.steady else "t"] * n  # (steady: unique across rounds)
    records = [Record(f"{ids[i]}{i}", "q", "job", b'{"a":[1],"k":{}}', at, at) for i in range(n)]
    marks = [mark()]
    for start in range(0, n, 100):
        await backend.push(records[start : start + 100])
    marks.append(mark())
    claimed: list[Record] = []
    while len(claimed) < n:
        got = await backend.claim(ClaimRequest("q", clock() + 1.0, batch, 30.0, "w"))
        if not got:
            break
        claimed += got
    marks.append(mark())
    now = clock() + 2.0
    for start in range(0, len(claimed), batch):
        chunk = claimed[start : start + batch]
        outcomes = [  # (--started: a busy worker's batch, a STARTED mark then the outcome)
            Settlement(r.id, r.attempts, Outcome.STARTED, now) for r in chunk[: args.started]
        ]
        for i, r in enumerate(chunk):
            took = 0.000734 + i * 1.3e-7
            line = None if synthetic else attempt_line(r.attempts, now, took)
            outcomes.append(
                Settlement(r.id, r.attempts, Outcome.SUCCEEDED, now, result=b"1", attempt=line)
            )
        await backend.settle(outcomes)
    marks.append(mark())
    await backend.close()
    return [(marks[i + 1] - marks[i]) / n for i in range(3)]


PHASES = ("push", "claim", "settle")
_rounds = itertools.count()


def timed(url: str, client: redis.Redis, args: argparse.Namespace) -> None:
    def mark() -> float:
        return server_usec(client)

    rounds = []
    for _ in range(args.rounds + 1):  # (the first is a warm-up)
        client.config_resetstat()
        rounds.append(asyncio.run(one_round(url, args.n, args, mark)))
        if not args.steady:
            client.flushdb()
    rounds = rounds[1:]
    print(f"Redis server CPU per task (µs), {args.rounds} rounds of {args.n} tasks:")
    for p, phase in enumerate(PHASES):
        values = [r[p] for r in rounds]
        median = statistics.median(values)
        spread = (max(values) - min(values)) / median if median else 0.0
        print(f"  {phase:<7} median {median:6.2f}   min {min(values):6.2f}   spread {spread:4.0%}")
    totals = [sum(r) for r in rounds]
    print(f"  total   median {statistics.median(totals):6.2f}   min {min(totals):6.2f}")


def counted(url: str, client: redis.Redis, args: argparse.Namespace, pid: int, out: str) -> None:
    """Instructions per task by phase, from a callgrind dump at every mark."""
    dumps: list[str] = []

    def mark() -> float:
        before = set(glob.glob(out + ".*"))
        subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
        for _ in range(600):
            new = set(glob.glob(out + ".*")) - before
            if new:
                dumps.append(new.pop())
                break
            time.sleep(0.05)
        return 0.0

    asyncio.run(one_round(url, 200, args, lambda: 0.0))  # warm-up
    if not args.steady:
        client.flushdb()
    asyncio.run(one_round(url, args.n, args, mark))
    time.sleep(1)  # (the last dump written whole)
    print(f"Redis server instructions per task (k), callgrind, {args.n} tasks:")
    sums = [0.0, 0.0]
    for phase, dump in zip(PHASES, dumps[1:], strict=True):
        server, scripts = instructions(dump)
        sums[0] += server / args.n
        sums[1] += scripts / args.n
        print(f"  {phase:<7} server {server / args.n / 1000:7.1f}   scripts "
              f"{scripts / args.n / 1000:7.1f}")  # fmt: skip
    print(f"  total   server {sums[0] / 1000:7.1f}   scripts {sums[1] / 1000:7.1f}")


def instructions(dump: str) -> tuple[int, int]:
    """A dump's instructions: the whole server's, and within ``evalGenericCommand``."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    total = re.search(r"^\s*([\d,]+) .*PROGRAM TOTALS", text, re.M)
    script = re.search(r"^\s*([\d,]+) .*:evalGenericCommand ", text, re.M)
    server, scripts = (int(m.group(1).replace(",", "")) if m else 0 for m in (total, script))
    return server, scripts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="tasks per round")
    parser.add_argument("--batch", type=int, default=64, help="claim and settle batch")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--synthetic", action="store_true",
                        help="times 1.0-3.0, no history line (as before 2026-12-07)")  # fmt: skip
    parser.add_argument("--steady", action="store_true",
                        help="rounds on one queue, the earlier rounds' records kept")  # fmt: skip
    parser.add_argument("--started", type=int, default=0,
                        help="STARTED marks a settle batch sends first")  # fmt: skip
    parser.add_argument("--callgrind", action="store_true",
                        help="count instructions under valgrind (one round)")  # fmt: skip
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        parser.error("redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", work]  # fmt: skip
        out = os.path.join(work, "callgrind.out")
        if args.callgrind:
            command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(url)
            for _ in range(600):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            if args.callgrind:
                counted(url, client, args, server.pid, out)
            else:
                timed(url, client, args)
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
