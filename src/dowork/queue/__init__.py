"""Queue: the public face of one named task queue, for sync and async callers alike.

Naming convention: every method that may block has an ``a``-prefixed coroutine twin that never
blocks the caller's event loop (``shutdown``/``ashutdown``, ``dispatch``/``adispatch``, ...).
The engine behind both lives in ``dowork.engine``.
"""

from __future__ import annotations

import asyncio
import threading

from .base import default_concurrency
from .core import Queue
from .declare import _Decorator

__all__ = ["Queue", "_Decorator", "ajoin", "default_concurrency", "join"]


def join(*queues: Queue, timeout: float | None = None) -> bool:
    """Shut several queues down in parallel; return True if all drained within ``timeout``."""
    results: list[bool] = [False] * len(queues)
    errors: list[BaseException] = []

    def one(i: int, queue: Queue) -> None:
        try:
            results[i] = queue.shutdown(timeout)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=one, args=(i, q), name=f"dowork-join-{q.name}")
        for i, q in enumerate(queues)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return all(results)


async def ajoin(*queues: Queue, timeout: float | None = None) -> bool:
    """``join`` for async code."""
    results = await asyncio.gather(*(q.ashutdown(timeout) for q in queues))
    return all(results)
