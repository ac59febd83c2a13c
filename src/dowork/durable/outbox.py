"""Settling attempts: outcomes into settlements, and handles woken once the store has them."""

from __future__ import annotations

import json
import traceback
from typing import TYPE_CHECKING, Any

from ..backends._protocol import (
    Outcome,
    Settlement,
)
from ..codec import check_depth, encode_for
from ..engine.state import _CANCEL
from ..errors import (
    NotSerializable,
    OutcomeNotWritten,
    PayloadTooLarge,
    ResultTooLarge,
)
from ..task import Task, TaskStatus, _deciding

if TYPE_CHECKING:
    pass


from .state import _OUTCOME, _TRACE_LIMIT, DurableState, _chain_log_of, _describe, _payload_of, log

#: (An enum's members read from the class cost a Python ``__getattr__`` hook each, 3.11.)
_SUCCEEDED, _RUNNING = TaskStatus.SUCCEEDED, TaskStatus.RUNNING
_OUT_SUCCEEDED = Outcome.SUCCEEDED


class Outbox(DurableState):
    """Settling attempts: outcomes into settlements, and handles woken once the store has them."""

    def settle(self, task: Task[Any], value: Any, error: BaseException | None, took: float) -> None:
        """Note the attempt's duration and error for the record's history, then settle it."""
        task_id = task._id or task.id
        if task_id in self._claimed:
            if (
                error is None
                and task._status is _RUNNING
                and task._after is None
                and task._group is None
                and task._runner is not _CANCEL
            ):
                self._succeeded(task, task_id, value, took)
                return
            self._attempt[task_id] = (took, error)
        self.engine.core_settle(task, value, error, took)

    def _succeeded(self, task: Task[Any], task_id: str, value: Any, took: float) -> None:
        """The common end of a claimed attempt: it returned, with no group or after-callback.

        What ``core_settle``, ``finish``, ``_decide`` and ``core_finish`` do for it, in one
        frame; a result it cannot store takes that way instead (``finish`` fails the task).
        """
        engine = self.engine
        engine._active -= 1
        engine._running.discard(task)
        if engine._h_after:
            engine._call_hooks(engine._h_after, task, None, took)
        settings = self.settings
        own = task._overrides
        keep = settings.keep_result if own is None else own.keep(settings.keep_result)
        result = None
        if keep != 0:
            try:
                result = self.codec.encode(value)
            except NotSerializable:
                result = None
            if result is None or len(result) > settings.max_result:
                self._attempt[task_id] = (took, None)
                engine._finish(task, _SUCCEEDED, value, None)  # fails it, as finish does
                return
        now = engine.stamp  # (the outcomes of a batch of threads share one time)
        settlement = Settlement(  # (positional: a call with keywords costs a dict)
            task_id, self._claimed.pop(task_id), _OUT_SUCCEEDED,
            self.clock.now() if now is None else now, 0.0, None, None, result, keep,
            None, None, True, took,
        )  # fmt: skip
        self._settle_out(settlement)
        self._holding[id(settlement)] = task  # reported once written (see _written)
        task._unwritten = _RUNNING
        if engine._h_success:  # hooks read the outcome at once (see _decide)
            self._decide(task, _SUCCEEDED, value, None)
        else:  # (core_finish with no hooks, group or after-callback, inline; a queue on a
            task._status = _SUCCEEDED  # backend has no maxsize, so no capacity to release)
            task._value = value
            task._error = None
            task._next_attempt = None
            engine._unfinished -= 1
            self._unwoken.add(task)  # woken by _written (see done)
        if len(self._claimed) < self._slot_waiting:  # (the fetcher waits, and may claim now)
            self._freed()
        if self._held:
            self._start_held(task_id)

    def _failed_line(
        self, token: int, outcome: Outcome, now: float, took: float, error: BaseException
    ) -> str:
        """The record's history line of an attempt that raised: when, how long, how, why.

        ``_settle_out`` writes that of an attempt that did not raise itself, without a call.
        """
        entry: dict[str, Any] = {
            "n": token,
            "start": now - took,
            "took": took,
            "outcome": str(outcome),
            "error": _describe(error),
            "traceback": "".join(traceback.format_exception(error))[-_TRACE_LIMIT:],
        }
        return json.dumps(entry, separators=(",", ":"), default=str)

    def retry_later(self, task: Task[Any], when: float, delay: float, error: BaseException) -> None:
        """A failed attempt runs again at ``when``: its settlement says so (``RETRY``)."""
        token = self._claimed.pop(task.id, None)
        self.engine._unfinished -= 1
        if token is not None:
            payload = None
            if getattr(error, "resume", None) is not None:  # store where to resume from
                try:
                    name = self.registry.name_of(task.fn) or task.name
                    check_depth(task.args)
                    check_depth(task.kwargs.values())
                    payload = encode_for(self.codec, _payload_of(task), name, task.id)
                except NotSerializable as exc:
                    log.warning("queue %s: cannot store resume point (%s)", self.name, exc)
                if payload is not None and len(payload) > self.settings.max_payload:
                    log.warning(
                        "queue %s: cannot store resume point (%s)",
                        self.name,
                        PayloadTooLarge(len(payload), self.settings.max_payload),
                    )
                    payload = None
            self._settle_out(
                Settlement(
                    task.id, token, Outcome.RETRY, self.clock.now(), run_at=when,
                    error=_describe(error), payload=payload,
                )
            )  # fmt: skip
        self._freed()
        self._start_held(task.id)

    def finish(
        self,
        task: Task[Any],
        status: TaskStatus,
        value: Any,
        error: BaseException | None,
    ) -> None:
        """The task ended for good: its outcome (and result) goes to the outbox."""
        task_id = task._id or task.id
        token = self._claimed.pop(task_id, None)
        if token is not None:
            settings = self.settings
            result = None
            own = task._overrides
            keep = settings.keep_result if own is None else own.keep(settings.keep_result)
            if status is _SUCCEEDED and keep != 0:
                try:
                    result = self.codec.encode(value)
                except NotSerializable as exc:
                    status, value, error = TaskStatus.FAILED, None, exc
                else:
                    if len(result) > settings.max_result:  # fails, nothing of it stored
                        too_big = ResultTooLarge(len(result), settings.max_result)
                        status, value, error, result = TaskStatus.FAILED, None, too_big, None
            described = None
            if error is not None:
                described = _describe(error)
                log_of = _chain_log_of(error)
                if log_of is not None:  # a failed chain keeps its result log in the record
                    result = self._chain_result(task, log_of)
            now = self.engine.stamp  # (the outcomes of a batch of threads share one time)
            settlement = Settlement(  # (positional: a call with keywords costs a dict)
                task_id, token, _OUTCOME[status], self.clock.now() if now is None else now,
                0.0, described, None, result, keep,
            )  # fmt: skip
            self._settle_out(settlement)
            self._holding[id(settlement)] = task  # reported once written (see _written)
            self._decide(task, status, value, error)
        elif task_id in self._handed_back:  # cut short by abort(): it runs again elsewhere
            self._holding[id(task)] = task  # never written: see _give_up_unwritten
            self._decide(task, status, value, error)
            if self.engine.closed:
                self._give_up_unwritten()
        else:
            self.engine.core_finish(task, status, value, error)
        if len(self._claimed) < self._slot_waiting:  # (the fetcher waits, and may claim now)
            self._freed()
        if self._held:
            self._start_held(task_id)

    def _chain_result(self, task: Task[Any], log_of: dict[str, Any]) -> bytes | None:
        """The stored result of a failed chain: its log, unless too big to keep."""
        try:
            result = self.codec.encode({"chain_log": log_of})
        except NotSerializable:
            return None
        if len(result) > self.settings.max_result:
            log.warning(
                "queue %s: task %s: its chain log (%d bytes) is over max_result; not stored",
                self.name,
                task.id,
                len(result),
            )
            return None
        return result

    def _decide(
        self, task: Task[Any], status: TaskStatus, value: Any, error: BaseException | None
    ) -> None:
        """Finish a task whose handle waits for the store (see ``_written``).

        Its hooks and after-callback, run now, read the outcome at once; others once written.
        """
        task._unwritten = task._status
        hooks = _deciding.set(task)
        try:
            self.engine.core_finish(task, status, value, error)
        finally:
            _deciding.reset(hooks)

    def done(self, task: Task[Any]) -> None:
        """Wake a finished task's waiters, once the store has its outcome (see ``_written``)."""
        if task._unwritten is not None:
            self._unwoken.add(task)  # woken by _written
        elif task._status.final:  # else its outcome was refused: it waits for the store's
            self.engine.core_done(task)

    def _written(self, settled: list[Settlement], refused: list[str]) -> None:
        """A write of ``settled`` returned: their handles report their outcome from now on.

        One the store refused (another worker took the task over) waits for the outcome the
        store ends with instead, as a handle of another process does.
        """
        holding = self._holding
        if not holding:
            return
        unwoken = self._unwoken
        remember = self.engine._remember_finished
        for settlement in settled:
            task = holding.pop(id(settlement), None)
            if task is None:
                continue
            if refused and settlement.id in refused:
                self._overtake(task)
                continue
            task._unwritten = None
            if task in unwoken:
                unwoken.discard(task)
                task._wake_waiters()  # (engine.core_done, inline: its id is the settlement's)
                remember(settlement.id)

    def _overtake(self, task: Task[Any]) -> None:
        """The store did not take this run's outcome: wait for the one it ends with."""
        task._status = task._unwritten or TaskStatus.RUNNING
        task._unwritten = None
        task._value = task._error = None
        self._unwoken.discard(task)
        self._overtaken.add(task)
        self._watched[task.id] = task
        self._start_watcher()

    def _give_up_unwritten(self) -> None:
        """The queue stops before the store had these outcomes: end the waits on them.

        Each handle raises ``OutcomeNotWritten`` (carrying this run's outcome); its status
        stays the store's. The task runs again once its lease expires, unless the write
        went through after all.
        """
        holding, self._holding = self._holding, {}
        for task in holding.values():
            why = (
                f"was handed back to {self.backend!r} when the queue stopped at once; it "
                "runs again on any worker"
                if task.id in self._handed_back
                else f"the queue stopped before {self.backend!r} had that outcome; the task "
                "runs again once its lease expires"
            )
            error = OutcomeNotWritten(
                f"task {task.id} ({task.name}) {task._status.value} here, but {why}",
                task.id,
                task._status.value,
                task._value,
                task._error,
            )
            task._status = task._unwritten or TaskStatus.RUNNING  # then no longer hidden
            task._unwritten = None
            task._value = None
            task._error = error
            self._unwoken.discard(task)
            task._wake_waiters()
        overtaken, self._overtaken = self._overtaken, set()
        for task in overtaken:
            if task._finished:
                continue
            self._watched.pop(task.id, None)
            task._error = OutcomeNotWritten(
                f"task {task.id} ({task.name}): the store refused this run's outcome (another "
                "worker took the task over) and the queue stopped before it had a final one",
                task.id,
            )
            task._wake_waiters()
        for task_id in self._handed_back:  # not started, or still running in a thread
            unfinished = self.engine._by_id.get(task_id)
            if unfinished is None or unfinished._finished or unfinished._status.final:
                continue
            unfinished._error = OutcomeNotWritten(
                f"task {task_id} ({unfinished.name}) was handed back to {self.backend!r} "
                "unfinished when the queue stopped at once; it runs again on any worker",
                task_id,
            )
            unfinished._wake_waiters()
