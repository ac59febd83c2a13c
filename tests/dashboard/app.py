"""Tasks the dashboard tests store and run: one that succeeds, one that fails until allowed.

``make_queue(url, name)`` builds a durable queue on the store under test with these tasks, as
attributes of a ``Shop`` (a ``Queue`` that declares them, so the tests' calls are type-checked).
``flaky`` fails while the file named in its argument is missing, so a test can make a task
fail, then fix the cause and re-queue it.
"""

from __future__ import annotations

import os

import dowork
from dowork import DurableSettings, SyncTaskFunction


class Shop(dowork.Queue):
    """A queue with the three tasks below as attributes."""

    greet: SyncTaskFunction[[str], str]
    flaky: SyncTaskFunction[[str], str]
    boom: SyncTaskFunction[[str], None]


def make_queue(url: str, name: str = "shop") -> Shop:
    """A durable queue on ``url`` with short leases (``maintenance`` 0.2 s) and the tasks."""
    settings = DurableSettings(lease=1.0, maintenance=0.2)
    queue = Shop(name, backend=url, durable=settings, log=False)

    @queue.task(name="greet")
    def greet(who: str) -> str:
        return f"hello {who}"

    @queue.task(name="flaky", retries=0)
    def flaky(switch: str) -> str:
        if not os.path.exists(switch):
            raise ConnectionError(f"the service behind {switch} is down")
        return "fixed"

    @queue.task(name="boom", retries=1, backoff="fixed", base_delay=0.0)
    def boom(note: str) -> None:
        raise ValueError(f"cannot handle {note}")

    queue.greet = greet
    queue.flaky = flaky
    queue.boom = boom
    return queue
