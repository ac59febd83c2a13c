"""The seam between the engine and where its tasks live: the ``TaskSource`` protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..task import Task, TaskStatus

if TYPE_CHECKING:
    from ..backends.store import Backend
    from ..errors import StoreLost
    from ..scheduling import Schedule


class TaskSource(Protocol):
    """Where an engine's tasks come from and where their outcomes go.

    The engine runs attempts (pump, lanes, deadlines, the retry decision, hooks); a source
    feeds it and records what happened. ``LocalSource`` keeps tasks in this process's memory;
    ``DurableSource`` (``dowork.durable``) claims them from a store and writes outcomes back.
    The engine binds these methods once (see ``Engine.__init__``): the ``core_*`` methods of
    the engine are the in-memory behaviour, which a source may wrap.
    """

    @property
    def durable(self) -> bool:
        """Whether tasks are kept in a store (named tasks only)."""

    @property
    def backend(self) -> Backend | None:
        """The store holding the tasks, if any."""

    @property
    def lost(self) -> StoreLost | None:
        """Why the source stopped for good, its store deleted or replaced (None: it did not).

        ``Queue.run()`` raises it and ``run_until_signalled`` stops every queue on it.
        """

    def enqueue(self, task: Task[Any]) -> None:
        """Take a checked, frozen task from any thread (capacity already reserved)."""

    def enqueue_many(self, tasks: list[Task[Any]]) -> None:
        """Take several checked, frozen tasks (a store writes them at once)."""

    async def aenqueue(self, task: Task[Any], timeout: float | None) -> None:
        """Take a checked, frozen task from any event loop, waiting for room if bounded."""

    async def aenqueue_many(self, tasks: list[Task[Any]]) -> None:
        """``enqueue_many`` from any event loop."""

    def enqueue_group(
        self, members: list[Task[Any]], callback: Task[Any], policy: str, check_every: float
    ) -> None:
        """Take a group's checked members and the callback held until they finish."""

    async def aenqueue_group(
        self, members: list[Task[Any]], callback: Task[Any], policy: str, check_every: float
    ) -> None:
        """``enqueue_group`` from any event loop."""

    def fire_schedule(self, schedule: Schedule, planned: float) -> None:
        """A recurring schedule is due (on the loop): enqueue its task for ``planned``."""

    def lookup(self, task_id: str) -> Task[Any] | None:
        """The task with this id, wherever it runs (None if unknown)."""

    def chain_log(self, task_id: str) -> Any:
        """The chain log of a task that finished elsewhere (None if none)."""

    def serve(self) -> None:
        """Start processing continuously (on the loop)."""

    def launch(self, task: Task[Any]) -> None:
        """A due task may start: hand it to its lane."""

    def on_start(self, task: Task[Any]) -> None:
        """An attempt started."""

    def lapsed(self, task: Task[Any]) -> None:
        """A staged attempt was given back unstarted (its lease lapsed)."""

    def settle(self, task: Task[Any], value: Any, error: BaseException | None, took: float) -> None:
        """An attempt ended: decide retry or finish."""

    def retry_later(self, task: Task[Any], when: float, delay: float, error: BaseException) -> None:
        """A failed attempt runs again at ``when``."""

    def finish(
        self, task: Task[Any], status: TaskStatus, value: Any, error: BaseException | None
    ) -> None:
        """The task ended for good with ``status``."""

    def done(self, task: Task[Any]) -> None:
        """A finished task's after-callback is over: wake its waiters."""

    def progress_changed(self, task: Task[Any]) -> None:
        """A running task reported progress (any thread)."""

    def watch(self, task: Task[Any]) -> None:
        """Someone waits for ``task``'s outcome."""

    def cancel_handle(self, task: Task[Any]) -> bool:
        """Cancel from any thread."""

    async def acancel_handle(self, task: Task[Any]) -> bool:
        """Cancel from any event loop."""

    async def dispatch(self) -> bool:
        """Run what is due once (a queue driven by hand); say whether work remains."""

    async def next_due(self) -> tuple[float, bool] | None:
        """When the next waiting task or firing is due, and whether a task waits."""

    async def wait_stopped(self) -> None:
        """Wait until serving stopped and running attempts ended."""

    def has_work(self) -> bool:
        """Whether unfinished tasks remain here."""

    async def shutdown(self, timeout: float | None) -> bool:
        """Refuse new tasks, finish the rest, stop; False if ``timeout`` cut it short."""

    async def abort(self) -> list[Any]:
        """Stop at once; return what could not finish (dump lines), if anything."""
