"""An in-memory queue that submits its own work at import, like a web app running its queue.

``DOWORK_TEST_LEDGER`` names a file every task run appends to; ``DOWORK_TEST_TASKS`` how many
slow tasks to submit when the module is imported by a worker.
"""

from __future__ import annotations

import asyncio
import os

import dowork

LEDGER = os.environ.get("DOWORK_TEST_LEDGER")
queue = dowork.Queue("mem", concurrency=4)


def _ledger(line: str) -> None:
    if LEDGER:
        with open(LEDGER, "a") as f:
            f.write(line + "\n")


@queue.task(name="nap")
async def nap(n: int, seconds: float) -> int:
    """Record the start, sleep, record the end."""
    _ledger(f"started {n}")
    await asyncio.sleep(seconds)
    _ledger(f"done {n}")
    return n


if os.environ.get("DOWORK_TEST_TASKS"):
    for i in range(int(os.environ["DOWORK_TEST_TASKS"])):
        nap.submit(i, float(os.environ.get("DOWORK_TEST_SECONDS", "0.2")))
    queue.submit(lambda: _ledger("closure ran"))  # not restorable: listed, not re-queued

not_a_queue = 42
