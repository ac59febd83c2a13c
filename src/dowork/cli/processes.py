"""``dowork worker --processes N`` and ``--reload``: start worker processes and watch over them.

The processes run ``python -m dowork worker`` with the worker's own arguments, less these
options and --backend: the URL (which may hold a password) goes through ``$DOWORK_BACKEND``,
which other users cannot read in ``ps``. The supervisor forwards SIGINT and SIGTERM to them.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import click

from .common import BACKEND_ENV

__all__ = ["child_argv", "start_processes"]

log = logging.getLogger("dowork")


def start_processes(
    backend: str | None, processes: int, metrics_port: int, dump_file: str, *, reload: bool
) -> None:
    """Run the worker in processes of its own: reloaded on changes, or ``processes`` of them."""
    argv = child_argv(sys.argv[1:])
    if backend:  # the children read it from the environment: no password in 'ps'
        os.environ[BACKEND_ENV] = backend
    if reload:
        _reload(argv)
        return
    sys.exit(_supervise(argv, processes, metrics_port, dump_file))


def child_argv(argv: Sequence[str]) -> list[str]:
    """The worker's own arguments for the processes it starts.

    Without --processes/--reload, and without --backend: the URL (which may hold a password)
    goes through ``$DOWORK_BACKEND`` instead, which other users cannot read in ``ps``.
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
    return [sys.executable, "-m", "dowork", *out]


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


def _supervise(argv: list[str], count: int, metrics_port: int, dump_file: str) -> int:
    """Run ``count`` worker processes, restart any that dies, forward stop signals."""
    stopping = {"signals": 0}

    def spawn(index: int) -> subprocess.Popen[bytes]:
        child = list(argv)
        if metrics_port:
            child += ["--metrics-port", str(metrics_port + index)]
        child += ["--dump-file", f"{dump_file}.{index}"]
        process = subprocess.Popen(child)
        click.echo(f"dowork: worker {index} started (pid {process.pid})", err=True)
        return process

    children = {i: spawn(i) for i in range(count)}

    def forward(signum: int, frame: object) -> None:
        stopping["signals"] += 1
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    click.echo(f"dowork: supervising {count} worker processes", err=True)
    restarts: dict[int, float] = {}
    while True:
        time.sleep(0.2)
        alive = False
        for index, child in list(children.items()):
            code = child.poll()
            if code is None:
                alive = True
                continue
            if stopping["signals"]:
                continue
            wait = restarts.get(index, 0.0)
            log.warning("worker %d (pid %d) exited with %s; restarting", index, child.pid, code)
            time.sleep(min(5.0, wait))
            restarts[index] = min(5.0, (wait or 0.1) * 2)
            children[index] = spawn(index)
            alive = True
        if not alive:
            # A child stopped by the signal we forwarded before it set up its handlers
            # ended as cleanly as one that handled it.
            clean = (0, -signal.SIGTERM, -signal.SIGINT)
            return 0 if all(c.returncode in clean for c in children.values()) else 1
