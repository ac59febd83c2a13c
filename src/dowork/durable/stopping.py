"""Driving and stopping: dispatch by hand, warm shutdown, stop at once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..backends._protocol import (
    Outcome,
    Settlement,
)
from ..errors import (
    BackendError,
)
from ..task import UNFINISHED

if TYPE_CHECKING:
    pass


from .state import _ABORT_WRITES, DurableState, log

_CANCEL_AGAIN = 0.1  #: seconds a cancelled fetcher may take to end before it is cancelled again


class Stopping(DurableState):
    """Driving and stopping: dispatch by hand, warm shutdown, stop at once."""

    async def dispatch(self) -> bool:
        """Claim every due task once, run them, write the outcomes; say if work remains."""
        if self.engine.serving:
            raise RuntimeError("dispatch() drives a queue by hand; this queue is running")
        now = self.clock.now()
        await self._maintain(now)
        claimed = await self.backend.claim(self._claim_request(now, 10_000))
        await self._admit(claimed)
        batch = list(self.engine._ready)
        self.engine._ready.clear()
        await self.engine._run_batch(batch)
        await self._drain_outbox()
        counts = await self.backend.counts(self.name)
        return any(counts.get(s, 0) for s in UNFINISHED)

    async def next_due(self) -> tuple[float, bool] | None:
        """When the store's next waiting task is due (``dispatch()`` fires no schedules)."""
        due = await self.backend.next_due(self.name)
        return None if due is None else (due, True)

    async def wait_stopped(self) -> None:
        """Wait until stopped and the running attempts ended, then write their outcomes."""
        await self.engine.core_wait_stopped()
        await self._end_fetcher()
        await self._drain_outbox()

    async def _end_fetcher(self) -> None:
        """Cancel the claim loop and wait until it ended.

        A cancellation can be lost: Python 3.11's ``asyncio.wait_for`` (redis-py's
        ``send_packed_command`` runs each write in one) returns the result of a step that ended
        in the same turn of the loop as the cancel, swallowing it, and the fetcher went on into
        its blocking pop for the whole block time (``abort()`` took 5.1 s). So it is cancelled
        again until it ends: the next cancel cuts the read, which closes the connection (an
        entry the pop moved meanwhile is held by the next drain and requeued by the reaper
        within a lease: see P:q:Q:taken in dowork.backends.redis).
        """
        fetcher = self._fetcher
        if fetcher is None:
            return
        while not fetcher.done():
            fetcher.cancel()
            await asyncio.wait((fetcher,), timeout=_CANCEL_AGAIN)
        await asyncio.gather(fetcher, return_exceptions=True)  # (its outcome retrieved)

    async def _drain_outbox(self) -> None:
        progressing = self._progressing
        if progressing is not None and not progressing.done():
            await asyncio.shield(progressing)  # the last progress reports, then the outcomes
        while self._outbox or (self._flushing is not None and not self._flushing.done()):
            self._flush_now()
            assert self._flushing is not None
            await asyncio.shield(self._flushing)

    def has_work(self) -> bool:
        """Whether this process holds claimed tasks."""
        return bool(self._claimed)

    async def shutdown(self, timeout: float | None) -> bool:
        """Stop claiming, let running attempts finish, write their outcomes, then stop.

        Tasks still waiting in the backend stay there for other (or later) workers. An
        ``abort()`` meanwhile (a second signal) ends it: it then returns False, and ``abort``
        writes what is left.
        """
        self.engine.accepting = False
        self._end_refiring()
        if self.engine.closed:
            return True
        self._stopping = asyncio.current_task()
        try:
            return await self._shut_down(timeout)
        except asyncio.CancelledError:
            if not self._aborting:
                raise
            self._stopping = None
            if self._aborted is not None:  # abort() took over: it records outcomes, hands back
                await asyncio.shield(self._aborted)
            return False
        finally:
            self._stopping = None

    async def _shut_down(self, timeout: float | None) -> bool:
        clean = True
        if self.engine.serving:
            self.engine.serving = False
            self._freed()
            if self._due_timer is not None:
                self._due_timer.cancel()
            await self._end_fetcher()
            try:
                async with asyncio.timeout(timeout):
                    while self.engine._active or self.engine._afters:
                        await self._quiet_or_after()
            except TimeoutError:
                clean = False
                for task in list(self.engine._running):
                    self.engine.cancel_task(task)
        if self._held:
            self._hand_back_held()
        await self._drain_outbox()
        await self._leave()
        if self._watcher is not None:
            self._watcher.cancel()
        self.engine.halt()
        self.engine._close()
        self._give_up_unwritten()  # none once the outbox drained, but for handles overtaken
        self._end_watches()  # (after: a handle given up above says why, more precisely)
        if self.owns_backend:
            with contextlib.suppress(BackendError):
                await self.backend.close()
        return clean

    async def abort(self) -> list[Any]:
        """Stop at once (a second signal): nothing to dump, the store keeps every task.

        Attempts whose function already returned are settled with their real outcome; every
        other claimed task (running, or waiting to start) is handed back to the store at once,
        to run again on any worker without waiting for its lease. No new attempt starts once
        this begins, and a warm shutdown in progress is ended (it returns False). Writes to an
        unreachable store are given up after ``_ABORT_WRITES`` seconds: those tasks run again
        when their lease expires.
        """
        self._aborting = True
        self.engine.accepting = False
        self._end_refiring()
        self.engine.serving = False
        # Launch nothing more, not even prefetched tasks.
        self.engine._launch_from = collections.deque()
        aborted = self._aborted = asyncio.get_running_loop().create_future()
        try:
            await self._abort()
        finally:
            aborted.set_result(None)
        return []

    async def _abort(self) -> None:
        stopping = self._stopping
        if stopping is not None and stopping is not asyncio.current_task():
            stopping.cancel("dowork: stopped at once")  # it waits for us, then returns False
        if self.engine.closed:  # the warm shutdown had finished everything
            return
        await self._end_fetcher()
        lane = self.engine._threads
        if lane is not None:
            lane._drain()  # functions that returned but whose outcome was not taken in yet
        now = self.clock.now()
        handed = list(self._claimed.items()) + self._held_leases()
        self._handed_back.update(task_id for task_id, _ in handed)
        self._claimed.clear()
        self._held.clear()
        for task_id, token in handed:
            self._settle_out(
                Settlement(
                    task_id, token, Outcome.RETRY, now, run_at=now,
                    error="handed back: the worker was stopped at once",
                )
            )  # fmt: skip
        for task in list(self.engine._running):
            self.engine.cancel_task(task)
        written = await self._bounded(self._drain_outbox(), "write outcomes and hand-backs")
        if handed:
            log.warning(
                "queue %s: stopped at once: %s %d unfinished task(s) back to %r; they run "
                "again on any worker%s",
                self.name,
                "handed" if written else "could not hand",
                len(handed),
                self.backend,
                "" if written else " once their lease expires",
            )
        await self._bounded(self._leave(), "remove this worker's heartbeat")
        if self._watcher is not None:
            self._watcher.cancel()
        self.engine.halt()
        self.engine._close()
        self._give_up_unwritten()  # the outcomes it could not write in time
        self._end_watches()  # (after: a handle given up above says why, more precisely)
        if self.owns_backend:
            await self._bounded(self.backend.close(), "close the store")

    async def _bounded(self, step: Coroutine[Any, Any, None], what: str) -> bool:
        """Run one step of ``abort()`` for at most ``_ABORT_WRITES`` seconds; say if it ended."""
        try:
            async with asyncio.timeout(_ABORT_WRITES):
                await step
        except TimeoutError:
            log.warning(
                "queue %s: stopping at once: could not %s within %gs (is %r reachable?)",
                self.name,
                what,
                _ABORT_WRITES,
                self.backend,
            )
            return False
        except Exception as exc:
            log.warning("queue %s: stopping at once: could not %s (%r)", self.name, what, exc)
            return False
        return True

    async def _quiet_or_after(self) -> None:
        if self.engine._active:
            quiet = asyncio.get_running_loop().create_future()
            self.engine._quiet.append(quiet)
            await quiet
        elif self.engine._afters:
            await asyncio.gather(*self.engine._afters, return_exceptions=True)
