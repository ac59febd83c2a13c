"""Fetching: the claim loop, waiting for work, and taking claimed records in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from ..backends._protocol import (
    Record,
)
from ..backends.store import ClaimRequest
from ..errors import (
    StoreLost,
)
from ..task import Task

if TYPE_CHECKING:
    pass


from .state import _STUCK, DurableState, _less_urgent, log, store_pause

_PRIORITY = attrgetter("priority")


class Fetcher(DurableState):
    """Fetching: the claim loop, waiting for work, and taking claimed records in."""

    def serve(self) -> None:
        """Start claiming and running tasks (on the loop)."""
        if self.engine.closed:
            raise RuntimeError(f"queue {self.name!r} was shut down and cannot start again")
        if self.engine.serving:
            raise RuntimeError(f"queue {self.name!r} is already running")
        self.engine.serving = self.engine.started = True
        loop = asyncio.get_running_loop()
        self.engine._stopped = loop.create_future()
        self.engine._launch_from = self.engine._ready
        self._serving_since = self.clock.now()
        self._slot_free = asyncio.Event()
        self._fetcher = loop.create_task(self._fetch_loop())
        if self.engine._heap:  # recurring schedules fire from every worker (once per due time)
            self.engine._arm(self.engine._heap[0][0])

    async def _fetch_loop(self) -> None:
        """Claim and wait for work while serving; maintenance every ``settings.maintenance``.

        The first claim goes before the first beat and purge (see ``_before_first_claim``),
        so that a worker starts its first task sooner; they follow it at once.
        """
        settings = self.settings
        next_maintenance = 0.0
        failures = 0
        first = True  # no claim issued yet
        while self.engine.serving:
            try:
                now = self._lease_now()
                if first:
                    await self._before_first_claim(now)
                    now = self._lease_now()  # the shared clock may have been measured just now
                # A clock stepped back (NTP) must not stop heartbeats and reaping until it
                # catches up with the last due time: run maintenance then too.
                elif now >= next_maintenance or now < next_maintenance - settings.maintenance:
                    await self._maintain(now)
                    next_maintenance = now + settings.maintenance
                    now = self._lease_now()
                was_first, first = first, False
                full = await self._fetch(now)
                if full is not None:
                    failures = 0
                    # Claim again at once after a claim that took all it asked (there may
                    # be more) or the first one (the first beat and purge are due).
                    if not (full or was_first):
                        await self._wait_for_work(now)
            except asyncio.CancelledError:
                raise
            except StoreLost as exc:
                self._lose_store(exc)
                return
            except Exception as exc:
                failures += 1
                delay = store_pause(failures)
                log.warning(
                    "queue %s: backend error (%r); retrying in %.2fs", self.name, exc, delay
                )
                await asyncio.sleep(delay)

    async def _fetch(self, now: float) -> bool | None:
        """Claim what there is room for: whether it took all it asked; None: no room.

        With no room, it waits for some (a slot freed, or up to ``settings.maintenance``).
        """
        settings = self.settings
        if self._suspects:
            self._suspects.intersection_update(self._claimed)
        held = len(self._claimed)
        prefetch = self._prefetch()
        concurrency = self.engine.concurrency
        # A claim goes while fewer are held than this: a slot is free, or there is room for
        # half the prefetch at least (held <= concurrency + prefetch // 2).
        below = concurrency + prefetch // 2 + 1 if prefetch else concurrency
        if held < below and not (self._suspects or self._unsettled):
            ask = min(prefetch + concurrency - held, settings.batch)
            began = time.monotonic()
            claimed = await self.backend.claim(self._claim_request(now, ask))
            self._pace.claimed(len(claimed), time.monotonic() - began)
            await self._admit(claimed)
            self.engine._pump()
            if claimed:
                time.sleep(0)  # noqa: ASYNC251  # a task thread takes the GIL now, as in _wait_for_work
            return len(claimed) == ask
        slot = self._slot_free
        assert slot is not None
        slot.clear()
        # A finished task sets the slot only while this waits, and only once fewer are held
        # than would let the claim above go: a busy worker with a small concurrency was woken
        # by every task, to wait again.
        self._slot_waiting = below
        timeout = settings.maintenance
        waiting = held > len(self._begun)  # claimed tasks here wait for a slot
        if waiting:
            timeout = min(timeout, _STUCK)
        try:
            async with asyncio.timeout(timeout):
                await slot.wait()
        except TimeoutError:
            if waiting:  # no slot freed for a while: give back what the rate no longer calls for
                self._hand_back_waiting(timeout)
        finally:
            self._slot_waiting = 0
        return None

    def _lose_store(self, exc: StoreLost) -> None:
        """Stop this worker for good: its store is gone (see ``StoreLost``).

        Claims nothing more, lets running attempts finish, then shuts down; ``Queue.run()``
        raises the error and ``dowork worker`` exits with status 1, for a supervisor to start
        the worker again on the store now at the path.
        """
        self.lost = exc
        log.critical("queue %s: %s; stopping this worker", self.name, exc)
        # Not among _afters: the shutdown waits for those.
        self._losing = asyncio.get_running_loop().create_task(self._stop_for_good())

    async def _stop_for_good(self) -> bool:
        """Shut down (running attempts finish), then release whoever waits in ``run()``."""
        try:
            return await self.shutdown(None)
        finally:
            stopped = self.engine._stopped
            if stopped is not None and not stopped.done():
                stopped.set_result(None)

    async def _wait_for_work(self, now: float) -> None:
        """Wait for work; with a free slot and ``wait_claim`` (Redis), claim in the same trip.

        The claim then runs the moment a push wakes the worker, so the task starts at once.
        A worker whose slots are all busy only waits, and decides what to hold once woken:
        the hold computed before a long wait would be stale (its tasks may have turned long).
        """
        pause = await self._idle_for(now)
        wait_claim = self.extras.wait_claim
        settings = self.settings
        held, concurrency = len(self._claimed), self.engine.concurrency
        if wait_claim is None or held >= concurrency or self._suspects or self._unsettled:
            await self.backend.wait(self.name, pause)
            return
        room = self._prefetch() + concurrency - held
        claimed = await wait_claim(
            self._claim_request(self._lease_now(), min(room, settings.batch)), pause
        )
        self._pace.claimed(len(claimed), None)
        await self._admit(claimed)
        self.engine._pump()
        if claimed:
            # Let a worker thread that was just handed a task take the GIL now, rather than
            # after this thread's next round trips (a no-op task then starts ~0.3 ms sooner).
            time.sleep(0)  # noqa: ASYNC251  # releases the GIL for a moment, on purpose

    def _claim_request(self, now: float, limit: int) -> ClaimRequest:
        """A claim of up to ``limit`` records at ``now``, with this queue's flow control."""
        settings = self.settings
        return ClaimRequest(
            self.name, now, limit, settings.lease, self.owner, settings.max_running,
            self._alone_from, aging=self.engine.priority_aging, rates=self._rates(),
            per_key=settings.key_concurrency, buried=self._burials,
        )  # fmt: skip

    def _prefetch(self) -> int:
        """Tasks to hold beyond ``concurrency``: what the recent rate calls for (``Pace``).

        None under a rate limit: it spaces out claims, so a claimed task must start at once:
        one held back behind busy workers would start late, next to the tasks claimed in the
        next period.
        """
        if self._rates():
            return 0
        return self._pace.hold(len(self._claimed), time.monotonic())

    def _rates(self) -> dict[str, tuple[int, float]] | None:
        """The rate limits the backend enforces at claim: the queue's ``""`` and per task."""
        if len(self.registry) != self._rates_for:
            rates: dict[str, tuple[int, float]] = {}
            limit = self.engine.rate_limit
            if limit is not None:
                rates[""] = (limit.n, limit.per)
            for fn in self.registry.task_functions():
                own = fn._template._rate_limit
                if own is not None:
                    rates[fn.name] = (own.n, own.per)
            self._rate_cache = rates or None
            self._rates_for = len(self.registry)
        return self._rate_cache

    async def _idle_for(self, now: float) -> float:
        """How long an idle worker may wait: until the next maintenance or the next due task."""
        pause = self.settings.maintenance
        due = await self.backend.next_due(self.name)
        if due is not None:
            pause = min(pause, max(0.0, due - now))
        return pause

    async def _admit(self, records: list[Record]) -> None:
        """Take a claimed batch; orphans (they crashed a worker) run first, in queue order.

        The less an orphan waits in this process, the less it is exposed to another crash,
        and the sooner the task a dead worker left runs again. A group's callback first
        gathers its members' outcomes. The records the claim dead-lettered unread are told
        first.
        """
        if self._burials:
            self._tell_buried()
        for record in reversed(records):
            if record.crashes:
                await self._admit_one(record, first=True)
        for record in records:
            if not record.crashes:
                opening = self._admit_now(record)
                if opening is not None:
                    await opening
        if (
            any(map(_PRIORITY, records))  # (no generator frame per record)
            and len(self.engine._ready) > 1
            and not any(r.concurrency_key for r in records)  # keys take turns: keep them so
        ):
            # Tasks held from earlier claims wait behind more urgent ones claimed now.
            ready = sorted(self.engine._ready, key=_less_urgent)
            self.engine._ready.clear()
            self.engine._ready.extend(ready)

    async def _admit_one(self, record: Record, first: bool = False) -> None:
        """Take a claimed record in (``_admit_now``), opening its group if it is a callback."""
        opening = self._admit_now(record, first)
        if opening is not None:
            await opening

    def _admit_now(self, record: Record, first: bool = False) -> Coroutine[Any, Any, None] | None:
        """Take a claimed record in now; a group's callback: the opening to await.

        (Not a coroutine itself: most records need none, and one a record costs a frame.)
        """
        if record.id in self._claimed:  # the same id is already here: start it after that one
            self._held.setdefault(record.id, []).append(record)
            log.warning(
                "queue %s: task %s claimed again while it runs here; held until that run ends",
                self.name,
                record.id,
            )
            return None
        try:
            options = record.options
            if options is not None and '"group_of"' in options:
                return self._open_guarded(record)
            self._take(record, first=first)
        except Exception as exc:  # the per-record guard: no record stops the worker
            self._unreadable(record, exc)
        return None

    async def _open_guarded(self, record: Record) -> None:
        """``_open_group`` under the per-record guard."""
        try:
            await self._open_group(record)
        except Exception as exc:  # the per-record guard: no record stops the worker
            self._unreadable(record, exc)

    def _take(
        self,
        record: Record,
        lead: list[Any] | None = None,
        queued: bool = True,
        first: bool = False,
    ) -> Task[Any] | None:
        """Turn a claimed record into a running task, or dead-letter it if it cannot run.

        ``lead`` (a group's results) goes before the stored arguments; ``queued=False`` builds
        the task without putting it in line to run; ``first`` puts it at the head of the line.
        Whatever the record holds, it either starts or is dead-lettered here: a payload or
        option that cannot be read (too big, too deep, wrong types) is ``malformed``.
        """
        self._claimed[record.id] = record.attempts
        if record.lease_until is not None:
            self._lease_until[record.id] = record.lease_until
        self._dropped.discard(record.id)
        if record.lost or record.crashes:
            self._store_first.add(record.id)
        try:
            return self._start(record, lead, queued, first)
        except Exception as exc:  # the per-record guard: no record stops the worker
            if record.id in self._claimed:
                self._bury(record, "malformed", f"{type(exc).__name__}: {exc}")
            return None
