"""Handles on tasks that run elsewhere: watching the store, lookups, cancel by id."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..backends._protocol import (
    Record,
)
from ..errors import (
    BackendError,
    DecodeError,
    QueueShuttingDown,
    TaskFailed,
    TaskGone,
)
from ..task import Task, TaskStatus

if TYPE_CHECKING:
    pass


from .state import DurableState, _placeholder, decode_progress, log


class RemoteHandles(DurableState):
    """Handles on tasks that run elsewhere: watching the store, lookups, cancel by id."""

    def watch(self, task: Task[Any]) -> None:
        """Poll the backend for the outcome of ``task`` while someone waits for it.

        Not a task that finished here: its outcome is on its way to the store, and its
        handle is woken once written.
        """
        if task._status.final:
            return
        if self.engine.closed:  # nothing polls the store any more
            self._stopped_watching(task)
            return
        self._watched[task.id] = task
        loop = self.engine.ensure_loop()
        loop.call_soon_threadsafe(self._start_watcher)

    def _end_watches(self) -> None:
        """The queue stops: end the waits on tasks run elsewhere (nothing will poll for them)."""
        for task in list(self._watched.values()):
            if not (task._finished or task._status.final):
                self._stopped_watching(task)
        self._watched.clear()

    def _stopped_watching(self, task: Task[Any]) -> None:
        task._error = QueueShuttingDown(
            f"queue {self.name!r} is shut down: it no longer reads task {task.id}'s outcome "
            "from the store; read it through a running queue (queue.get(id))"
        )
        task._wake_waiters()

    def _start_watcher(self) -> None:
        self._watch_pause = 0.002  # a new waiter: poll fast again
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch_loop())

    async def _watch_loop(self) -> None:
        self._watch_pause = 0.002  # poll fast at first, then back off to the maintenance pace
        while self._watched:
            ids = [i for i, t in self._watched.items() if not (t._finished or t._status.final)]
            try:
                records = await self.backend.get(ids) if ids else []
            except BackendError as exc:
                log.warning("queue %s: cannot poll results (%r)", self.name, exc)
                records = []
            found = {r.id: r for r in records}
            for task_id in list(self._watched):
                task = self._watched[task_id]
                if task._finished or task._status.final or task_id in self._claimed:
                    if task._finished:  # (a final one finished here: woken once written)
                        del self._watched[task_id]
                        self._overtaken.discard(task)
                    continue
                record = found.get(task_id)
                if record is None and task_id in ids and task_id not in self._pushing:
                    self._gone(task)  # its record vanished: nothing will ever finish it
                if record is not None:
                    self._apply(task, record)
                if task._finished:
                    del self._watched[task_id]
                    self._overtaken.discard(task)
                    self._watch_pause = 0.002
            await asyncio.sleep(self._watch_pause)
            self._watch_pause = min(self._watch_pause * 2, 0.05, self.settings.maintenance)

    def _gone(self, task: Task[Any]) -> None:
        """End the wait on a task whose record is not in the store: raise ``TaskGone``."""
        task._error = TaskGone(
            f"task {task.id} has no record in {self.backend!r} any more: it finished and was "
            "not kept (keep_result=0), was purged, or the store was wiped; its outcome is unknown"
        )
        task._wake_waiters()

    def _apply(self, task: Task[Any], record: Record) -> None:
        """Copy a record's state into a local handle; wake waiters if it is final."""
        status = TaskStatus(record.status)
        task._attempts = record.started - record.crashes
        task._deliveries = record.attempts
        if record.progress is not None:
            task._progress = decode_progress(record.progress)
        if not status.final:
            task._status = status
            leased = status in (TaskStatus.RUNNING, TaskStatus.RESERVED)
            task._next_attempt = None if leased else record.run_at
            return
        task._status = status
        if status is TaskStatus.SUCCEEDED:
            try:
                task._value = None if record.result is None else self.codec.decode(record.result)
            except DecodeError as exc:
                task._status = TaskStatus.FAILED
                task._error = exc
        else:
            task._error = TaskFailed(record.error or status.value, record.status, record.reason)
        task._wake_waiters()

    def lookup(self, task_id: str) -> Task[Any] | None:
        """Find a task by id here or in the backend (blocking; not on the loop)."""
        local = self.engine._by_id.get(task_id)
        if local is not None and local.done:
            return local
        return self.engine.run_on_home(self._alookup(task_id))

    async def _alookup(self, task_id: str) -> Task[Any] | None:
        """``lookup`` on the loop, where a task this process runs cannot change under it."""
        local = self.engine._by_id.get(task_id)
        if local is not None and (local._status.final or task_id in self._claimed):
            return local  # finished or running here (its outcome may still be on its way)
        records = await self.backend.get([task_id])
        local = self.engine._by_id.get(task_id)
        if local is not None and (local._status.final or task_id in self._claimed):
            return local  # claimed by this process while we read
        if not records:
            return local
        record = records[0]
        task = local
        if task is None:
            entry = self.registry.get(record.name)
            fn: Any = entry.fn if entry is not None else _placeholder(record.name)
            task = Task._fast(fn, (), {}, False)
            task._id = record.id
            task._engine = self.engine
            task._frozen = True
        self._apply(task, record)
        return task

    def chain_log(self, task_id: str) -> Any:
        """Read a chained job's result log from its stored record (blocking)."""
        from ..chain import ChainLog

        records = self.engine.run_on_home(self.backend.get([task_id]))
        if not records or records[0].result is None:
            return None
        try:
            data = self.codec.decode(records[0].result)
        except DecodeError:
            return None
        if isinstance(data, dict) and isinstance(data.get("chain_log"), dict):
            return ChainLog.from_dict(data["chain_log"])
        return None

    def cancel_handle(self, task: Task[Any]) -> bool:
        """Cancel by id in the backend (any process's task); True unless it had finished."""
        return self.engine.run_on_home(self._acancel(task))

    async def acancel_handle(self, task: Task[Any]) -> bool:
        """``cancel_handle`` from any event loop."""
        return await self.engine.arun_on_home(self._acancel(task))

    async def _acancel(self, task: Task[Any]) -> bool:
        if task._status.final:  # finished here, its outcome maybe still on its way to the store
            return False
        if task.id in self._claimed:
            return self.engine.cancel_task(task)
        answer = await self.backend.cancel(task.id, self.clock.now())
        if answer == "cancelled":
            task._status = TaskStatus.CANCELLED
            task._error = TaskFailed("cancelled", "cancelled")
            task._wake_waiters()
        return answer in ("cancelled", "requested")
