"""A SQLite file deleted or replaced under a running worker stops it, loudly, with status 1.

The worker's connection would go on reading the old file, which no producer writes to any
more, and new work would wait in the new file forever. Maintenance compares the file at the
path with the one opened (device and inode): on a change the worker logs CRITICAL and stops,
so that a supervisor starts it again on the right file.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import dowork
from dowork import DurableSettings, Queue
from dowork.backends import Record, SQLiteBackend
from tests.cli.test_cli import ROOT, env


def fresh_file(path: Path) -> None:
    """A valid dowork SQLite file at ``path`` (with one task in it)."""

    async def make() -> None:
        backend = SQLiteBackend(path)
        try:
            await backend.push([Record("other", "app", "record", b'{"a":[7],"k":{}}', 0.0, 0.0)])
        finally:
            await backend.close()

    asyncio.run(make())


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_check_store_notices_a_deleted_or_replaced_file(tmp_path: Path, how: str) -> None:
    path = tmp_path / "tasks.db"
    fresh_file(tmp_path / "new.db")

    async def body() -> None:
        backend = SQLiteBackend(path)
        try:
            await backend.open()
            await backend.check_store()  # the same file: nothing to say
            if how == "deleted":
                path.unlink()
            else:
                os.replace(tmp_path / "new.db", path)
            with pytest.raises(dowork.StoreLost, match=f"{path} was {how}") as caught:
                await backend.check_store()
            assert isinstance(caught.value, dowork.BackendError)
        finally:
            await backend.close()

    asyncio.run(body())


def test_an_in_memory_database_has_no_file_to_lose() -> None:
    async def body() -> None:
        backend = SQLiteBackend(":memory:")
        try:
            await backend.open()
            await backend.check_store()
        finally:
            await backend.close()

    asyncio.run(body())


@pytest.mark.realtime
def test_queue_run_raises_store_lost_once_running_tasks_finish(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    queue = Queue(
        "app",
        backend=f"sqlite:///{path}",
        log=False,
        durable=DurableSettings(lease=1.0, maintenance=0.1),
    )
    started = threading.Event()
    release = threading.Event()

    @queue.task(name="hold")
    def hold() -> str:
        started.set()
        release.wait(10)
        return "done"

    task = hold.submit()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            queue.run()
        except BaseException as exc:
            raised.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        assert started.wait(10)
        path.unlink()
        time.sleep(0.5)  # maintenance notices while the task still runs: it may finish
        release.set()
        runner.join(15)
        assert not runner.is_alive()
        assert len(raised) == 1
        assert isinstance(raised[0], dowork.StoreLost)
        assert "was deleted" in str(raised[0])
        assert task.status is dowork.TaskStatus.SUCCEEDED  # the running attempt finished
    finally:
        release.set()
        runner.join(5)
        queue.shutdown(timeout=2)


@pytest.mark.realtime
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_worker_process_exits_1_when_its_file_is_deleted_or_replaced(
    tmp_path: Path, how: str
) -> None:
    db = tmp_path / "app.db"
    ledger = tmp_path / "ledger.txt"
    variables = env(DOWORK_TEST_DB=str(db), DOWORK_TEST_LEDGER=str(ledger), DOWORK_TEST_LEASE="1")
    worker = subprocess.Popen(
        [sys.executable, "-m", "dowork", "worker", "tests.durable.app:queue", "--no-metrics",
         "-p", "1"],
        cwd=ROOT, env=variables, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        producer = Queue("app", backend=f"sqlite:///{db}", log=False)
        producer.task(name="record")(lambda n: n).submit(1)
        producer.shutdown(timeout=2)
        deadline = time.monotonic() + 30
        while "done 1" not in (ledger.read_text() if ledger.exists() else ""):
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, "the worker did not run the first task"
            time.sleep(0.05)
        if how == "deleted":
            db.unlink()
        else:
            fresh_file(tmp_path / "new.db")
            os.replace(tmp_path / "new.db", db)
        try:
            _, stderr = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker kept running on a lost file") from None
        assert worker.returncode == 1, stderr
        assert "CRITICAL" in stderr, stderr
        assert f"was {how}" in stderr, stderr
        assert "Traceback" not in stderr, stderr
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(5)
        if worker.stderr is not None:
            worker.stderr.close()
