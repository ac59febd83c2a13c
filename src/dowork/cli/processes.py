"""``dowork worker --processes N`` and ``--reload``: start worker processes and watch over them.

With ``--processes N`` the worker runs its queues itself and starts N - 1 more processes beside
it (``auto``, the default: one per core for stores processes share). They run ``python -m
dowork worker`` with the worker's own arguments and ``--processes 1``, less --reload and
--backend: the URL (which may hold a password) goes through ``$DOWORK_BACKEND``, which other
users cannot read in ``ps``. The first process passes SIGINT and SIGTERM on to them.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

import click

from .common import BACKEND_ENV

__all__ = ["Children", "child_argv", "parent_gone", "process_count", "reload_worker"]

#: The signals that stop a worker: blocked in a process ``Children`` starts until it handles them.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

log = logging.getLogger("dowork")


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def process_count(asked: str, shared: bool) -> int:
    """How many worker processes ``--processes`` asks for: a number, or ``auto``.

    ``auto`` is one per usable core when every queue's store is shared by processes (SQLite,
    Redis), and one otherwise: in-memory queues would each run their own copy of the tasks
    and schedules a process submits.
    """
    if asked == "auto":
        return usable_cores() if shared else 1
    return int(asked)


def reload_worker(backend: str | None) -> None:
    """Run the worker in a process of its own, restarted whenever the code changes."""
    if backend:  # the child reads it from the environment: no password in 'ps'
        os.environ[BACKEND_ENV] = backend
    _reload(child_argv(sys.argv[1:]))


def child_argv(argv: Sequence[str]) -> list[str]:
    """The worker's own arguments for the processes it starts.

    Without --reload and --backend, and with ``--processes 1``: the URL (which may hold a
    password) goes through ``$DOWORK_BACKEND`` instead, which other users cannot read in ``ps``.
    """
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("-p", "--processes", "--backend"):
            skip = True
            continue
        if arg.startswith(("--processes=", "--backend=")) or arg == "--reload":
            continue
        if arg.startswith("-p") and not arg.startswith("--"):  # -p4
            continue
        out.append(arg)
    return [sys.executable, "-m", "dowork", *out, "--processes", "1"]


def _reload(argv: list[str]) -> None:
    import watchfiles

    click.echo(f"dowork: watching {os.getcwd()} for changes", err=True)
    watchfiles.run_process(
        os.getcwd(),
        target=shlex.join(argv),
        target_type="command",
        callback=lambda changes: click.echo(
            f"dowork: {len(changes)} change(s), restarting", err=True
        ),
    )


def start_blocked(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` with SIGINT and SIGTERM blocked (a child inherits the signal mask).

    A signal passed on while the process is still starting then waits for the handlers
    ``run_until_signalled`` sets up (and unblocks) instead of killing the interpreter midway
    through its start-up (exit status 1, 'Fatal Python error: init_import_site').
    """
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return subprocess.Popen(argv, env=env)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


class Children:
    """The worker processes beside this one (``--processes N``: this one and N - 1 more).

    They start once this process's queues run (so they do not delay its first task), are
    restarted when one dies (after 0.1 s, doubling to 5 s while they keep dying), get every
    signal this process catches, and are waited for when it stops. Each knows this process's
    pid (``$DOWORK_PARENT``) and shuts down warm if it is gone.
    """

    def __init__(self, count: int, metrics_port: int, dump_file: str, backend: str | None) -> None:
        self._argv = child_argv(sys.argv[1:])
        self._env = dict(os.environ, DOWORK_PARENT=str(os.getpid()))
        if backend:  # the children read it from the environment: no password in 'ps'
            self._env[BACKEND_ENV] = backend
        self._count, self._port, self._dump = count, metrics_port, dump_file
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.RLock()  # a signal may come while the main thread spawns
        self._stopping = threading.Event()
        self._signalled = False

    def start(self) -> None:
        """Start the other processes and a thread that restarts any that dies."""
        with self._lock:
            for index in range(1, self._count):
                if not self._stopping.is_set():
                    self._running[index] = self._spawn(index)
        threading.Thread(target=self._watch, name="dowork-children", daemon=True).start()

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        argv = list(self._argv)
        if self._port:
            argv += ["--metrics-port", str(self._port + index)]
        argv += ["--dump-file", f"{self._dump}.{index}"]
        process = start_blocked(argv, self._env)
        click.echo(f"dowork: worker {index} started (pid {process.pid})", err=True)
        return process

    def _watch(self) -> None:
        pause: dict[int, float] = {}
        due: dict[int, float] = {}
        while not self._stopping.wait(0.2):
            with self._lock:
                for index, child in list(self._running.items()):
                    code = child.poll()
                    if code is None or self._stopping.is_set():
                        continue
                    if index not in due:
                        log.warning("worker %d (pid %d) exited with %s; restarting", index,
                                    child.pid, code)  # fmt: skip
                        pause[index] = min(5.0, pause.get(index, 0.05) * 2)
                        due[index] = time.monotonic() + pause[index]
                    elif time.monotonic() >= due.pop(index):
                        self._running[index] = self._spawn(index)

    def forward(self, signum: int) -> None:
        """Pass a signal this process caught on to the others (and restart none from now).

        Called from the signal handler, which can run in the main thread between a process's
        start and its entry in ``_running``: a thread passes the signal on under the lock,
        so once every process started so far is known.
        """
        self._stopping.set()
        self._signalled = True  # (finish() sends no SIGTERM of its own)
        threading.Thread(target=self._pass_on, args=(signum,), daemon=True).start()

    def _pass_on(self, signum: int) -> None:
        with self._lock:
            for child in self._running.values():
                if child.poll() is None:
                    child.send_signal(signum)

    def finish(self) -> bool:
        """Stop the others (SIGTERM, unless a signal was passed on), wait; whether all clean."""
        self._stopping.set()
        with self._lock:
            if not self._signalled:
                for child in self._running.values():
                    if child.poll() is None:
                        child.send_signal(signal.SIGTERM)
            children = list(self._running.values())
        # A child stopped by the signal before it set up its handlers ended cleanly too.
        clean = (0, -signal.SIGTERM, -signal.SIGINT)
        return all(child.wait() in clean for child in children)


def parent_gone() -> Callable[[], bool] | None:
    """For a process that ``Children`` started: whether the process that started it is gone."""
    parent = os.environ.pop("DOWORK_PARENT", None)
    if not parent or not parent.isdigit():
        return None
    pid = int(parent)

    def gone() -> bool:
        if os.getppid() == pid:
            return False
        log.warning("the worker process that started this one (pid %d) is gone: warm shutdown",
                    pid)  # fmt: skip
        return True

    return gone
