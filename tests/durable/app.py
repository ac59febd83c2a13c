"""A small application with a durable queue, imported by the tests and by worker processes.

``DOWORK_TEST_DB`` names the SQLite file; ``DOWORK_TEST_LEDGER`` a file where every task run
appends a line (the ledger lives outside the backend under test).
"""

from __future__ import annotations

import asyncio
import os
import time

import dowork
from dowork import DurableSettings

DB = os.environ.get("DOWORK_TEST_DB", "dowork-test.sqlite3")
BACKEND = os.environ.get("DOWORK_TEST_BACKEND") or f"sqlite:///{DB}"
LEDGER = os.environ.get("DOWORK_TEST_LEDGER")
LEASE = float(os.environ.get("DOWORK_TEST_LEASE", "2.0"))

queue = dowork.Queue(
    "app",
    backend=BACKEND,
    concurrency=4,
    durable=DurableSettings(lease=LEASE, maintenance=LEASE / 4),
    log=False,
)


def _ledger(line: str) -> None:
    if LEDGER:
        with open(LEDGER, "a") as f:
            f.write(line + "\n")


@queue.task(name="record")
def record(n: int) -> int:
    """Append the task's number to the ledger and return it."""
    _ledger(f"done {n}")
    return n


@queue.task(name="slow")
def slow(n: int, seconds: float) -> int:
    """Sleep, then record: a task long enough to kill a worker in the middle of."""
    _ledger(f"started {n}")
    time.sleep(seconds)
    _ledger(f"done {n}")
    return n


@queue.task(name="flaky", retries=3, backoff="fixed", base_delay=0.01)
async def flaky(n: int, fail: int) -> str:
    """Fail `fail` times, then succeed."""
    await asyncio.sleep(0)
    attempt = dowork.current_task().attempts
    if attempt <= fail:
        raise ConnectionError(f"attempt {attempt}")
    return f"ok {n} after {attempt}"


def main() -> None:
    """Run a worker until SIGTERM (warm shutdown) or SIGKILL."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: queue.stop())
    queue.run()


if __name__ == "__main__":
    main()
