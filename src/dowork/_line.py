"""The in-process queue's line of ready tasks once priorities are in use.

An engine keeps ready tasks in a plain ``deque`` (first in, first out, the fast path) until
the first task with a non-zero priority arrives; it then switches to a ``PriorityLine``, which
orders them as the backends' claims do (``backends.flow.rank``): by the time a task
became ready minus ``priority * aging``, ties in arrival order.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from .backends.flow import rank

if TYPE_CHECKING:
    from .clock import Clock
    from .task import Task

__all__ = ["Line", "PriorityLine"]


class Line(Protocol):
    """What the engine needs of its ready line (a ``deque`` has all of it)."""

    def append(self, task: Task[Any], /) -> None: ...
    def appendleft(self, task: Task[Any], /) -> None: ...
    def popleft(self) -> Task[Any]: ...
    def extend(self, tasks: Iterable[Task[Any]], /) -> None: ...
    def clear(self) -> None: ...
    def __getitem__(self, index: int, /) -> Task[Any]: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Task[Any]]: ...


class PriorityLine:
    """Ready tasks, most urgent first: a heap keyed by (rank, arrival)."""

    __slots__ = ("_aging", "_clock", "_heap", "_order")

    def __init__(self, clock: Clock, aging: float, tasks: Iterable[Task[Any]] = ()) -> None:
        self._clock = clock
        self._aging = aging
        self._heap: list[tuple[float, int, Task[Any]]] = []
        self._order = itertools.count()
        self.extend(tasks)

    def append(self, task: Task[Any], /) -> None:
        """Add a task that became ready now (or when it was enqueued, if it was stamped then)."""
        key = task._rank
        if key != key:  # NaN: not stamped
            key = rank(self._clock.now(), task._priority, self._aging)
        else:
            task._rank = math.nan  # used once: a retry ages from when it is due again
        heapq.heappush(self._heap, (key, next(self._order), task))

    def appendleft(self, task: Task[Any], /) -> None:
        """Put a task back at the head (an attempt that was cut short), before every other."""
        heapq.heappush(self._heap, (float("-inf"), -next(self._order), task))

    def popleft(self) -> Task[Any]:
        """Take the most urgent task."""
        return heapq.heappop(self._heap)[2]

    def extend(self, tasks: Iterable[Task[Any]], /) -> None:
        """Add tasks in order."""
        for task in tasks:
            self.append(task)

    def clear(self) -> None:
        """Drop every task."""
        self._heap.clear()

    def __getitem__(self, index: int, /) -> Task[Any]:
        """The most urgent task (only index 0, the head, is asked for)."""
        if index != 0:
            raise IndexError("a priority line gives only its head")
        return self._heap[0][2]

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Task[Any]]:
        """The tasks, most urgent first."""
        return (entry[2] for entry in sorted(self._heap))
