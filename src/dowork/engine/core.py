"""The engine: the loop-side state machine of one queue, shared by sync and async callers.

Everything that changes a queue's state runs on the queue's one event loop (its "home"): a
private daemon thread for sync users, or the caller's loop for ``await queue.astart()``. Other
threads hand tasks over through a lock-free inbox and wake the loop once per batch. Due tasks
wait in a FIFO, future ones in a heap keyed by time with one clock timer armed for the
earliest. Async attempts run in long-lived worker coroutines, sync attempts in ``ThreadLane``.
Its parts sit one concern a module: ``home``, ``intake``, ``launch``, ``outcome``, ``drive``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .drive import Drive
from .intake import Intake
from .launch import Launch
from .outcome import Outcome

if TYPE_CHECKING:
    from .source import TaskSource

__all__ = ["Engine"]


class Engine(Intake, Launch, Outcome, Drive):
    """Loop-side core of a ``Queue``, fed by a task source; see the module docstring."""

    def __init__(
        self, name: str, *, source: Callable[[Engine], TaskSource], **options: Any
    ) -> None:
        super().__init__(name, **options)
        self._use_source(source(self))
