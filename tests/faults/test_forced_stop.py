"""A forced stop of a durable worker (second signal, or the grace period over), on SQLite and Redis.

Real ``dowork worker`` processes run ``tests.faults.stopapp``, whose ``hold`` tasks return only
when the test opens their gate, so the test knows which functions had returned when it stopped
the worker. Every function that returned must have its outcome recorded (it never runs again);
only the others are handed back, at once, and run on the next worker; the log says "handed
back" (never "dump") and holds no traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import dowork
from tests.faults.harness import ROOT, counts, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.realtime]


def _producer(
    url: str,
) -> tuple[dowork.Queue, dowork.TaskFunction[..., int], dowork.TaskFunction[..., int]]:
    queue = dowork.Queue("stop", backend=url, log=False)
    finish = queue.task(name="finish")(lambda n: n)
    hold = queue.task(name="hold")(lambda n, gate: n)
    return queue, finish, hold


def _ledger(where: Path) -> list[tuple[str, int, int]]:
    path = where / "ledger.txt"
    if not path.exists():
        return []
    text = path.read_text()
    lines = text[: text.rfind("\n") + 1].splitlines()
    return [(kind, int(n), int(pid)) for kind, n, pid in (line.split() for line in lines)]


def _spawn(url: str, where: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    environ = dict(os.environ, PYTHONPATH=str(ROOT), DOWORK_STOP_BACKEND=url)
    environ["DOWORK_STOP_DIR"] = str(where)
    with open(log, "wb") as err:
        worker = subprocess.Popen(
            [sys.executable, "-m", "dowork", "worker", "tests.faults.stopapp:queue",
             "--no-metrics", "-p", "1", *args],
            cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    wait_until(
        lambda: f"worker {worker.pid} running" in log.read_text() or worker.poll() is not None,
        30,
        "the worker to start",
    )
    assert worker.poll() is None, log.read_text()
    return worker


def _stop_scenario(url: str, where: Path, forced_by: str) -> None:
    """One released and one held task on the two threads, eight quick ones waiting behind.

    Release the first, let every quick task run, then force the stop while the held task
    still runs: exactly the held task is handed back, and it runs once on the next worker.
    """
    queue, finish, hold = _producer(url)
    released = hold.submit(0, "gate-a")
    stuck = hold.submit(1, "gate-b")
    worker = _spawn(
        url, where, where / "first.txt", *(["--grace", "3"] if forced_by == "grace" else [])
    )
    wait_until(lambda: sum(k == "started" for k, _, _ in _ledger(where)) == 2, 30, "2 starts")
    quick = finish.map([(n,) for n in range(10, 18)])
    time.sleep(0.3)  # claimed (prefetched), waiting behind the two busy threads
    worker.send_signal(signal.SIGTERM)  # warm shutdown: it runs what it claimed
    (where / "gate-a").touch()
    ran = {0, *range(10, 18)}
    wait_until(
        lambda: ran <= {n for k, n, _ in _ledger(where) if k == "done"}, 30, "the quick tasks"
    )
    if forced_by == "signal":
        worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 1
    log = (where / "first.txt").read_text()
    left = counts(url, "stop")
    # Every function that returned has its outcome recorded; the held task is handed back.
    assert left == {"succeeded": 9, "retrying": 1}, (left, log)
    for unwanted in ("Traceback", "ERROR", "Current thread", "Thread 0x"):  # nor stack dumps
        assert unwanted not in log, log
    assert "hands its claimed tasks back to its store" in log, log
    assert "handed 1 unfinished task(s) back to" in log, log
    assert "dump" not in log.lower(), log
    if forced_by == "grace":
        assert "grace period of 3s is over: stopping at once" in log, log
    (where / "gate-b").touch()
    second = _spawn(url, where, where / "second.txt")
    try:
        assert stuck.result(timeout=30) == 1
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert released.result(timeout=5) == 0
    assert [t.result(timeout=5) for t in quick] == list(range(10, 18))
    done = Counter(n for k, n, _ in _ledger(where) if k == "done")
    assert done == Counter({n: 1 for n in (*ran, 1)}), done  # none lost, none twice
    starts = Counter(n for k, n, _ in _ledger(where) if k == "started")
    assert (starts[0], starts[1]) == (1, 2), starts  # only the unfinished one ran again
    queue.shutdown(timeout=1)
    print(f"\nforced stop by {forced_by} [{url.split(':')[0]}]: 9 recorded, 1 handed back, 0 twice")


def test_second_signal_records_finished_work_and_hands_back_the_rest(
    store: tuple[str, str], tmp_path: Path
) -> None:
    _stop_scenario(store[1], tmp_path, "signal")


def test_grace_period_over_records_finished_work_and_hands_back_the_rest(
    store: tuple[str, str], tmp_path: Path
) -> None:
    _stop_scenario(store[1], tmp_path, "grace")


def test_an_in_memory_worker_says_it_dumps(tmp_path: Path) -> None:
    """The other backend's words: an in-memory queue dumps (and never says "hand back")."""
    dump = tmp_path / "dump.jsonl"
    environ = dict(os.environ, PYTHONPATH=str(ROOT), DOWORK_TEST_TASKS="8")
    environ.update(DOWORK_TEST_SECONDS="5", DOWORK_TEST_LEDGER=str(tmp_path / "led.txt"))
    log = tmp_path / "err.txt"
    with open(log, "wb") as err:
        worker = subprocess.Popen(
            [sys.executable, "-m", "dowork", "worker", "tests.cli.memapp:queue", "--no-metrics",
             "--dump-file", str(dump)],
            cwd=ROOT, env=environ, stderr=err,
        )  # fmt: skip
    wait_until(lambda: "running" in log.read_text(), 30, "the worker to start")
    worker.send_signal(signal.SIGINT)
    time.sleep(0.2)
    worker.send_signal(signal.SIGINT)
    assert worker.wait(30) == 1
    text = log.read_text()
    assert f"queue mem dumps unfinished tasks to {dump}" in text, text
    assert "dumped" in text, text
    for unwanted in ("hand", "Traceback", "ERROR"):
        assert unwanted not in text, text
