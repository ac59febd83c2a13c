"""The application the fault-injection workers run (``dowork worker tests.faults.app:queue``).

Configured by environment variables so that one module serves every backend and timing:
``DOWORK_FAULTS_BACKEND`` (a backend URL), ``DOWORK_FAULTS_LEDGER`` (a directory outside the
backend under test), ``DOWORK_FAULTS_LEASE`` and ``DOWORK_FAULTS_MAINTENANCE`` (seconds),
``DOWORK_FAULTS_PREFETCH``. Every task run appends ``started`` and ``done`` lines to a
per-process ledger file with one ``O_APPEND`` write each, so a SIGKILL can cut a run between
the two lines but never inside one.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dowork
from dowork import DurableSettings
from tests.faults.harness import RELEASE

BACKEND = os.environ.get("DOWORK_FAULTS_BACKEND", "sqlite:///dowork-faults.sqlite3")
LEDGER = os.environ.get("DOWORK_FAULTS_LEDGER", ".")
LEASE = float(os.environ.get("DOWORK_FAULTS_LEASE", "1.0"))
MAINTENANCE = float(os.environ.get("DOWORK_FAULTS_MAINTENANCE", "0.2"))
#: A fixed prefetch of N tasks, or "default": the adaptive default (``DurableSettings()``'s).
PREFETCH = os.environ.get("DOWORK_FAULTS_PREFETCH", "32")
# A fixed prefetch, harsher than the adaptive default: the rows need tasks held behind busy
# slots when a worker dies (a long task holds none by default).
FIXED: dict[str, Any] = (
    {} if PREFETCH == "default" else {"prefetch": int(PREFETCH), "prefetch_window": None}
)
KEEP = os.environ.get("DOWORK_FAULTS_KEEP")  # seconds finished records are kept (soak)

queue = dowork.Queue(
    "faults",
    backend=BACKEND,
    concurrency=4,
    durable=DurableSettings(
        lease=LEASE,
        maintenance=MAINTENANCE,
        **FIXED,
        keep_result=None if KEEP is None else float(KEEP),
        purge_every=min(60.0, float(KEEP or 60)),
    ),
    log=False,
)
_fd: int | None = None


def note(event: str, n: int) -> None:
    """Append ``event id attempt pid time`` to this process's ledger in one write."""
    global _fd
    if _fd is None:
        path = os.path.join(LEDGER, f"worker-{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    attempt = dowork.current_task().attempts
    os.write(_fd, f"{event} {n} {attempt} {os.getpid()} {time.time():.6f}\n".encode())


@queue.task(name="work")
def work(n: int, seconds: float) -> int:
    """The harness's task: note the start, sleep ``seconds``, note the end."""
    note("started", n)
    time.sleep(seconds)
    note("done", n)
    return n


@queue.task(name="hold")
def hold(n: int, seconds: float) -> int:
    """Row 6's task: as ``work``, but it ends only once the ledger holds a ``release`` file.

    The scenario writes that file after it stopped the worker running the task, so the stop
    lands mid-task however long the machine took to start the worker that takes it over.
    """
    note("started", n)
    time.sleep(seconds)
    release = os.path.join(LEDGER, RELEASE)
    while not os.path.exists(release):
        time.sleep(0.01)
    note("done", n)
    return n


@queue.task(name="crash")
def crash(n: int) -> None:
    """A poison task: it kills the worker process running it (row 17)."""
    note("started", n)
    os._exit(1)


@queue.task(name="mixed", retries=1, backoff="fixed", base_delay=0.05)
def mixed(n: int, seconds: float, mode: int) -> int:
    """The soak's mix: mode 0 succeeds, 1 fails once then succeeds, 2 always fails."""
    note("started", n)
    time.sleep(seconds)
    if mode == 2 or (mode == 1 and dowork.current_task().attempts == 1):
        raise RuntimeError(f"planned failure of {n}")
    note("done", n)
    return n
