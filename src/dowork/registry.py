"""Task names: how a durable queue refers to functions without storing code.

A durable backend stores a task's registered *name*; the worker process that claims it looks
the name up here to find the function. Only functions declared with ``@queue.task`` are in the
registry, so a message can never make a worker run arbitrary code.
"""

from __future__ import annotations

from typing import Any

from .errors import NotRegistered
from .function import TaskFunction, default_name

__all__ = ["Registry", "default_name"]


class Registry:
    """Maps task names to task functions (and back) for one queue."""

    def __init__(self) -> None:
        self._by_name: dict[str, TaskFunction[..., Any]] = {}
        self._by_fn: dict[int, tuple[Any, str]] = {}

    def add(self, task_function: TaskFunction[..., Any], explicit: bool) -> None:
        """Register a task function under its name.

        Raises:
            NotRegistered: the function is a lambda or a nested function without an explicit
                ``name=`` (another process could not find it).
            ValueError: another function already has that name.
        """
        name = task_function.name
        if not explicit and ("<locals>" in name or "<lambda>" in name):
            raise NotRegistered(
                f"{name} is a lambda or a nested function; a durable queue can only run "
                "module-level functions (or pass name='...' and define it in the worker too)"
            )
        existing = self._by_name.get(name)
        if existing is not None and existing.fn is not task_function.fn:
            raise ValueError(f"a different task is already registered as {name!r}")
        self._by_name[name] = task_function
        self._by_fn[id(task_function)] = (task_function, name)
        known = self._by_fn.get(id(task_function.fn))
        if known is not None and known[0] is task_function.fn and known[1] != name:
            self._by_fn[id(task_function.fn)] = (task_function.fn, "")  # ambiguous
        else:
            self._by_fn[id(task_function.fn)] = (task_function.fn, name)

    def get(self, name: str) -> TaskFunction[..., Any] | None:
        """Return the task function registered as ``name``."""
        return self._by_name.get(name)

    def name_of(self, fn: Any) -> str | None:
        """Return the registered name of ``fn`` (a task function or the function it wraps).

        A copy of a registered task function (``with_options``) has the name of the one it
        copies: the same function under the same name.
        """
        found = self._by_fn.get(id(fn))
        if found is None or found[0] is not fn:
            inner = getattr(fn, "fn", None)
            name = getattr(fn, "name", None)
            entry = self._by_name.get(name) if isinstance(name, str) else None
            if entry is not None and inner is not None and entry.fn is inner:
                return name  # (a copy: its options are its tasks' own, stored per task)
            return None
        if not found[1]:
            return None  # one function registered under several names
        return found[1]

    def task_functions(self) -> list[TaskFunction[..., Any]]:
        """Every registered task function."""
        return list(self._by_name.values())

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)
