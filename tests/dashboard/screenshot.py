"""Make ``docs/dashboard.png``: the overview of a small, busy store, in headless Chromium.

Run ``python -m tests.dashboard.screenshot [docs/dashboard.png]``. Real workers run real
tasks on a temporary SQLite file; the chart's earlier minutes are filled in through the same
``upkeep`` beat a worker sends, since a fresh store has only the current minute.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import dowork
from dowork.backends import open_backend
from dowork.backends._protocol import WorkerBeat, minute_of
from dowork.dashboard import create_app
from tests.upkeep import write_beat

from .live import chrome, serve


def _history(url: str) -> None:
    """Fill the last 14 minutes of each queue's chart with plausible counts."""
    rng = random.Random(7)

    async def fill() -> None:
        store = open_backend(url)
        now = time.time()
        try:
            for queue, base, bad in (("email", 140, 0.03), ("webhooks", 60, 0.12)):
                finished = {}
                for back in range(1, 15):
                    total = int(base * rng.uniform(0.6, 1.3))
                    failed = int(total * bad * rng.uniform(0.2, 1.8))
                    finished[minute_of(now) - back * 60] = {
                        "succeeded": total - failed,
                        "failed": failed,
                    }
                ghost = WorkerBeat("history", queue, "history", 0, now)
                await write_beat(store, ghost, now, 0.0, finished)  # ttl 0: counts only, no worker
        finally:
            await store.close()

    asyncio.run(fill())


def main(target: str = "docs/dashboard.png") -> None:
    """Build the store, start workers, open the overview and save the screenshot."""
    folder = Path(tempfile.mkdtemp())
    url = f"sqlite:///{folder / 'tasks.db'}"
    settings = dowork.DurableSettings(lease=2.0, maintenance=0.5)
    release = threading.Event()
    email = dowork.Queue("email", backend=url, durable=settings, concurrency=4, log=False)
    hooks = dowork.Queue("webhooks", backend=url, durable=settings, concurrency=2, log=False)
    reports = dowork.Queue("reports", backend=url, durable=settings, log=False)

    @email.task(name="send_welcome")
    def send_welcome(to: str) -> str:
        return f"sent to {to}"

    @email.task(name="send_invoice")
    def send_invoice(to: str) -> str:
        release.wait(30)
        return f"invoice to {to}"

    @hooks.task(name="deliver_webhook", retries=2, backoff="fixed", base_delay=600)
    def deliver_webhook(endpoint: str) -> None:
        if "partner" in endpoint:
            raise ConnectionError(f"{endpoint}: connection refused")

    @reports.task(name="monthly_report")
    def monthly_report(month: str) -> str:
        return month

    _history(url)
    send_welcome.map([(f"user{i}@example.org",) for i in range(120)])
    for i in range(3):
        send_invoice.submit(f"client{i}@example.org")
    deliver_webhook.map([("https://shop.example/hook",)] * 40)
    deliver_webhook.map([(f"https://partner{i}.example/hook",) for i in range(5)])
    for month in ("2026-10", "2026-11"):
        reports.call_later(3600 * 24, monthly_report, month)
    monthly_report.submit("2026-09")
    email.every(300, send_welcome, "digest@example.org")
    email.start()
    hooks.start()
    try:
        time.sleep(2.0)  # let the workers run and beat
        with serve(create_app(url, refresh=1.0)) as address, chrome(1280, 760) as browser:
            browser.get(address + "/")
            time.sleep(1.5)
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(target)
    finally:
        release.set()
        email.shutdown(timeout=5)
        hooks.shutdown(timeout=5)
        reports.shutdown(timeout=5)
    print(f"wrote {target}")


if __name__ == "__main__":
    main(*sys.argv[1:])
