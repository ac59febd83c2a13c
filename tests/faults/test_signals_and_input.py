"""Rows 9, 10, 15, 16, 17 and 18: bad input, warm and forced shutdown, poison, crash mid-write."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import report
from tests.faults.scenarios import (
    bad_input,
    double_signal,
    poison_task,
    sqlite_crash_while_writing,
    warm_shutdown,
)

pytestmark = [pytest.mark.faults, pytest.mark.realtime]


def test_bad_input_is_dead_lettered_and_never_crashes_a_worker(
    store: tuple[str, str], ledger: Path
) -> None:
    label, url = store
    figures = report(bad_input(url, ledger, label))
    assert figures.extra["worker_crashes"] == 0
    assert figures.extra["worker_pids"] == 1  # one process ran everything
    assert figures.extra["dead_letters"] == figures.extra["injected"]
    assert figures.extra["wrong_reason"] == 0
    assert figures.lost == 0


def test_warm_shutdown_finishes_in_flight_tasks_and_exits_zero(
    store: tuple[str, str], ledger: Path
) -> None:
    label, url = store
    figures = report(warm_shutdown(url, ledger, label))
    assert figures.extra["exit"] == 0
    assert figures.extra["unfinished_at_exit"] == 0
    assert figures.extra["running_at_exit"] == 0  # claimed-but-unstarted handed back
    assert figures.lost == 0
    assert figures.duplicates == 0
    assert figures.extra["started_twice"] == 0


def test_double_signal_hands_tasks_back_and_loses_nothing(
    store: tuple[str, str], ledger: Path
) -> None:
    label, url = store
    figures = report(double_signal(url, ledger, label))
    assert figures.extra["exit"] == 1
    assert figures.extra["exit_s"] < 2.0
    assert figures.extra["running_after_exit"] == 0  # no waiting for a 30 s lease
    assert figures.lost == 0
    assert figures.unexpected == 0


def test_poison_task_is_dead_lettered_after_the_crash_budget(
    store: tuple[str, str], ledger: Path
) -> None:
    label, url = store
    figures = report(poison_task(url, ledger, label))
    assert figures.extra["poison_reason"] == "crashed_worker"
    # It kills its worker at once, before its start mark is written: the first lapse is a
    # lost lease, not a crash; every later start is written first, so 3 crashes follow.
    runs = 4
    assert figures.extra["poison_runs"] == runs
    assert figures.extra["worker_deaths"] == runs
    assert figures.extra["healthy_dead"] == 0  # the other tasks are unaffected
    assert figures.lost == 0


@pytest.mark.timeout(240)
def test_kill_during_sqlite_batches_leaves_a_sound_file(tmp_path: Path, ledger: Path) -> None:
    url = f"sqlite:///{tmp_path / 'faults.sqlite3'}"
    figures = report(sqlite_crash_while_writing(url, ledger, "SQLite"))
    assert figures.extra["integrity"] == "ok"
    assert figures.extra["torn"] == 0
    assert figures.extra["missing"] == 0
    assert figures.lost == 0
    assert figures.unexpected == 0


def test_warm_shutdown_of_an_in_memory_worker_drains_its_queue(tmp_path: Path) -> None:
    """Row 15 in memory: SIGTERM runs every queued task to the end (the seed rule), exit 0."""
    import os
    import signal
    import subprocess
    import sys
    from collections import Counter

    from tests.faults.harness import ROOT, wait_until

    led = tmp_path / "ledger.txt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), DOWORK_TEST_LEDGER=str(led))
    env.update(DOWORK_TEST_TASKS="8", DOWORK_TEST_SECONDS="0.5")
    worker = subprocess.Popen(
        [sys.executable, "-m", "dowork", "worker", "tests.cli.memapp:queue", "--no-metrics"],
        cwd=ROOT, env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def lines() -> Counter[str]:
        return Counter(led.read_text().splitlines() if led.exists() else [])

    wait_until(lambda: sum(1 for k in lines() if k.startswith("started")) >= 4, 30, "starts")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    done = lines()
    assert all(done[f"done {i}"] == 1 for i in range(8)), done  # none lost, none twice
    print(
        f"\n15 warm shutdown [memory]: submitted 8, lost 0, duplicates 0, exit {worker.returncode}"
    )
