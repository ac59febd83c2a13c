"""The application of the forced-stop tests (``dowork worker tests.faults.stopapp:queue``).

``DOWORK_STOP_BACKEND`` is the store, ``DOWORK_STOP_DIR`` a directory outside it: tasks append
``done N PID`` lines to ``ledger.txt`` there (one ``O_APPEND`` write each), and a ``hold`` task
returns only once the file its ``gate`` names exists in that directory, so a test decides
exactly which functions have returned when it stops the worker.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dowork
from dowork import DurableSettings

DIR = Path(os.environ.get("DOWORK_STOP_DIR", "."))

queue = dowork.Queue(
    "stop",
    backend=os.environ.get("DOWORK_STOP_BACKEND", "sqlite:///dowork-stop.sqlite3"),
    concurrency=2,
    durable=DurableSettings(lease=30.0, maintenance=5.0, prefetch=8, prefetch_window=None),
    log=False,
)


def note(line: str) -> None:
    """Append one line to the ledger in one write."""
    fd = os.open(DIR / "ledger.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{line} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


@queue.task(name="finish")
def finish(n: int) -> int:
    """Return at once."""
    note(f"done {n}")
    return n


@queue.task(name="hold")
def hold(n: int, gate: str) -> int:
    """Note the start, wait (at most a minute) for the file ``gate``, then return."""
    note(f"started {n}")
    deadline = time.monotonic() + 60
    while not (DIR / gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    note(f"done {n}")
    return n
