"""Writing to the store: settlements and progress in batches, and the retries they make due."""

from __future__ import annotations

import asyncio
import heapq
import json
from typing import TYPE_CHECKING, Any

from ..backends._protocol import (
    STATS_MINUTES,
    WAITING,
    Outcome,
    Settlement,
)
from ..errors import BackendError, BackendUnavailable
from ..task import Task

if TYPE_CHECKING:
    pass


from .state import _FINISHED, DurableState, encode_progress, log, store_pause

#: (An enum's members read from the class cost a Python ``__getattr__`` hook each, 3.11.)
_RETRY, _STARTED = Outcome.RETRY, Outcome.STARTED
#: Seconds a serving worker lets outcomes gather after a write of them before it starts the
#: next, unless half a claim's batch of them waits: a busy worker with a small concurrency
#: wrote each task's outcome in a round trip of its own. A worker whose last write is older
#: writes at once, so an outcome is never held back when tasks are few.
_GATHER = 0.001


def one_lease_each(outbox: list[Settlement]) -> tuple[list[Settlement], list[Settlement]]:
    """Split ``outbox`` into a batch holding one lease per task, and the rest.

    A store answers a batch with the ids it refused, so a batch must not hold two leases of
    one task (an outcome held back past its lease and the outcome of the task's next claim
    here): it could not be told which of them was refused.
    """
    seen: dict[str, int] = {}
    for at, settlement in enumerate(outbox):
        if seen.setdefault(settlement.id, settlement.token) != settlement.token:
            return outbox[:at], outbox[at:]
    return outbox, []


def outcomes_refused(batch: list[Settlement], refused: list[str]) -> list[str]:
    """The ids of the outcomes among ``refused``, a store's answer to ``batch``.

    A store lists a record once per settlement it refused, so one refused STARTED mark is
    taken off per mark in the batch, not the record: a task whose lease lapsed before its
    mark was written has both refused, and its outcome is still counted, logged and not
    taken for written (its group's callbacks wait).
    """
    if not refused:  # (the common case: nothing more to do)
        return refused
    marks = [s.id for s in batch if s.outcome is _STARTED]
    if not marks:
        return refused
    left = dict.fromkeys(marks, 0)
    for task_id in marks:
        left[task_id] += 1
    outcomes = []
    for task_id in refused:
        if left.get(task_id, 0) > 0:
            left[task_id] -= 1
        else:
            outcomes.append(task_id)
    return outcomes


class Flushing(DurableState):
    """Writing to the store: settlements and progress in batches, and the retries they make due."""

    def progress_changed(self, task: Task[Any]) -> None:
        """Tell the hooks, and store the latest report so other processes can read it."""
        self.engine.core_progress_changed(task)
        progress = task._progress
        if progress is not None:
            self.engine.call_on_loop(self._progress_to_store, task.id, encode_progress(progress))

    def _progress_to_store(self, task_id: str, text: str) -> None:
        token = self._claimed.get(task_id)
        if token is None:  # not running here (any more): nothing to store
            return
        self._progress_out[task_id] = (token, text)  # only the latest report is written
        if self._progressing is None or self._progressing.done():
            self._progressing = asyncio.get_running_loop().create_task(self._flush_progress())

    async def _flush_progress(self) -> None:
        while self._progress_out:
            batch, self._progress_out = self._progress_out, {}
            try:
                await self.backend.progress([(i, t, p) for i, (t, p) in batch.items()])
            except BackendError as exc:  # progress is advisory: log, do not retry forever
                log.warning("queue %s: cannot store progress (%r)", self.name, exc)
                return

    def _settle_out(self, settlement: Settlement) -> None:
        task_id = settlement.id
        self._marks.pop(task_id, None)  # the outcome counts the start
        self._store_first.discard(task_id)
        self._lease_until.pop(task_id, None)
        if task_id in self._begun:
            self._begun.discard(task_id)
        else:
            settlement.ran = False
        now = settlement.now
        attempt = self._attempt.pop(task_id, None)
        if attempt is not None:  # the record's history line (see attempt_line)
            took, error = attempt
            if error is None:  # the common case: the store writes the line from ``took``
                settlement.took = took
            else:
                token, outcome = settlement.token, settlement.outcome
                settlement.attempt = self._failed_line(token, outcome, now, took, error)
        minute = int(now // 60) * 60  # (minute_of, inline)
        counts = self._finished_counts.get(minute)
        if counts is None:  # a process that never beats (dispatch) keeps the last hour only
            counts = self._finished_counts[minute] = {}
            if len(self._finished_counts) > STATS_MINUTES:
                del self._finished_counts[min(self._finished_counts)]
        counted = str(settlement.outcome)
        counts[counted] = counts.get(counted, 0) + 1
        self._outbox.append(settlement)
        if self._flushing is None or self._flushing.done():
            self._flush_soon()

    def _flush_soon(self) -> None:
        """Write the outbox now, or once ``_GATHER`` passed since the last write (see there)."""
        loop = asyncio.get_running_loop()
        gathering = self._gathering
        if len(self._outbox) * 2 < self.settings.batch:
            if gathering is not None:
                return  # (it writes them all when it fires)
            wait = self._written_at + _GATHER - loop.time()
            if wait > 0 and self.engine.serving:
                self._gathering = loop.call_later(wait, self._gathered)
                return
        elif gathering is not None:
            gathering.cancel()
            self._gathering = None
        self._flushing = loop.create_task(self._flush())

    def _gathered(self) -> None:
        self._gathering = None
        if self._outbox:
            self._flush_now()

    def _flush_now(self) -> None:
        """Start writing the outbox, unless a write of it is under way (it writes them too)."""
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            await self._flush_outbox()
        except asyncio.CancelledError:  # the loop closes under it: nothing will write them
            self._give_up_unwritten()
            raise

    async def _flush_outbox(self) -> None:
        failures = 0
        while self._outbox:
            batch, self._outbox = one_lease_each(self._outbox)
            try:
                refused = await self.backend.settle(batch, buried=self._burials)
            except BackendError as exc:
                self._outbox[:0] = batch  # keep them; the lease protects the tasks meanwhile
                if isinstance(exc, BackendUnavailable):  # (a full store: claims free room)
                    self._unsettled = True  # (see DurableState._unsettled)
                failures += 1
                delay = store_pause(failures, jitter=False)
                log.warning(
                    "queue %s: cannot settle (%r); retrying in %.2fs", self.name, exc, delay
                )
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # not the store: an outcome it cannot take
                refused = outcomes_refused(batch, await self._settle_apart(batch, exc))
            else:
                refused = outcomes_refused(batch, refused)
                self._written(batch, refused)
            self._written_at = asyncio.get_running_loop().time()
            if self._unsettled:  # written again: a later failure backs off from the start
                self._unsettled = False
                failures = 0
                self._freed()  # the fetcher may claim again
            if refused:
                self.refused += len(refused)
                log.warning(
                    "queue %s: %d outcome(s) refused: the lease was lost (another worker "
                    "took the task over)",
                    self.name,
                    len(refused),
                )
            self._due_later(batch, refused)
            if self._burials:
                self._tell_buried()
            if self._group_of:
                await self._release_groups(batch, refused)

    async def _settle_apart(self, batch: list[Settlement], exc: Exception) -> list[str]:
        """Settle a batch one by one after it failed as a whole (not for the store's sake).

        So one bad outcome cannot hold back the rest; one that fails alone is logged and
        dropped (its task runs again when its lease expires).
        """
        log.warning("queue %s: settling %d outcome(s) apart (%r)", self.name, len(batch), exc)
        refused: list[str] = []
        for settlement in batch:
            try:
                answer = await self.backend.settle([settlement], buried=self._burials)
            except BackendError:
                self._outbox.append(settlement)  # the store: written with the next batch
                continue
            except Exception as alone:
                log.error("queue %s: cannot settle task %s (%r)", self.name, settlement.id, alone)
                self._written([settlement], [settlement.id])  # it runs again: wait for that
                continue
            refused += answer
            self._written([settlement], outcomes_refused([settlement], answer))
        return refused

    def _due_later(self, settled: list[Settlement], refused: list[str]) -> None:
        """Arm a timer for the retries just written: an idle worker must start them on time.

        A worker waits for a push or its next maintenance; a retry written after it began to
        wait is not a push, so without this it would start up to ``maintenance`` seconds late.
        """
        if not self.engine.serving or self.extras.wake is None:
            return
        for s in settled:
            if s.outcome is _RETRY and s.run_at is not None and s.id not in refused:
                heapq.heappush(self._due_times, s.run_at)
        if self._due_times:
            first = self._due_times[0]
            if self._due_timer is None or first < self._due_at:
                if self._due_timer is not None:
                    self._due_timer.cancel()
                self._due_at = first
                self._due_timer = self.clock.call_at(first, self._due)

    def _due(self) -> None:
        """Retries fell due: wake an idle worker (of any process) to claim them."""
        self._due_timer = None
        now = self.clock.now()
        at = None
        while self._due_times and self._due_times[0] <= now:
            at = heapq.heappop(self._due_times)
        if at is not None and self.engine.serving:
            waking = asyncio.get_running_loop().create_task(self._wake(at))
            self.engine._afters.add(waking)
            waking.add_done_callback(self.engine._afters.discard)
        if self._due_times:
            self._due_at = self._due_times[0]
            self._due_timer = self.clock.call_at(self._due_at, self._due)

    async def _wake(self, at: float) -> None:
        wake = self.extras.wake
        assert wake is not None  # (see _due_later)
        try:
            await wake(self.name, at)
        except BackendError as exc:  # the worker's own timeout covers it, later
            log.debug("queue %s: cannot wake a worker (%r)", self.name, exc)

    async def _release_groups(self, settled: list[Settlement], refused: list[str]) -> None:
        """Release the callbacks of groups whose last member was just settled here."""
        callbacks = set()
        for s in settled:
            if s.outcome is Outcome.STARTED:
                continue
            callback = self._group_of.pop(s.id, None)
            if callback is not None and s.outcome is not Outcome.RETRY and s.id not in refused:
                callbacks.add(callback)
        if not callbacks:
            return
        try:
            ready = []
            for held in await self.backend.get(sorted(callbacks)):
                if held.status not in WAITING or not held.options:
                    continue
                members = json.loads(held.options).get("group_of") or []
                states = await self.backend.get(members)
                if all(state.status in _FINISHED for state in states):
                    ready.append(held.id)
            if ready:
                await self.backend.release(ready, self.clock.now())
        except (BackendError, ValueError) as exc:  # the callback checks by itself later
            log.warning("queue %s: cannot release group callbacks (%r)", self.name, exc)
