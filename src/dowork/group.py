"""Groups: run tasks side by side, then one callback with all their results (Celery's chord).

``queue.group([...members], then=callback_task)`` enqueues the members and holds the callback
until every member has finished; the callback is then called with the list of the members'
outcomes, in member order, as its first argument. With ``on_failure="fail"`` (the default) a
failed member fails the callback without running it (``GroupFailed``); with ``"pass"`` the
callback runs anyway and finds the failed members' exceptions in the list.

On a durable queue the members and the held callback are written in one atomic push. The
worker that settles the last member releases the callback at once; if that worker dies in
between, the callback checks on its own every ``check_every`` seconds, so it runs once however
many workers there are and whichever of them crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from .errors import GroupFailed
from .task import Task, TaskHost, TaskStatus

__all__ = ["Group", "GroupPolicy"]

R = TypeVar("R")

#: What a failed member does to the callback: fail it unrun, or pass the exception along.
GroupPolicy = Literal["fail", "pass"]
POLICIES = ("fail", "pass")


@dataclass(frozen=True, slots=True)
class Group(Generic[R]):
    """The handles of an enqueued group: its members and the callback that follows them."""

    members: Sequence[Task[Any]]
    callback: Task[R]

    @property
    def id(self) -> str:
        """The group's id: its callback's task id."""
        return self.callback.id

    def result(self, timeout: float | None = None) -> R:
        """Wait for the callback and return its value (or raise its exception)."""
        return self.callback.result(timeout)

    async def aresult(self, timeout: float | None = None) -> R:
        """``result`` for async code."""
        return await self.callback.aresult(timeout)


class LocalGroup:
    """A group on an in-process queue: counts members down on the loop, then frees the callback."""

    __slots__ = ("callback", "members", "policy", "remaining")

    def __init__(self, members: list[Task[Any]], callback: Task[Any], policy: str) -> None:
        self.members = members
        self.callback = callback
        self.policy = policy
        self.remaining = len(members)

    def member_done(self, engine: TaskHost) -> None:
        """A member finished (on the loop); the last one frees or fails the callback."""
        self.remaining -= 1
        if self.remaining == 0:
            results: list[Any] = []
            failures: list[tuple[str, BaseException]] = []
            for member in self.members:
                if member._status is TaskStatus.SUCCEEDED:
                    results.append(member._value)
                else:
                    error = member._error or RuntimeError(member._status.value)
                    results.append(error)
                    failures.append((member.id, error))
            engine.group_complete(self.callback, results, failures, self.policy)


def group_error(total: int, failures: Sequence[tuple[str, BaseException]]) -> GroupFailed:
    """The error of a callback that does not run because members failed."""
    first_id, first = failures[0]
    return GroupFailed(
        f"{len(failures)} of {total} group member(s) failed; the first, {first_id}: "
        f"{type(first).__name__}: {first}",
        list(failures),
    )
