"""Redis server CPU per task, by phase: push, claim, settle (``INFO commandstats``).

Starts its own ``redis-server`` on a free loopback port (so nothing else is counted), then
for each round pushes ``--n`` tasks in batches, claims them ``--batch`` at a time and settles
them as succeeded, reading the server's command time between the phases. Prints, per phase,
the median and the spread of the rounds in microseconds of Redis CPU per task: the figure
issue 16 asks about (submit + claim + settle), and a way to compare two commits of dowork
without the noise of a whole worker (run it in each checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

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


async def one_round(url: str, client: redis.Redis, n: int, batch: int) -> dict[str, float]:
    backend = RedisBackend(url, prefix=f"cpu{time.monotonic_ns()}")
    records = [Record(f"t{i}", "q", "job", b'{"a":[1],"k":{}}', 1.0, 1.0) for i in range(n)]
    client.config_resetstat()
    marks = [server_usec(client)]
    for start in range(0, n, 100):
        await backend.push(records[start : start + 100])
    marks.append(server_usec(client))
    claimed: list[Record] = []
    while len(claimed) < n:
        got = await backend.claim(ClaimRequest("q", 2.0, batch, 30.0, "w"))
        if not got:
            break
        claimed += got
    marks.append(server_usec(client))
    for start in range(0, len(claimed), batch):
        chunk = claimed[start : start + batch]
        outcomes = [
            Settlement(r.id, r.attempts, Outcome.SUCCEEDED, 3.0, result=b"1") for r in chunk
        ]
        await backend.settle(outcomes)
    marks.append(server_usec(client))
    await backend.close()
    client.flushdb()
    phases = ("push", "claim", "settle")
    return {phase: (marks[i + 1] - marks[i]) / n for i, phase in enumerate(phases)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="tasks per round")
    parser.add_argument("--batch", type=int, default=64, help="claim and settle batch")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        parser.error("redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", work],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(url)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            rounds = [asyncio.run(one_round(url, client, args.n, args.batch))]  # warm-up
            rounds = [
                asyncio.run(one_round(url, client, args.n, args.batch)) for _ in range(args.rounds)
            ]
            print(f"Redis server CPU per task (µs), {args.rounds} rounds of {args.n} tasks:")
            for phase in ("push", "claim", "settle"):
                values = [r[phase] for r in rounds]
                median = statistics.median(values)
                spread = (max(values) - min(values)) / median if median else 0.0
                low = min(values)
                print(f"  {phase:<7} median {median:6.2f}   min {low:6.2f}   spread {spread:4.0%}")
            totals = [sum(r.values()) for r in rounds]
            print(f"  total   median {statistics.median(totals):6.2f}   min {min(totals):6.2f}")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
