"""Progress: a running task reports how far it got; handles and hooks see the latest report."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import dowork
from dowork import DurableSettings, FakeClock, Hooks, Progress, Queue, Task


class ProgressRecorder(Hooks):
    def __init__(self) -> None:
        self.seen: list[tuple[float, str | None]] = []

    def on_progress(self, task: Task[Any], progress: Progress) -> None:
        self.seen.append((progress.value, progress.message))


def test_progress_reaches_the_handle_and_the_hooks(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    recorder = ProgressRecorder()
    queue = make_queue(hooks=[recorder], log=False)

    def resize(images: int) -> int:
        for done in range(1, images + 1):
            dowork.current_task().report_progress(done / images, f"{done}/{images} images")
        return images

    task = queue.submit(resize, 4)
    assert task.progress is None
    queue.dispatch()
    assert task.result(0) == 4
    assert task.progress == Progress(1.0, "4/4 images", datetime.fromtimestamp(clock.now(), UTC))
    assert recorder.seen == [(n / 4, f"{n}/4 images") for n in range(1, 5)]


def test_async_tasks_report_progress(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(log=False)

    async def crawl() -> None:
        dowork.current_task().report_progress(3, "pages")

    task = queue.submit(crawl)
    queue.dispatch()
    assert task.progress is not None
    assert (task.progress.value, task.progress.message) == (3.0, "pages")


def test_bad_progress_is_refused_in_the_task(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(log=False)
    task = Task(lambda: 0)
    with pytest.raises(ValueError, match="finite"):
        task.report_progress(float("nan"))
    with pytest.raises(TypeError, match="message"):
        task.report_progress(1, 42)  # type: ignore[arg-type]  # deliberately not a str
    queue.enqueue(task)
    queue.dispatch()
    assert task.progress is None


@pytest.mark.timeout(30)
def test_durable_progress_is_readable_from_another_process_view(tmp_path: Path) -> None:
    """A second queue on the same SQLite file (as another process would) reads the progress."""
    url = f"sqlite:///{tmp_path / 'tasks.sqlite3'}"
    settings = DurableSettings(lease=2.0, maintenance=0.25)
    worker = Queue("jobs", backend=url, durable=settings, log=False)
    reader = Queue("jobs", backend=url, durable=settings, log=False)
    release = threading.Event()

    @worker.task(name="long")
    def long_job() -> str:
        dowork.current_task().report_progress(0.25, "a quarter")
        release.wait(10)
        return "done"

    try:
        worker.start()
        handle = long_job.submit()
        deadline = time.monotonic() + 10
        seen = None
        while time.monotonic() < deadline:
            remote = reader.get(handle.id)
            seen = None if remote is None else remote.progress
            if seen is not None:
                break
            time.sleep(0.01)
        assert seen is not None, "the progress never reached the store"
        assert (seen.value, seen.message) == (0.25, "a quarter")
        release.set()
        assert handle.result(10) == "done"
        final = reader.get(handle.id)
        assert final is not None
        assert final.progress is not None
        assert final.progress.message == "a quarter"
    finally:
        release.set()
        worker.shutdown(timeout=5)
        reader.shutdown(timeout=5)
