"""What a store's claim costs in Python, per claimed task: a loop of claims, nothing else.

Pushes ``--n`` records to one queue of an in-memory or SQLite store, then claims them
``--batch`` at a time until none is left, under the flow control a scenario asks for:

- ``plain``: no priorities, keys or limits (the fast path);
- ``prio``: priorities 0-2 (a claim merges the levels by rank);
- ``keyed``: 20 concurrency keys with a ``per_key`` share (the walk in turn, ``flow.Turns``);
- ``rated``: a queue rate limit that never bites (every record asks ``flow.Pacer``);
- ``keyed_rated``: both.

With ``--settle``, each claimed batch is then settled as succeeded, with a result and the
duration a worker sends (its history line), as a worker's outcomes are: the store's cost per
task of a claim and its outcome, without the worker around them.

Load-independent figures come from counting instructions: run it under callgrind with and
without ``--setup-only`` (the push alone) and divide the difference by ``--n``::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/claim_cpu.py sqlite keyed
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/claim_cpu.py \
        sqlite keyed --setup-only

The cyclic garbage collector is off (``gc.disable()``), so that two commits compare without
collections falling at different points of the loop, and with ``PYTHONHASHSEED=0`` two runs of
one commit count the same. Without valgrind it prints the CPU the claims took, per task.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time

from dowork.backends import ClaimRequest, MemoryBackend, Outcome, Record, Settlement, SQLiteBackend

SCENARIOS = ("plain", "prio", "keyed", "rated", "keyed_rated")
#: The duration a worker sends with an outcome, for its history line (whole nanoseconds).
TOOK = 123_456 / 1e9


def records(n: int, scenario: str) -> list[Record]:
    out = []
    for i in range(n):
        record = Record(f"t{i:06d}", "q", "job", b"{}", 1.0 + (i % 7) * 0.001, 1.0)
        if scenario == "prio":
            record.priority = i % 3
        if scenario.startswith("keyed"):
            record.concurrency_key = f"k{i % 20}"
        out.append(record)
    return out


async def run(
    store: str, scenario: str, n: int, batch: int, setup_only: bool, settle: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        backend = MemoryBackend() if store == "memory" else SQLiteBackend(os.path.join(tmp, "d"))
        await backend.open()
        pushed = records(n, scenario)
        for start in range(0, n, 500):
            await backend.push(pushed[start : start + 500], fresh=True)
        rates = {"": (10**9, 1.0)} if scenario.endswith("rated") else None
        per_key = 1000 if scenario.startswith("keyed") else None
        request = ClaimRequest("q", 2.0, batch, 30.0, "w", None, 5, rates=rates, per_key=per_key)
        claimed = 0
        started = time.process_time()
        while not setup_only:
            got = await backend.claim(request)
            if not got:
                break
            claimed += len(got)
            if settle:
                outcomes = [
                    Settlement(r.id, r.attempts, Outcome.SUCCEEDED, 3.0, result=b"null",
                               took=TOOK)
                    for r in got
                ]  # fmt: skip
                assert await backend.settle(outcomes) == []
        cpu = time.process_time() - started
        await backend.close()
    if not setup_only:
        assert claimed == n, claimed
        what = "claimed and settled" if settle else "claimed"
        print(f"{store} {scenario}: {n} {what}, {cpu / n * 1e6:.1f} us CPU per task")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", choices=("memory", "sqlite"))
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--n", type=int, default=1000, help="records pushed, then claimed")
    parser.add_argument("--batch", type=int, default=10, help="records a claim asks for")
    parser.add_argument("--setup-only", action="store_true", help="push, claim nothing")
    parser.add_argument("--settle", action="store_true", help="settle each claimed batch")
    args = parser.parse_args()
    gc.disable()
    asyncio.run(run(args.store, args.scenario, args.n, args.batch, args.setup_only, args.settle))


if __name__ == "__main__":
    main()
