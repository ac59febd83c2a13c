"""The harness's own promises, which the scenarios' figures rest on."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults.harness import Cluster, stopped, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.realtime]

#: A process whose second thread writes a counter to a file as fast as it can.
_BUSY = """
import os, sys, threading
def count():
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    n = 0
    while True:
        n += 1
        os.pwrite(fd, b"%20d" % n, 0)
threading.Thread(target=count, daemon=True).start()
threading.Event().wait()
"""


def test_a_stopped_worker_runs_no_more_code(tmp_path: Path) -> None:
    """``Cluster.kill(SIGSTOP)`` returns once every thread stopped, not when the signal is sent.

    The signal wakes one thread, which stops the others when it runs; row 6 writes the file
    that lets the stopped worker's tasks end just after the stop, and a thread still running
    then ended them before the pause (2 refusals of 4, beside CPU burners, load 11).
    """
    counter = tmp_path / "counter"
    busy = subprocess.Popen([sys.executable, "-c", _BUSY, str(counter)])
    try:
        wait_until(lambda: counter.exists() and counter.read_bytes().strip() != b"", 30, "a count")
        cluster = Cluster("sqlite:///unused", tmp_path)
        cluster.kill(busy, signal.SIGSTOP)
        assert stopped(busy.pid)
        before = counter.read_bytes()
        time.sleep(0.05)  # (a running thread counts thousands in that time)
        assert counter.read_bytes() == before
        busy.send_signal(signal.SIGCONT)
        wait_until(lambda: counter.read_bytes() != before, 30, "the count to go on")
        assert not stopped(busy.pid)
    finally:
        busy.kill()
        busy.wait(10)
