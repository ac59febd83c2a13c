"""The global queue behind ``dowork.submit()``: created and started on first use."""

from __future__ import annotations

import threading

from . import function
from .queue import Queue

__all__ = ["global_queue", "reset_global_queue"]

_lock = threading.Lock()
_queue: Queue | None = None


def global_queue() -> Queue:
    """Return the global queue (named ``global``), creating and starting it on first use."""
    global _queue
    queue = _queue
    if queue is None:
        with _lock:
            if _queue is None:
                _queue = Queue("global").start()
            queue = _queue
    return queue


def existing_global_queue() -> Queue | None:
    """Return the global queue if it was ever created."""
    return _queue


def reset_global_queue() -> None:
    """Forget the global queue (after shutting it down), so the next use makes a fresh one.

    Meant for tests; a program normally shuts the global queue down once, at exit.
    """
    global _queue
    with _lock:
        queue, _queue = _queue, None
    if queue is not None and queue._engine.started:
        queue.shutdown(timeout=0)


function.global_queue = global_queue  # ``@dowork.task`` functions submit here
