"""``dowork demo``: the main job on the embedded SQLite store, end to end.

It enqueues a few thousand example tasks into a SQLite file (some slow, some failing and
retrying, some failing for good, one chained job, one task nobody knows any more), starts
``dowork worker`` processes on that file, shows a live progress bar, and ends with a summary.
The task functions below are what those worker processes import.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO

import dowork
from dowork.backends import Record, SQLiteBackend
from dowork.task import UNFINISHED

__all__ = ["queue", "run_demo"]

queue = dowork.Queue(
    "demo",
    backend=os.environ.get("DOWORK_DEMO_BACKEND", "memory://"),
    log=False,
    durable=dowork.DurableSettings(lease=10.0, maintenance=1.0),
)


@queue.task(name="demo.resize_image", retries=3, backoff="fixed", base_delay=0.05)
def resize_image(n: int, fail_times: int) -> int:
    """A plain function: fails ``fail_times`` times (storage busy), then succeeds."""
    attempt = dowork.current_task().attempts
    if attempt <= fail_times:
        raise OSError(f"image {n}: storage busy (attempt {attempt})")
    return n * 2


@queue.task(name="demo.send_email")
async def send_email(n: int, slow: bool) -> str:
    """An async function: a few are slow, a few addresses bounce for good."""
    await asyncio.sleep(0.05 if slow else 0.001)
    if n % 499 == 0:
        raise dowork.DoNotRetry(f"email {n}: address rejected")
    return f"sent {n}"


def _create_account(args: dowork.ArgsMap) -> dowork.ArgsMap:
    return args | {"account": f"acct-{args['user']}"}


def _send_welcome(args: dowork.ArgsMap) -> dowork.ArgsMap:
    if random.random() < 0.5:
        raise ConnectionError("mail server busy")
    return args | {"welcomed": True}


onboard = queue.chain(
    "demo.onboard",
    _create_account,
    dowork.reentrant(_send_welcome, max_times=10, sleep=0.01),
)


def _enqueue(url: str, tasks: int, seed: int) -> None:
    rnd = random.Random(seed)
    queue.reconfigure(backend=url)
    images: list[dowork.Task[int]] = []
    emails: list[dowork.Task[str]] = []
    for n in range(tasks):
        if rnd.random() < 0.5:
            fail = 0 if rnd.random() < 0.8 else rnd.choice([1, 2, 5])
            images.append(resize_image.task(n, fail))
        else:
            emails.append(send_email.task(n, rnd.random() < 0.05))
    for start in range(0, len(images), 500):
        queue.enqueue_many(images[start : start + 500])
    for start in range(0, len(emails), 500):
        queue.enqueue_many(emails[start : start + 500])
    onboard.submit({"user": "ada"})
    now = time.time()
    retired = Record(uuid.uuid4().hex, "demo", "demo.retired_task", b'{"a":[],"k":{}}', now, now)
    assert queue.backend is not None
    queue._engine.run_on_home(queue.backend.push([retired]))  # a task whose code is gone
    queue.shutdown()


def _workers(url: str, count: int) -> tuple[list[subprocess.Popen[str]], list[str]]:
    argv = [sys.executable, "-m", "dowork", "worker", "dowork.demo:queue", "--backend", url]
    argv += ["--concurrency", "16", "--processes", "1"]  # (--workers says how many)
    procs = [
        subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, cwd=os.getcwd())
        for _ in range(count)
    ]
    urls: list[str] = []
    for proc in procs:
        assert proc.stderr is not None
        threading.Thread(target=_read_urls, args=(proc.stderr, urls), daemon=True).start()
    return procs, urls


def _read_urls(stream: IO[str], urls: list[str]) -> None:
    for line in stream:
        found = re.search(r"metrics on (\S+)", line)
        if found:
            urls.append(found.group(1))
        elif line.startswith(("Error:", "Traceback")):  # a worker that could not start
            sys.stderr.write(line)


async def _counts(backend: SQLiteBackend) -> dict[str, int]:
    return await backend.counts("demo")


def run_demo(tasks: int, workers: int, db: str | None) -> int:
    """Run the demo; return the process exit status (0 when every task is accounted for)."""
    path = Path(db) if db else Path(tempfile.mkdtemp(prefix="dowork-demo-")) / "demo.sqlite3"
    url = f"sqlite:///{path}"
    print(f"dowork demo: {tasks} tasks into {path}, {workers} worker processes", file=sys.stderr)
    _enqueue(url, tasks, seed=7)
    total = tasks + 2
    started = time.perf_counter()
    procs, metrics_urls = _workers(url, workers)
    store = SQLiteBackend(path)
    counts: dict[str, int] = {}
    try:
        while True:
            counts = asyncio.run(_counts(store))
            done = total - sum(counts.get(s, 0) for s in UNFINISHED)
            bar = "#" * int(40 * done / total)
            print(f"\r[{bar:<40}] {done}/{total}", end="", file=sys.stderr, flush=True)
            if done >= total or any(p.poll() is not None for p in procs):
                break
            time.sleep(0.2)
    finally:
        elapsed = time.perf_counter() - started
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    print(file=sys.stderr)
    retried = asyncio.run(_retried(path))
    rows = [
        ("done", counts.get("succeeded", 0)),
        ("retried", retried),
        ("failed", counts.get("failed", 0)),
        ("dead-lettered", counts.get("dead", 0)),
    ]
    print(f"{'outcome':<16}{'tasks':>8}")
    for label, value in rows:
        print(f"{label:<16}{value:>8}")
    print(f"{'throughput':<16}{total / elapsed:>8.0f} tasks/s ({elapsed:.1f}s)")
    for metrics_url in metrics_urls:
        print(f"metrics were served on {metrics_url}")
    finished = sum(counts.get(s, 0) for s in ("succeeded", "failed", "dead", "cancelled"))
    return 0 if finished == total else 1


async def _retried(path: Path) -> int:
    backend = SQLiteBackend(path)
    try:
        retried = 0
        offset = 0
        while batch := await backend.list("demo", None, limit=1000, offset=offset):
            retried += sum(1 for r in batch if r.attempts > 1)
            offset += len(batch)
        return retried
    finally:
        await backend.close()
