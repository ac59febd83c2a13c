"""Upkeep: the store clock, lease renewal and reaping, purges, worker beats."""

from __future__ import annotations

import contextlib
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..backends._protocol import (
    WorkerBeat,
)
from ..backends.store import Upkeep, Upkept
from ..clock import SystemClock
from ..errors import (
    BackendFull,
)

if TYPE_CHECKING:
    pass


from .state import DurableState, T, log


class Maintenance(DurableState):
    """Upkeep: the store clock, lease renewal and reaping, purges, worker beats."""

    def _lease_now(self) -> float:
        """Now on the store's clock, which every worker's leases share (see ``_sync_clock``)."""
        return self.clock.now() + self._offset

    async def _sync_clock(self) -> None:
        """Measure how far the store's clock (Redis ``TIME``) is from ours, once a minute.

        Leases are granted, renewed and reaped on that shared clock, so a worker whose clock
        is off does not expire its peers' leases early or keep dead ones alive. Offsets under
        50 ms are ignored, and only a real clock is corrected (a fake one is the test's).
        """
        server_time = self.extras.server_time
        if server_time is None or not isinstance(self.clock, SystemClock):
            return
        before = self.clock.now()
        server = float(await server_time())
        offset = server - (before + self.clock.now()) / 2  # the round trip halved
        self._offset = offset if abs(offset) >= 0.05 else 0.0

    async def _before_claim(self, now: float) -> None:
        """What a claim needs first: the file is the one opened, the store's clock is measured.

        SQLite: the file at the path is still the one opened (else ``StoreLost``); Redis: the
        shared clock, measured once a minute (see ``_sync_clock``).
        """
        check_store = self.extras.check_store
        if check_store is not None:
            await check_store()
        if now >= self._next_clock_sync:
            self._next_clock_sync = now + 60.0
            await self._sync_clock()

    async def _before_first_claim(self, now: float) -> None:
        """``_before_claim`` and the reap, before a worker's first claim.

        Its first beat and purge follow that claim at once (see ``Fetcher._fetch_loop``); the
        reap goes first, so that a task whose worker died long ago keeps its place at the head
        of the queue.
        """
        await self._before_claim(now)
        await self._reap(now)

    async def _maintain(self, now: float) -> None:
        settings = self.settings
        await self._before_claim(now)
        leases = list(self._claimed.items())
        if leases:
            renew = self.backend.heartbeat(leases, now, settings.lease)
            lost, cancel = await self._unless_full(renew, ([], []))
            lost = [i for i in lost if i in self._claimed]  # not those settled meanwhile
            self._renewed([i for i, _ in leases], lost, now + settings.lease)
            for task_id in cancel:
                task = self.engine._by_id.get(task_id)
                if task is not None and not task._status.final:
                    self.engine.cancel_task(task)
            if lost:
                log.warning("queue %s: lost the lease of %d task(s)", self.name, len(lost))
        held = self._held_leases()
        if held:  # apart: the id of each is in _claimed too, under another token
            gone, _ = await self.backend.heartbeat(held, now, settings.lease)
            for task_id in gone:  # another worker has it now
                self._held.pop(task_id, None)
        if self.engine.serving:
            await self._unless_full(self._beat(now, settings.lease), None)
        # One step a call: a store full for one step (the beat) must not stop the next.
        await self._reap(now)
        if now >= self._next_purge:
            self._next_purge = now + settings.purge_every
            await self.backend.upkeep(Upkeep(self.name, now, purge=True))

    async def _reap(self, now: float) -> None:
        """Requeue the tasks whose lease lapsed; dead-letter those out of crash budget.

        The store dead-letters the records it cannot read too: the hooks are told of them.
        """
        settings = self.settings
        job = Upkeep(
            self.name,
            now,
            crash_budget=settings.crash_budget,
            # A task the store handed out but never leased (a Redis pop whose reply was lost)
            # is found by a reap within maintenance, so held this long it runs again within
            # lease + maintenance of the hand-out, as a crashed worker's task does.
            transit=settings.lease - settings.maintenance,
            buried=self._burials,
        )
        reaped = await self._unless_full(self.backend.upkeep(job), Upkept())
        if self._burials:
            self._tell_buried()
        if reaped.requeued or reaped.dead:
            log.warning(
                "queue %s: requeued %d task(s) whose worker stopped; dead-lettered %d",
                self.name,
                reaped.requeued,
                reaped.dead,
            )

    async def _unless_full(self, step: Coroutine[Any, Any, T], default: T) -> T:
        """Run a maintenance step, or skip it with a warning if the store is full.

        A store refusing writes for lack of room (``BackendFull``) must not stop the other
        steps, nor the claims and settlements that drain it.
        """
        try:
            return await step
        except BackendFull as exc:
            log.warning("queue %s: store full, maintenance step skipped (%s)", self.name, exc)
            return default

    async def _beat(self, now: float, ttl: float) -> None:
        """Tell the store this worker is alive, what it runs, and what it finished."""
        host, pid, _ = self.owner.rsplit(":", 2)
        running = []
        for task_id in self._claimed:
            task = self.engine._by_id.get(task_id)
            if task is not None:
                running.append([task_id, self.registry.name_of(task.fn) or task.name])
            if len(running) == 20:
                break
        schedules = [
            {
                "name": s.name,
                "trigger": repr(s.trigger),
                "next_run": s._next,
                "runs": s.runs,
            }
            for s in self.engine._schedules
            if s.active
        ]
        beat = WorkerBeat(
            id=self.owner,
            queue=self.name,
            host=host,
            pid=int(pid),
            started_at=self._serving_since,
            seen_at=now,
            concurrency=self.engine.concurrency,
            held=len(self._claimed),
            running=running,
            schedules=schedules,
        )
        finished, self._finished_counts = self._finished_counts, {}
        try:
            await self.backend.upkeep(Upkeep(self.name, now, beat=beat, ttl=ttl, finished=finished))
        except BaseException:
            for minute, counts in finished.items():  # keep them for the next beat
                mine = self._finished_counts.setdefault(minute, {})
                for outcome, n in counts.items():
                    mine[outcome] = mine.get(outcome, 0) + n
            raise

    async def _leave(self) -> None:
        """Remove this worker's beat from the store (it stopped), keeping its last counts."""
        if not self._serving_since:
            return
        self._serving_since = 0.0
        with contextlib.suppress(Exception):
            await self._beat(self.clock.now(), 0.0)
