"""Workers on one SQLite file wake each other across processes (a datagram beside the file).

Each test gives the worker a poll interval of 30 s: only a wake-up can start its task soon.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dowork
from dowork import DurableSettings
from dowork.backends import SQLiteBackend
from dowork.backends.sqlite.wake import WakeChannel

SLOW_POLL = 30.0


def _worker(db: Path) -> tuple[dowork.Queue, SQLiteBackend, threading.Event, list[float]]:
    backend = SQLiteBackend(db, poll_interval=SLOW_POLL)
    queue = dowork.Queue("wake", backend=backend, log=False, durable=DurableSettings())
    started: list[float] = []
    ran = threading.Event()

    @queue.task(name="wake:echo")
    def echo(n: int) -> int:
        started.append(time.time())
        ran.set()
        return n

    return queue, backend, ran, started


def _listening(db: Path) -> bool:
    directory = Path(WakeChannel(str(db)).directory)
    return directory.is_dir() and any(directory.iterdir())


def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_a_push_from_another_process_starts_an_idle_workers_task_at_once(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    queue, backend, ran, started = _worker(db)
    queue.start()
    try:
        _wait_for(lambda: _listening(db))
        time.sleep(0.2)  # the worker is idle, waiting up to SLOW_POLL
        producer = textwrap.dedent(
            f"""
            import time, dowork
            q = dowork.Queue("wake", backend="sqlite:///" + {str(db)!r}, log=False)
            @q.task(name="wake:echo")
            def echo(n: int) -> int:
                return n
            echo.submit(7)
            print(time.time())
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", producer], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        pushed = float(out.stdout.split()[-1])
        assert ran.wait(10), "the task did not start"
        # Polling alone would take up to 30 s; a wake-up takes milliseconds (1 s: a busy box).
        assert started[0] - pushed < 1.0, started[0] - pushed
    finally:
        queue.shutdown(timeout=5)
        asyncio.run(backend.close())  # given as an object: closed by its owner
    assert not _listening(db)  # the worker's socket is gone with its store


def test_a_dead_workers_socket_is_removed_and_does_not_fail_a_push(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    channel = WakeChannel(str(db))
    os.makedirs(channel.directory, exist_ok=True)
    stale = os.path.join(channel.directory, "999999-dead")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(stale)
    sock.close()  # bound, then its process "died": the file stays, nobody reads it
    queue = dowork.Queue("wake", backend=f"sqlite:///{db}", log=False)

    @queue.task(name="wake:noop")
    def noop() -> None:
        pass

    noop.submit()  # sends to the dead socket: refused, removed, the push stands
    assert not os.path.exists(stale)
    assert queue.backend is not None
    counts = queue._engine.run_on_home(queue.backend.counts("wake"))
    assert counts.get("pending") == 1
    queue.shutdown(timeout=5)


def test_without_a_wake_channel_polling_still_finds_the_work(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    backend = SQLiteBackend(db, poll_interval=0.05)
    blocker = Path(backend._wake.directory)
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the socket directory would be")
    try:
        queue = dowork.Queue("wake", backend=backend, log=False)

        @queue.task(name="wake:twice")
        def twice(n: int) -> int:
            return 2 * n

        queue.start()
        other = dowork.Queue("wake", backend=f"sqlite:///{db}", log=False)

        @other.task(name="wake:twice")
        def twice_there(n: int) -> int:
            return 2 * n

        handle = twice_there.submit(21)
        assert handle.result(10) == 42
        assert not backend._wake.listening
        queue.shutdown(timeout=5)
        other.shutdown(timeout=5)
    finally:
        blocker.unlink()
