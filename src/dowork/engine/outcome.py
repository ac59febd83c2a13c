"""Ending attempts: the retry decision, finishing, after-callbacks and hooks."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..chain import ChainFailed
from ..errors import (
    DoNotRetry,
    MaxRetriesExceeded,
    TaskCancelled,
)
from ..group import group_error
from ..retry import RetryPolicy
from ..task import Task, TaskStatus

if TYPE_CHECKING:
    pass

from .home import HomeLoop
from .state import (
    _CANCEL,
    _CANCELLED,
    _FAILED,
    _RETRYING,
    _RUNNING,
    _SUCCEEDED,
    log,
)


class Outcome(HomeLoop):
    """Ending attempts: the retry decision, finishing, after-callbacks and hooks."""

    def core_settle(
        self, task: Task[Any], value: Any, error: BaseException | None, took: float
    ) -> None:
        """An attempt ended: finish the task, or plan its retry by its policy."""
        self._active -= 1
        self._running.discard(task)
        if self._h_after and task._status is _RUNNING:  # a reserved one never started
            self._call_hooks(self._h_after, task, error, took)
        if task._runner is _CANCEL:
            self._finish(task, _CANCELLED, None, TaskCancelled(f"{task.name} was cancelled"))
            return
        if error is None:
            self._finish(task, _SUCCEEDED, value, None)
            return
        task._last_error = error
        cause = _step_error(error)  # a chain's failure: its step's own exception decides
        if isinstance(cause, DoNotRetry):
            self._finish(task, _FAILED, None, error)
            return
        policy = task._policy or self.default_policy
        attempts = task._attempts
        if policy.retries != -1 and attempts > policy.retries:
            self._finish(task, _FAILED, None, MaxRetriesExceeded(attempts, error))
            return
        if policy.should_retry is not None and not self._should_retry(policy, cause):
            self._finish(task, _FAILED, None, error)
            return
        delay = policy.delay(attempts, task._prev_delay, self.rng)
        task._prev_delay = delay
        when = self.clock.now() + delay
        task._next_attempt = when
        task._status = _RETRYING
        for hook in self._hooks["on_retry"]:
            self._call_hook(hook, task, error, delay)
        resume = getattr(error, "resume", None)  # e.g. a chain resumes at its failed step
        if isinstance(resume, tuple) and len(resume) == 2:
            task.args, task.kwargs = tuple(resume[0]), dict(resume[1])
        self._retry_later(task, when, delay, error)

    def core_retry_later(
        self, task: Task[Any], when: float, delay: float, error: BaseException
    ) -> None:
        """Queue a failed task's next attempt for ``when`` (the durable engine overrides)."""
        if delay <= 0 and self.serving:
            self._ready.append(task)
        else:
            self._push(when, task)

    def _should_retry(self, policy: RetryPolicy, error: BaseException) -> bool:
        assert policy.should_retry is not None
        try:
            return bool(policy.should_retry(error))
        except Exception:
            log.exception("should_retry raised; the task will not be retried")
            return False

    def core_finish(
        self,
        task: Task[Any],
        status: TaskStatus,
        value: Any,
        error: BaseException | None,
    ) -> None:
        """The task ended for good: hooks, its group, its after-callback, then its waiters."""
        task._status = status
        task._value = value
        task._error = error
        task._next_attempt = None
        self._unfinished -= 1
        if self.capacity is not None:
            self.capacity.release()
        if error is None:
            for hook in self._hooks["on_success"]:
                self._call_hook(hook, task)
        else:
            for hook in self._hooks["on_failure"]:
                self._call_hook(hook, task, error)
        group = task._group
        if group is not None and group.callback is not task:
            group.member_done(self)
        after = task._after
        if after is not None:
            task._after = None
            try:
                pending = after(task)
            except Exception:
                log.exception("after-callback of %s raised; the task's outcome stands", task.name)
                pending = None
            if pending is not None and isinstance(pending, Awaitable):
                aft = asyncio.get_running_loop().create_task(self._await_after(task, pending))
                self._afters.add(aft)
                aft.add_done_callback(self._afters.discard)
                return
        self._done(task)

    async def _await_after(self, task: Task[Any], pending: Awaitable[object]) -> None:
        try:
            await pending
        except Exception:
            log.exception("after-callback of %s raised; the task's outcome stands", task.name)
        finally:
            self._done(task)
            if not self.accepting:
                self._check_drained()

    def core_done(self, task: Task[Any]) -> None:
        """Wake the task's waiters and remember it as finished (for ``get`` by id)."""
        task._wake_waiters()
        if task._id is not None:
            self._remember_finished(task._id)

    def _remember_finished(self, task_id: str) -> None:
        finished = self._finished_ids
        finished[task_id] = None
        while len(finished) > self.keep_finished:
            old, _ = finished.popitem(last=False)
            self._by_id.pop(old, None)

    def core_progress_changed(self, task: Task[Any]) -> None:
        """A running task reported progress (any thread): tell the ``on_progress`` hooks."""
        hooks = self._hooks["on_progress"]
        if hooks:
            self.call_on_loop(self._call_hooks, hooks, task, task._progress)

    def call_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the home loop: now if called there, else soon (thread-safe)."""
        if threading.get_ident() == self.loop_thread_id:
            fn(*args)
            return
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                loop.call_soon_threadsafe(fn, *args)

    def _call_hooks(self, hooks: list[Callable[..., None]], *args: Any) -> None:
        for hook in hooks:
            self._call_hook(hook, *args)

    @staticmethod
    def _call_hook(hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("hook %r raised; ignored", hook)

    def group_complete(
        self,
        callback: Task[Any],
        results: list[Any],
        failures: list[tuple[str, BaseException]],
        policy: str,
    ) -> None:
        """Every member of ``callback``'s group finished (on the loop): run or fail it."""
        if callback.done:  # cancelled while it waited
            return
        if failures and policy == "fail":
            self._finish(callback, TaskStatus.FAILED, None, group_error(len(results), failures))
            return
        callback.args = (results, *callback.args)
        callback._status = TaskStatus.PENDING
        self._ready.append(callback)


def _step_error(error: BaseException) -> BaseException:
    """The exception that decides a retry: a chained job's failing step's own, else ``error``."""
    if isinstance(error, ChainFailed) and error.__cause__ is not None:
        return error.__cause__
    return error
