"""Warm shutdown on SIGINT/SIGTERM, and stop-at-once on the second signal.

The dowork blog's plan, done: the first signal stops new work and lets what runs finish
(in-memory queues also drain what is queued, as ``shutdown()`` does), up to a grace period;
the second signal (or the end of the grace period) stops at once. Then durable queues record
the outcomes of functions that already returned and hand every other claimed task back to the
store (nothing is dumped: the store keeps them), and in-memory queues write every unfinished
task to a JSON Lines dump file that ``dowork requeue FILE`` can enqueue again after review.
The log says which of the two happens to which queue; a forced stop logs no traceback (the
threads' stacks at the end of the grace period only with debug logging, ``dowork -v``).

A library must not take signals by default: call ``run_until_signalled()`` (or use the
``dowork worker`` command) to opt in.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from .dump import DumpLine, write_dump

if TYPE_CHECKING:
    from .queue import Queue

__all__ = ["ShutdownResult", "run_until_signalled"]

log = logging.getLogger("dowork")


class ShutdownResult:
    """How a signalled shutdown ended: ``clean``, and what was dumped where."""

    def __init__(
        self, clean: bool, dumped: int, dump_path: Path | None, lost: bool = False
    ) -> None:
        self.clean = clean
        self.dumped = dumped
        self.dump_path = dump_path
        self.lost = lost  #: a queue's store was deleted or replaced (``StoreLost``)

    @property
    def exit_code(self) -> int:
        """0 after a warm shutdown, 1 after a forced stop or a lost store."""
        return 0 if self.clean and not self.lost else 1


class _Signals:
    def __init__(self, plan: str, also: Callable[[int], object] | None) -> None:
        self.count = 0
        self.plan = plan  #: what a stop at once does, said on the first signal
        self.also = also  #: called with every signal caught (``on_signal``)
        self.first = threading.Event()
        self.second = threading.Event()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.also is not None:
            self.also(signum)
        name = signal.Signals(signum).name
        if self.count == 1:
            log.warning(
                "%s caught: warm shutdown; send it again to stop at once (%s)", name, self.plan
            )
            self.first.set()
        else:
            log.warning("%s caught again: stopping at once", name)
            self.second.set()


def _plan(queues: Sequence[Queue], dump_path: Path) -> str:
    """What stopping at once does to these queues, in words: hand back, or dump, or both."""
    durable = [q.name for q in queues if q.backend is not None]
    memory = [q.name for q in queues if q.backend is None]
    said = []
    if durable:
        said.append(
            f"queue {', '.join(durable)} hands its claimed tasks back to its store"
            if len(durable) == 1
            else f"queues {', '.join(durable)} hand their claimed tasks back to their stores"
        )
    if memory:
        said.append(
            f"{'queue' if len(memory) == 1 else 'queues'} {', '.join(memory)} "
            f"dump{'s' if len(memory) == 1 else ''} unfinished tasks to {dump_path}"
        )
    return "; ".join(said) or "nothing to hand back or dump"


def run_until_signalled(
    queues: Sequence[Queue],
    *,
    grace: float | None = 30.0,
    dump_path: str | os.PathLike[str] = "dowork-dump.jsonl",
    signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
    started: Callable[[], object] | None = None,
    on_signal: Callable[[int], object] | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> ShutdownResult:
    """Start the queues (if needed), block until a signal, then shut them down.

    ``started`` is called once every queue runs (``dowork worker`` serves its metrics then,
    so that setting them up does not delay the first task). ``on_signal`` is called with every
    signal caught (``dowork worker`` passes them on to its other processes); ``stop_when``,
    asked every 0.2 s, starts a warm shutdown as a first signal would when it returns True.

    First signal: warm shutdown, up to ``grace`` seconds (None: no limit). Second signal, or
    the grace period running out: stop at once; durable queues record the outcomes of the
    functions that returned and hand their other claimed tasks back to their store, in-memory
    ones write their unfinished tasks to ``dump_path``. Must run in the main thread.
    """
    caught = _Signals(_plan(queues, Path(dump_path)), on_signal)
    previous = {sig: signal.signal(sig, caught.handle) for sig in signals}
    try:
        for queue in queues:
            if not queue.running:
                queue.start()
        # A signal held since the process started (cli.processes.start_blocked) comes now,
        # once the queues run, so that its warm shutdown finds them running.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
        if started is not None:
            started()
        while not caught.first.wait(0.2):
            if _lost(queues):  # its store is gone: stop every queue, exit non-zero
                break
            if stop_when is not None and stop_when():
                break
        result = _shutdown(queues, caught, grace, Path(dump_path))
        result.lost = _lost(queues)
        return result
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _lost(queues: Sequence[Queue]) -> bool:
    """Whether a queue stopped because its store was deleted or replaced (``StoreLost``)."""
    return any(queue._engine.source.lost is not None for queue in queues)


def _shutdown(
    queues: Sequence[Queue], caught: _Signals, grace: float | None, dump_path: Path
) -> ShutdownResult:
    results: dict[str, bool] = {}

    def warm(queue: Queue) -> None:
        try:
            results[queue.name] = queue.shutdown()
        except concurrent.futures.CancelledError:  # the stop at once took the queue over
            results[queue.name] = False
        except Exception as exc:
            log.error("queue %s: warm shutdown failed: %r", queue.name, exc)
            log.debug("queue %s: warm shutdown failed", queue.name, exc_info=True)
            results[queue.name] = False

    threads = [threading.Thread(target=warm, args=(q,), daemon=True) for q in queues]
    for thread in threads:
        thread.start()
    deadline = None if grace is None else time.monotonic() + grace
    while any(t.is_alive() for t in threads):
        if caught.second.wait(0.1):
            break
        if deadline is not None and time.monotonic() >= deadline:
            log.warning("grace period of %gs is over: stopping at once", grace)
            if log.isEnabledFor(logging.DEBUG):
                with contextlib.suppress(Exception):  # show what the shutdown waited for
                    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            break
    else:
        return ShutdownResult(all(results.values()), 0, None)
    lines: list[DumpLine] = []
    for queue in queues:
        try:
            lines.extend(queue.abort())
        except Exception as exc:
            log.error("queue %s: could not stop at once cleanly: %r", queue.name, exc)
            log.debug("queue %s: could not stop at once cleanly", queue.name, exc_info=True)
    dumped = write_dump(dump_path, lines) if lines else 0
    if dumped:
        skipped = sum(1 for line in lines if not line.restorable)
        log.warning(
            "dumped %d unfinished task(s) to %s (%d not restorable); re-queue them with "
            "'dowork requeue %s'",
            dumped,
            dump_path,
            skipped,
            dump_path,
        )
    return ShutdownResult(False, dumped, dump_path if dumped else None)
