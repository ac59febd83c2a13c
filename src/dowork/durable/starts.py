"""Starting claimed tasks under their lease: start marks, held duplicates, lapsed leases."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ..backends._protocol import (
    Outcome,
    Record,
    Settlement,
)
from ..engine.state import _CANCEL
from ..errors import (
    BackendError,
)
from ..task import Task, TaskStatus

if TYPE_CHECKING:
    pass


from .state import _MARK_DELAY, DurableState, log

_FOREVER = float("inf")  #: the lease end of a task claimed without one


class Starts(DurableState):
    """Starting claimed tasks under their lease: start marks, held duplicates, lapsed leases."""

    def launch(self, task: Task[Any]) -> None:
        """Start a claimed task, unless its lease lapsed; a suspect's start is written first."""
        task_id = task._id
        if task_id is None or task_id not in self._claimed:
            if task_id is not None and task_id in self._dropped:
                self._dropped.discard(task_id)
                return  # given up: its lease lapsed, the store hands it out again
            self.engine.core_launch(task)
            return
        # (self._lease_left(task_id), inline: one call fewer per task)
        left = self._lease_until.get(task_id, _FOREVER) - (self.clock.now() + self._offset)
        if left <= 0:
            self._log_lapsed(task_id)
            self._drop(task_id, in_line=False)
            return
        task._start_by = time.monotonic() + left
        if task_id in self._store_first:
            self._store_first.discard(task_id)
            self.engine._hold(task)
            task._status = TaskStatus.RESERVED
            self._first_line.append(task)
            self._mark_first()
            return
        engine = self.engine  # (engine.core_launch, inline)
        engine._hold(task)
        engine._go(task)

    def _mark_first(self) -> None:
        """Write the ``STARTED`` marks of the suspects in ``_first_line``, then start them.

        One write for all of them (the next batch follows the one being written), then they
        start in line order, ahead of the tasks launched after them. A plain function may
        still wait for a thread after its mark: at most the length of an attempt.
        """
        if self._first_marking is not None or not self._first_line:
            return
        batch = list(self._first_line)
        self._first_line.clear()
        loop = asyncio.get_running_loop()
        self._first_marking = loop.create_task(self._launch_marked(batch))

    def _lease_left(self, task_id: str) -> float:
        """Seconds until a claimed task's lease lapses, unless renewed."""
        return self._lease_until.get(task_id, _FOREVER) - self._lease_now()

    def lapsed(self, task: Task[Any]) -> None:
        """A staged task's lease lapsed before a thread could start it: give it up."""
        if task._id is not None:
            self._drop(task._id, in_line=False)
        self._log_lapsed(task._id)

    def _log_lapsed(self, task_id: str | None) -> None:
        log.warning(
            "queue %s: task %s not started: its lease lapsed while it waited here",
            self.name, task_id,
        )  # fmt: skip

    async def _launch_marked(self, batch: list[Task[Any]]) -> None:
        """Write suspects' ``STARTED`` marks, then start them (a crash now is charged to them)."""
        now = self.clock.now()
        marks = [
            Settlement(t._id, self._claimed[t._id], Outcome.STARTED, now)
            for t in batch
            if t._id is not None and t._id in self._claimed
        ]
        refused: set[str] = set()
        try:
            refused = set(await self.backend.settle(marks, buried=self._burials))
        except BackendError as exc:  # start anyway: the lease still protects the tasks
            ids = ", ".join(m.id for m in marks)
            log.warning("queue %s: cannot record the start of %s (%r)", self.name, ids, exc)
        finally:
            self._first_marking = None
        for task in batch:
            task_id = task._id
            assert task_id is not None
            if (
                task._status.final
                or task._runner is _CANCEL
                or task_id in refused
                or (task_id not in self._claimed)
            ):
                self.engine._inflight -= 1
                self.engine._active -= 1
                self.engine._running.discard(task)
                if not task._status.final:
                    if task_id in refused or task_id not in self._claimed:
                        self._drop(task_id)
                    else:
                        self.settle(task, None, None, 0.0)  # cancelled while being marked
                continue
            self._begun.add(task_id)  # its mark is written: _on_start writes none
            self.engine._go(task)
        self._mark_first()
        self.engine._pump()

    def on_start(self, task: Task[Any]) -> None:
        """Record that a claimed attempt started, with a later write (``_write_marks``)."""
        task_id = task._id
        if task_id is None or task_id not in self._claimed or task_id in self._begun:
            return
        self._begun.add(task_id)
        self._marks[task_id] = self._claimed[task_id]
        if self._marking is None:
            loop = asyncio.get_running_loop()
            self._marking = loop.call_later(_MARK_DELAY, self._write_marks)

    def _write_marks(self) -> None:
        """Queue the ``STARTED`` marks of attempts that ran a whole round, ``_MARK_DELAY``.

        A round's marks are those of the attempts that started before the last round and
        still run; the younger ones wait for the next round (armed while any wait). So an
        attempt shorter than ``_MARK_DELAY`` never has its mark written, even one that started
        just before a round (when each round wrote every running attempt's mark, some 6 % of a
        busy worker's tasks of a millisecond or two wrote one).
        """
        self._marking = None
        marks = self._marks
        due = {i: marks.pop(i) for i in self._aged if i in marks}
        self._aged = list(marks)
        if marks:
            self._marking = asyncio.get_running_loop().call_later(_MARK_DELAY, self._write_marks)
        if due:
            now = self.clock.now()
            self._outbox.extend(Settlement(i, t, Outcome.STARTED, now) for i, t in due.items())
            self._flush_now()

    def _drop(self, task_id: str, in_line: bool = True) -> None:
        """Give up a claimed task that did not start (its lease lapsed): never start it here.

        ``in_line``: the task is still in the ready line, to be skipped when it comes up.
        """
        if self._claimed.pop(task_id, None) is None:
            return
        self._lease_until.pop(task_id, None)
        self._store_first.discard(task_id)
        self._suspects.discard(task_id)
        self._group_of.pop(task_id, None)
        if in_line:
            self._dropped.add(task_id)
        self.engine._unfinished -= 1
        task = self.engine._by_id.get(task_id)
        if task is not None and not task._status.final:
            task._status = TaskStatus.PENDING  # back in the store, for any worker
        self._freed()

    def _renewed(self, ids: list[str], lost: list[str], until: float) -> None:
        """After a heartbeat: note the new lease ends; give up lost tasks not started yet."""
        gone = set(lost)
        for task_id in ids:
            if task_id in gone or task_id not in self._claimed:
                continue
            self._lease_until[task_id] = until
            task = self.engine._by_id.get(task_id)
            if task is not None and task._status is TaskStatus.RESERVED:  # (not started here)
                task._start_by = time.monotonic() + self._lease_left(task_id)
        for task_id in lost:
            task = self.engine._by_id.get(task_id)
            if task is not None and task._status is TaskStatus.RESERVED and task._runner:
                task._start_by = 0.0  # waiting for a thread: the thread gives it up (LAPSED)
            elif task_id not in self._begun:
                self._drop(task_id)

    def _freed(self) -> None:
        slot = self._slot_free
        if slot is not None:
            slot.set()

    def _start_held(self, task_id: str) -> None:
        """The run of ``task_id`` here ended: admit the claim of it held meanwhile, if any."""
        held = self._held.get(task_id)
        if not held or task_id in self._claimed:
            return
        record = held.pop(0)
        if not held:
            del self._held[task_id]
        admitting = asyncio.get_running_loop().create_task(self._admit_held(record))
        self.engine._afters.add(admitting)
        admitting.add_done_callback(self.engine._afters.discard)

    async def _admit_held(self, record: Record) -> None:
        await self._admit_one(record)
        self.engine._pump()

    def _held_leases(self) -> list[tuple[str, int]]:
        """The leases of the held claims (see ``_held``)."""
        return [(r.id, r.attempts) for records in self._held.values() for r in records]

    def _hand_back_waiting(self, after: float) -> None:
        """Give back the claimed tasks waiting for a slot beyond what the hold allows now.

        Held while tasks were short, they would wait behind long ones that took every slot
        (none freed in ``after`` seconds) while an idle worker could run them. The least
        urgent go first: the last in the ready line, then the last handed to the thread lane
        (taken back only if no thread started it). Each goes back to the store due now, for
        any worker (its retry budget untouched: it never started). A fixed prefetch
        (``prefetch_window=None``) holds ``prefetch`` always, so it gives back none.
        """
        engine = self.engine
        excess = len(self._claimed) - len(self._begun) - self._prefetch()
        lane = engine._threads
        staged = lane.staged() if lane is not None else []
        line = [
            t for t in list(engine._ready)[::-1] if t._id is not None and t._id in self._claimed
        ]
        given: list[str] = []
        for task in line:
            if len(given) >= excess:
                break
            assert task._id is not None
            if task._id not in self._begun and not task._status.final:
                given.append(task._id)
                self._give_back(task._id, in_line=True)
        for token, task in staged:
            if len(given) >= excess:
                break
            task_id = task._id
            if task_id is None or task_id not in self._claimed or task_id in self._begun:
                continue
            if engine._take_back(task, token):
                given.append(task_id)
                self._give_back(task_id, in_line=False)
        if given:
            log.info(
                "queue %s: no slot freed for %gs; gave back %d waiting task(s) for any worker",
                self.name, after, len(given),
            )  # fmt: skip
            engine._pump()

    def _give_back(self, task_id: str, in_line: bool) -> None:
        """Hand one claimed task that never started back to the store, due now.

        It is no longer counted as taken: the rate is that of tasks leaving by their own end,
        and hand-backs counted as such would raise the hold, to claim more behind long tasks.
        """
        token = self._claimed[task_id]
        self._drop(task_id, in_line=in_line)
        self._pace.taken -= 1
        now = self.clock.now()
        self._settle_out(
            Settlement(
                task_id, token, Outcome.RETRY, now, run_at=now,
                error="handed back: it waited for a slot behind long tasks",
            )
        )  # fmt: skip

    def _hand_back_held(self) -> None:
        """Give the held claims back to the store at once, to run on any worker."""
        now = self.clock.now()
        for task_id, token in self._held_leases():
            self._settle_out(
                Settlement(
                    task_id, token, Outcome.RETRY, now, run_at=now,
                    error="handed back: the worker stopped before it could start it",
                )
            )  # fmt: skip
        self._held.clear()
