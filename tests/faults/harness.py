"""One fault-injection harness for every backend, in the spirit of Jepsen's total-queue.

Every task carries a unique integer. The producer appends ``submitted`` lines to a ledger
only after ``submit``/``map`` returned (the backend confirmed the write); the task body
(``tests/faults/app.py``) appends ``started``/``done`` lines, one ``O_APPEND`` write each, to a
per-process ledger file outside the backend under test. Faults are injected from outside
(``os.kill``, a ``redis-server`` stopped or paused), and ``check()`` compares the multisets:

- ``lost``: submitted and never done; ``duplicates``: done lines beyond the first per id;
- ``unexpected``: done but never submitted (ids whose submit had an unknown outcome are
  ``uncertain``, not unexpected);
- ``recovery``: for each task a worker had started when it was killed (or stopped) and not
  finished, seconds from the fault to the task's next start in another process.

Workers are real ``dowork worker`` processes (``python -m dowork worker``) with tiny timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dowork
from dowork.backends import Backend, open_backend

ROOT = Path(__file__).resolve().parents[2]
LEASE = 1.0
MAINTENANCE = 0.2  # heartbeat and reaper period (the durable engine runs them together)
APP = "tests.faults.app:queue"
RELEASE = "release"  #: the ledger's file that lets the app's ``hold`` tasks end
T = TypeVar("T")


# -- the ledger --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One ledger line written by a task body."""

    kind: str  #: "started" or "done"
    n: int
    attempt: int
    pid: int
    t: float


def _whole_lines(path: Path) -> list[str]:
    """The file's complete lines: one being written while we read may show only in part.

    (Each line is one ``O_APPEND`` write, so a line is never torn on disk.)
    """
    text = path.read_text()
    return text[: text.rfind("\n") + 1].splitlines()


def read_events(ledger: Path) -> list[Event]:
    """Every ``started``/``done`` line of every worker process, in file order per process."""
    events: list[Event] = []
    for path in sorted(ledger.glob("worker-*.log")):
        for line in _whole_lines(path):
            parts = line.split()
            if len(parts) != 5:  # a torn line on disk cannot happen with O_APPEND; be strict
                raise AssertionError(f"malformed ledger line in {path.name}: {line!r}")
            kind, n, attempt, pid, t = parts
            events.append(Event(kind, int(n), int(attempt), int(pid), float(t)))
    return events


def record_submitted(ledger: Path, ids: Iterable[int]) -> None:
    """Note ids whose submit returned (call only after the backend confirmed them)."""
    text = "".join(f"submitted {n}\n" for n in ids)
    fd = os.open(ledger / "submitted.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def read_submitted(ledger: Path) -> set[int]:
    """Ids the producer saw acknowledged."""
    path = ledger / "submitted.log"
    if not path.exists():
        return set()
    return {int(line.split()[1]) for line in _whole_lines(path)}


def done_ids(ledger: Path) -> set[int]:
    """Distinct ids with a ``done`` line."""
    return {e.n for e in read_events(ledger) if e.kind == "done"}


# -- the checker -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Figures:
    """What one scenario measured: the total-queue counts and the recovery times."""

    scenario: str
    backend: str
    submitted: int = 0
    done: int = 0  #: distinct ids done
    lost: int = 0
    duplicates: int = 0
    unexpected: int = 0
    uncertain: int = 0  #: submits of unknown outcome (the producer died in the call)
    orphaned: int = 0  #: tasks running in a process at the moment it was killed or stopped
    recovery: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def p50(self) -> float:
        """Median recovery seconds (NaN when no task was orphaned)."""
        return percentile(self.recovery, 50)

    @property
    def p99(self) -> float:
        """99th-percentile recovery seconds (NaN when no task was orphaned)."""
        return percentile(self.recovery, 99)

    def line(self) -> str:
        """One human-readable line, as the tests print and the bench tabulates."""
        rec = "-" if not self.recovery else f"{self.p50:.2f}/{self.p99:.2f}s"
        extra = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (
            f"{self.scenario} [{self.backend}]: submitted {self.submitted}, lost {self.lost}, "
            f"duplicates {self.duplicates}, unexpected {self.unexpected}, orphaned "
            f"{self.orphaned}, recovery p50/p99 {rec} {extra}"
        ).rstrip()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "scenario": self.scenario,
            "backend": self.backend,
            "submitted": self.submitted,
            "done": self.done,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "uncertain": self.uncertain,
            "orphaned": self.orphaned,
            "recovery_p50": None if not self.recovery else round(self.p50, 3),
            "recovery_p99": None if not self.recovery else round(self.p99, 3),
            **self.extra,
        }


def check(
    ledger: Path,
    scenario: str,
    backend: str,
    faults: Iterable[tuple[int, float]] = (),
    uncertain: Iterable[int] = (),
) -> Figures:
    """Compare the producer's and the workers' ledgers (Jepsen's total-queue checker).

    ``faults`` are ``(pid, time)`` of processes killed or stopped; every task that process
    had started and not finished by then is an orphan whose recovery is timed.
    """
    submitted = read_submitted(ledger)
    unsure = set(uncertain) - submitted
    events = read_events(ledger)
    done = Counter(e.n for e in events if e.kind == "done")
    figures = Figures(scenario, backend, submitted=len(submitted), done=len(done))
    figures.lost = len(submitted - set(done))
    figures.duplicates = sum(done.values()) - len(done)
    figures.unexpected = len(set(done) - submitted - unsure)
    figures.uncertain = len(unsure)
    for pid, at in faults:
        mine = [e for e in events if e.pid == pid and e.t <= at]
        finished = {(e.n, e.attempt) for e in mine if e.kind == "done"}
        orphans = {e.n for e in mine if e.kind == "started" and (e.n, e.attempt) not in finished}
        for n in orphans:
            figures.orphaned += 1
            later = [
                e.t
                for e in events
                if e.n == n and e.kind == "started" and e.t > at and e.pid != pid
            ]
            figures.recovery.append(min(later) - at if later else math.inf)
    return figures


def report(figures: Figures) -> Figures:
    """Print the figures and, with ``DOWORK_FAULTS_REPORT=file``, append them as JSON."""
    print(f"\n{figures.line()}")
    target = os.environ.get("DOWORK_FAULTS_REPORT")
    if target:
        with open(target, "a") as f:
            f.write(json.dumps(figures.as_dict()) + "\n")
    return figures


# -- processes ---------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll ``predicate`` every 20 ms; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


WORKER = (sys.executable, "-m", "dowork", "worker")


def stopped(pid: int) -> bool:
    """Whether every thread of process ``pid`` is stopped (Linux ``/proc``).

    ``kill(pid, SIGSTOP)`` returns before that: the signal wakes one thread, which stops the
    others once it runs, and on a busy machine the others may run on for a while meanwhile.
    """
    states = []
    for thread in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            states.append((thread / "stat").read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


class Cluster:
    """Worker processes on one backend, started, killed, stopped and paused by the harness."""

    def __init__(
        self,
        url: str,
        ledger: Path,
        *,
        lease: float = LEASE,
        maintenance: float = MAINTENANCE,
        prefetch: int | str = 32,
        target: str = APP,
    ) -> None:
        self.url = url
        self.ledger = ledger
        self.target = target
        self.env = dict(os.environ)
        self.env.update(
            PYTHONPATH=str(ROOT),
            DOWORK_FAULTS_BACKEND=url,
            DOWORK_FAULTS_LEDGER=str(ledger),
            DOWORK_FAULTS_LEASE=str(lease),
            DOWORK_FAULTS_MAINTENANCE=str(maintenance),
            DOWORK_FAULTS_PREFETCH=str(prefetch),
        )
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}
        self.faults: list[tuple[int, float]] = []  #: (pid, time) of each kill or stop
        self.exits: dict[int, int] = {}  #: pid -> exit status of workers that ended

    def spawn(self, *args: str, ready: bool = True) -> subprocess.Popen[bytes]:
        """Start ``dowork worker`` (with ``args``); with ``ready``, wait until it runs."""
        log = self.ledger / f"stderr-{len(self.workers)}.txt"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                # One process per worker: the harness starts and kills them one by one.
                [*WORKER, self.target, "--no-metrics", "-p", "1", *args],
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=ROOT,
                env=self.env,
            )
        self.workers.append(proc)
        self.logs[proc.pid] = log
        if ready:
            wait_until(
                lambda: f"worker {proc.pid} running" in log.read_text() or proc.poll() is not None,
                30,
                f"worker {proc.pid} to start",
            )
            assert proc.poll() is None, self.stderr(proc)
        return proc

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        """What a worker wrote to stderr (its log)."""
        return self.logs[proc.pid].read_text(errors="replace")

    def alive(self) -> list[subprocess.Popen[bytes]]:
        """Workers still running."""
        return [w for w in self.workers if w.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> float:
        """Send ``sig`` (SIGKILL by default, or SIGSTOP) and record the fault time.

        Returns once the process is gone (SIGKILL) or every thread of it stopped (SIGSTOP).
        """
        at = time.time()
        os.kill(proc.pid, sig)
        self.faults.append((proc.pid, at))
        if sig == signal.SIGKILL:
            proc.wait(10)
        elif sig == signal.SIGSTOP:
            wait_until(lambda: stopped(proc.pid), 10, f"worker {proc.pid} to stop")
        return at

    def stop_all(self, timeout: float = 30) -> dict[int, int]:
        """SIGTERM every live worker (warm shutdown) and return pid -> exit status."""
        for proc in self.alive():
            os.kill(proc.pid, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            self.exits[proc.pid] = proc.returncode
        return self.exits

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.alive():
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait(10)


def started_by(ledger: Path, pid: int) -> int:
    """How many tasks process ``pid`` has started."""
    return sum(1 for e in read_events(ledger) if e.kind == "started" and e.pid == pid)


# -- the producer side and the store -----------------------------------------------------------


def _stub(n: int, seconds: float) -> int:  # producers need only the registered name
    return n


def producer(url: str, name: str = "work") -> tuple[dowork.Queue, dowork.TaskFunction[..., int]]:
    """A producer-only queue on ``url`` with the app's task ``name`` (``work``) declared."""
    queue = dowork.Queue("faults", backend=url, log=False)
    return queue, queue.task(name=name)(_stub)


def submit(
    url: str,
    ledger: Path,
    seconds: Iterable[tuple[int, float]],
    batch: int = 500,
    name: str = "work",
) -> None:
    """Submit ``(id, seconds)`` tasks of ``name`` in atomic batches, each recorded once stored."""
    queue, work = producer(url, name)
    try:
        chunk: list[tuple[int, float]] = []
        for item in seconds:
            chunk.append(item)
            if len(chunk) == batch:
                work.map(chunk)
                record_submitted(ledger, (n for n, _ in chunk))
                chunk = []
        if chunk:
            work.map(chunk)
            record_submitted(ledger, (n for n, _ in chunk))
    finally:
        queue.shutdown(timeout=1)


def with_store(url: str, use: Callable[[Backend], Awaitable[T]]) -> T:
    """Open the backend at ``url``, run ``use(backend)`` on a fresh loop, close it."""

    async def go() -> T:
        backend = open_backend(url)
        try:
            await backend.open()
            return await use(backend)
        finally:
            await backend.close()

    return asyncio.run(go())


def counts(url: str, queue: str = "faults") -> dict[str, int]:
    """The queue's records per status."""
    return with_store(url, lambda b: b.counts(queue))


def wait_all_done(ledger: Path, ids: set[int], timeout: float) -> None:
    """Wait until every id in ``ids`` has a ``done`` line."""
    wait_until(lambda: ids <= done_ids(ledger), timeout, f"{len(ids)} tasks to be done")
