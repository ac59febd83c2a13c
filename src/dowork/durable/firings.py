"""Schedule firings: each due time's task pushed once across every worker process.

The firings due together (fired in one pass of the engine's loop: 10,000 schedules on one
grid point, say) are pushed in batches of up to 500, each batch one write to the store, not
one push each. A batch that the store refuses as ``DuplicateTask`` (another worker pushed
some of it first) is read back: the firings the store has count as fired elsewhere, the
others are pushed again, so each is stored once and counted once.

A firing the store cannot take for a moment (``BackendUnavailable``: Redis restarting, a
connect timeout; nothing was sent) is pushed again, after 0.1 s doubling to 5 s, while the
queue accepts work and until the schedule's following firing is due: then that one
supersedes it, and it is logged lost, once. So is a firing whose push's reply was lost
(``OutcomeUnknown``: stored or not). Pushing again is safe: a firing's id is derived from its
schedule and due time, so a store that has it refuses it (``DuplicateTask``), as it refuses
the same firing pushed by another worker; such a firing then counts as fired elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..backends._protocol import Record
from ..codec import encode_for
from ..errors import BackendError, BackendUnavailable, DuplicateTask, OutcomeUnknown
from ..task import Task
from .state import DurableState, _payload_of, log

if TYPE_CHECKING:
    from ..scheduling import Schedule

#: Firings per push at most, when many schedules are due together.
_BATCH = 500

#: Seconds before a refused firing is pushed again, the first time and at most (doubling).
_FIRST_PAUSE = 0.1
_LAST_PAUSE = 5.0


@dataclass(slots=True)
class _Firing:
    """One firing of a schedule on its way to the store."""

    schedule: Schedule
    task: Task[Any]
    record: Record
    planned: float
    #: The schedule's following firing is the trigger's first time after this one (as
    #: ``Schedule._fire`` plans it: after the due time, or after the time it fired if later).
    since: float
    #: When the following firing is due (worked out at the first refusal).
    superseded_at: float | None = None


def _named(firings: list[_Firing]) -> str:
    """Several firings for a log line: how many schedules, and the first three names."""
    names = list(dict.fromkeys(f.schedule.name for f in firings))  # (schedules share names)
    more = ", ..." if len(names) > 3 else ""
    return f"{len(firings)} schedules ({', '.join(names[:3])}{more})"


def _when(planned: float) -> str:
    return datetime.fromtimestamp(planned, UTC).isoformat(timespec="seconds")


class Firings(DurableState):
    """Schedule firings: each due time's task pushed once, and pushed again while refused."""

    #: Firings due together, waiting for the push that takes them (``_push_line``).
    _firing_line: list[_Firing]

    #: Done when the queue stops accepting work: it ends the pauses between pushes.
    _refiring_end: asyncio.Future[None] | None = None

    def fire_schedule(self, schedule: Schedule, planned: float) -> None:
        """Enqueue one firing of a recurring schedule, once across every worker process.

        The task id is derived from the schedule (name, trigger, arguments) and the planned
        time, so when several workers fire the same due time only the first push is stored;
        the others get ``DuplicateTask`` and count it in ``schedule.fired_elsewhere``.
        """
        task = schedule._factory()
        task._not_before = planned
        try:
            record = self.prepare(task)
        except Exception:
            log.exception("queue %s: schedule %s cannot enqueue its task", self.name, schedule.name)
            return
        bound = getattr(self.codec, "binds_task", False)  # signed for the id drawn above
        plain = self.codec.encode(_payload_of(task)) if bound else record.payload
        digest = hashlib.sha1(
            f"{record.name}|{schedule.trigger!r}|".encode() + plain, usedforsecurity=False
        ).hexdigest()[:20]
        record.id = task._id = f"schedule:{digest}:{planned:.3f}"
        if bound:  # the same on every worker: signed for the firing's own id
            record.payload = encode_for(self.codec, _payload_of(task), record.name, record.id)
        record.run_at = planned
        record.status = "pending"
        task._engine = self.engine
        task._frozen = True
        if record.id in self._pushing:  # the same call's schedule, declared twice
            schedule.fired_elsewhere += 1  # (as its push would be refused)
            return
        since = max(planned, self.clock.now())
        line = self._firing_line
        line.append(_Firing(schedule, task, record, planned, since))
        self._pushing.add(record.id)
        if len(line) == 1:  # the firings due with it are added before this push begins
            pushing = asyncio.get_running_loop().create_task(self._push_line())
            self.engine._afters.add(pushing)
            pushing.add_done_callback(self.engine._afters.discard)

    async def _push_line(self) -> None:
        """Push the firings due together (fired in one pass of the loop), in batches."""
        await asyncio.sleep(0)  # (the firings of this pass are in line by now)
        firings = self._firing_line[:]
        self._firing_line.clear()
        try:
            if len(firings) <= _BATCH:
                await self._push_fired(firings)
            else:
                await asyncio.gather(
                    *(
                        self._push_fired(firings[start : start + _BATCH])
                        for start in range(0, len(firings), _BATCH)
                    )
                )
        finally:
            for firing in firings:
                self._pushing.discard(firing.record.id)

    async def _push_fired(self, firings: list[_Firing]) -> None:
        """Push firings until stored, refused for good, or superseded (see the module doc)."""
        pause = _FIRST_PAUSE
        refusals = 0
        while firings:
            try:
                await self._push_firings(firings)
            except DuplicateTask:
                if len(firings) == 1:
                    firings[0].schedule.fired_elsewhere += 1
                    return
                firings = await self._not_stored(firings)  # (the rest: pushed again)
            except (BackendUnavailable, OutcomeUnknown) as exc:
                for firing in firings:  # (a push whose outcome is unknown let its tasks go)
                    firing.task._engine = self.engine
                refusals += 1
                firings = self._still_due(firings, exc)
                if firings:
                    if refusals == 1:
                        self._log_refused(firings, exc)
                    await self._pause_refiring(pause)
                    pause = min(pause * 2, _LAST_PAUSE)
                    firings = self._still_due(firings, exc)  # (the clock moved meanwhile)
            except BackendError as exc:
                self._lost(firings, f"the store refused it ({exc!r})")
                return
            else:
                self._stored(firings, refusals)
                return

    async def _not_stored(self, firings: list[_Firing]) -> list[_Firing]:
        """A batch refused as ``DuplicateTask``: the firings another worker has not pushed.

        Those the store has count in ``fired_elsewhere`` (one read for the batch). When it
        has none of them (the one it has was purged meanwhile, say) or cannot be read, each
        is pushed alone instead, and nothing is left for the batch.
        """
        try:
            have = {r.id for r in await self.backend.get([f.record.id for f in firings])}
        except BackendError:
            have = set()
        if not have:
            await asyncio.gather(*(self._push_fired([firing]) for firing in firings))
            return []
        for firing in firings:
            if firing.record.id in have:
                firing.schedule.fired_elsewhere += 1
        return [f for f in firings if f.record.id not in have]

    def _stored(self, firings: list[_Firing], refusals: int) -> None:
        """The store took these firings (after ``refusals`` pushes it could not take)."""
        for firing in firings:
            firing.schedule.runs += 1
            firing.schedule.last_task = firing.task
        if refusals:
            log.info(
                "queue %s: %d schedule firing(s) due at %s stored after %d refused push(es)",
                self.name,
                len(firings),
                _when(firings[0].planned),
                refusals,
            )

    async def _push_firings(self, firings: list[_Firing]) -> None:
        """One push of firings (their handles are this engine's for the push)."""
        if len(firings) == 1:
            await self._push_record(firings[0].task, firings[0].record)
        else:
            await self._push_batch([f.task for f in firings], [f.record for f in firings])

    def _still_due(self, firings: list[_Firing], refused: BackendError) -> list[_Firing]:
        """The refused firings to push again; the others are logged lost (once: dropped)."""
        if not self.engine.accepting:
            self._lost(firings, f"the queue stopped while the store refused it ({refused!r})")
            return []
        now = self.clock.now()
        kept, cancelled, superseded = [], [], []
        for firing in firings:
            schedule = firing.schedule
            if firing.superseded_at is None:
                firing.superseded_at = schedule.trigger.next_after(firing.since)
            if not schedule.active:
                cancelled.append(firing)
            elif now >= firing.superseded_at:
                superseded.append(firing)
            else:
                kept.append(firing)
        self._lost(cancelled, f"its schedule was cancelled while refused ({refused!r})")
        if superseded:
            due = _when(min(f.superseded_at or now for f in superseded))
            self._lost(
                superseded, f"still refused when the next firing was due at {due} ({refused!r})"
            )
        return kept

    def _lost(self, firings: list[_Firing], why: str) -> None:
        """Log firings given up for the same reason in one line, however many there are.

        A long outage supersedes every schedule's firing at once: a line each flooded the log.
        """
        if not firings:
            return
        if len(firings) == 1:
            what = f"schedule {firings[0].schedule.name} firing lost: the one"
        else:
            what = f"schedule firing lost for {_named(firings)}: the first"
        log.warning(
            "queue %s: %s due at %s was not stored: %s",
            self.name,
            what,
            _when(min(f.planned for f in firings)),
            why,
        )

    def _log_refused(self, firings: list[_Firing], refused: BackendError) -> None:
        if len(firings) == 1:
            what = f"schedule {firings[0].schedule.name}'s firing"
        else:
            what = f"the firings of {_named(firings)}"
        log.warning(
            "queue %s: the store refused %s due at %s (%r); pushing again (after 0.1 s, "
            "doubling to 5 s) until stored or the next firing is due",
            self.name,
            what,
            _when(firings[0].planned),
            refused,
        )

    async def _pause_refiring(self, seconds: float) -> None:
        """Wait ``seconds`` before pushing again, or until the queue stops accepting work."""
        end = self._refiring_end
        if end is None or end.done():
            end = self._refiring_end = asyncio.get_running_loop().create_future()
        await asyncio.wait((end,), timeout=seconds)

    def _end_refiring(self) -> None:
        """The queue stops accepting work: refused firings are pushed again no more."""
        end = self._refiring_end
        if end is not None and not end.done():
            end.set_result(None)
