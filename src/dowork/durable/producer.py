"""Producing: tasks encoded into records and pushed to the store, alone or in batches."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from ..backends._protocol import (
    WHILE_UNFINISHED,
    Record,
)
from ..codec import check_depth, encode_for
from ..errors import (
    NotRegistered,
    NotSerializable,
    OutcomeUnknown,
    PayloadTooLarge,
)
from ..options import EMPTY
from ..task import Task, TaskStatus
from .state import DurableState, _payload_of, _unknown, _with_options


class Producer(DurableState):
    """Producing: tasks encoded into records and pushed to the store, alone or in batches."""

    def prepare(self, task: Task[Any], now: float | None = None) -> Record:
        """Check and encode a task for the backend, in the caller's thread.

        ``now`` (default: the clock) is the creation time; a batch shares one, so that the
        backend can store its records as one run.

        Raises:
            NotRegistered: the function is not a task registered with this queue.
            NotSerializable: the arguments or options cannot be stored.
            PayloadTooLarge: the encoded arguments exceed ``settings.max_payload``.
        """
        name, template = self._storable(task)
        if self.engine._h_submit:
            self.engine._call_hooks(self.engine._h_submit, task)
        options = None
        overrides = task._overrides
        if now is None:
            now = self.clock.now()
        expires_at = None if overrides is None else overrides.expiry(now)
        if overrides is not None and overrides is not template._overrides:
            options = overrides.to_stored(task._within, expires_at)
        elif (task._within is not None and task._within != template._within) or expires_at:
            within = task._within if task._within != template._within else None
            options = EMPTY.to_stored(within, expires_at)
        return self._record(task, name, now, options)

    def _storable(self, task: Task[Any]) -> tuple[str, Task[Any]]:
        """The registered name of a task's function and its template, if it can be stored."""
        name = self.registry.name_of(task.fn)
        if name is None:
            raise NotRegistered(
                f"{task.name} is not a registered task of durable queue {self.name!r}; "
                "declare it with @queue.task at module level and submit that"
            )
        entry = self.registry.get(name)
        assert entry is not None
        template: Task[Any] = entry._template
        if task._after is not None and task._after is not template._after:
            raise NotSerializable(
                "a durable task's after-callback cannot be stored; declare it on the task "
                "function (@queue.task(after=...)) so every worker has it"
            )
        if task._rate_limit is not template._rate_limit:
            raise ValueError(
                "a rate limit holds for every call of a task: declare it on the task function "
                "(@queue.task(rate_limit=...)), not on one call"
            )
        return name, template

    def _record(self, task: Task[Any], name: str, now: float, options: str | None) -> Record:
        """The record of a checked task: its encoded arguments, due time and keys."""
        payload = self._encode_args(task, name)
        run_at = now
        if task._not_before is not None:
            run_at = max(run_at, task._not_before)
        if task._delay is not None:
            run_at = max(run_at, now + task._delay)
        key = task._idempotency_key
        until = None
        if key is not None:
            until = WHILE_UNFINISHED if task._unique else now + self.settings.idempotency_window
        return Record(
            id=task.id,
            queue=self.name,
            name=name,
            payload=payload,
            run_at=run_at,
            created_at=now,
            status="pending" if run_at <= now else "scheduled",
            options=options,
            idempotency_key=key,
            idempotency_until=until,
            priority=task._priority,
            concurrency_key=task._concurrency_key,
        )

    def _encode_args(self, task: Task[Any], name: str) -> bytes:
        """A task's arguments as stored: within the depth and size limits, else refused."""
        check_depth(task.args)
        if task.kwargs:
            check_depth(task.kwargs.values())
        codec = self.codec  # JSON: the plain call, nothing more on the hot path
        payload = (
            encode_for(codec, _payload_of(task), name, task.id)  # signed with name and id
            if getattr(codec, "binds_task", False)
            else codec.encode(_payload_of(task))
        )
        if len(payload) > self.settings.max_payload:
            raise PayloadTooLarge(len(payload), self.settings.max_payload)
        return payload

    def enqueue(self, task: Task[Any]) -> None:
        """Encode, push and wait for the backend's confirmation (any thread but the loop's)."""
        fresh = task._id is None  # its id is drawn now: no need to check it is free
        record = self.prepare(task)
        task._engine = self.engine
        if self.engine.on_loop():  # e.g. a task submitting another: cannot block here
            self._push_soon(task, record, self._push_record(task, record, fresh))
            return
        try:
            if not self._push_here([task], [record], fresh):
                self.engine.run_on_home(self._push_record(task, record, fresh))
        except OutcomeUnknown as exc:
            _unknown(exc, [task])
            raise

    def enqueue_many(self, tasks: list[Task[Any]]) -> None:
        """Encode all, then push them in one atomic batch (one round trip)."""
        now = self.clock.now()
        fresh = all(task._id is None for task in tasks)
        records = [self.prepare(task, now) for task in tasks]
        for task in tasks:
            task._engine = self.engine
        try:
            if not self._push_here(tasks, records, fresh):
                self.engine.run_on_home(self._push_batch(tasks, records))
        except OutcomeUnknown as exc:
            _unknown(exc, tasks)
            raise

    def _push_here(self, tasks: list[Task[Any]], records: list[Record], fresh: bool) -> bool:
        """Push from the calling thread, without a hop to the home loop, if possible.

        Needs a backend with ``push_sync``; returns False (nothing done) without one, or when
        enqueue hooks must run on the loop. ``fresh``: every id was drawn at random just now,
        so the backend need not check that it is free. The handles are registered first, so
        that this process's worker, claiming a task before the call returns, runs the
        caller's handle.
        """
        push_sync = self.extras.push_sync
        if push_sync is None or self.engine._h_enqueue:
            return False
        if len(tasks) == 1:  # submit(): the same, without the loops
            task, record = tasks[0], records[0]
            status = task._status
            self._register(task, record)
            try:
                if push_sync(records, fresh=fresh):
                    return True
            except BaseException:
                self._unregister(tasks, records, [status])
                raise
            self._unregister(tasks, records, [status])
            return False
        previous = [task._status for task in tasks]
        for task, record in zip(tasks, records, strict=True):
            self._register(task, record)
        try:
            pushed = bool(push_sync(records, fresh=fresh))
        except BaseException:
            pushed = False
            raise
        finally:
            if not pushed:
                self._unregister(tasks, records, previous)
        return pushed

    def _register(self, task: Task[Any], record: Record) -> None:
        """Make ``task`` the handle of ``record`` here, before its push.

        This process's worker may claim the record before the push returns: it must run the
        caller's handle, not a copy.
        """
        if record.status == "scheduled":
            task._status = TaskStatus.SCHEDULED
            task._next_attempt = record.run_at
        else:
            task._status = TaskStatus.PENDING
        self.engine._by_id[record.id] = task

    def _unregister(
        self, tasks: list[Task[Any]], records: list[Record], previous: list[TaskStatus]
    ) -> None:
        """Undo ``_register`` for a push that stored nothing (or may not have)."""
        for task, record, status in zip(tasks, records, previous, strict=True):
            if self.engine._by_id.get(record.id) is task:
                del self.engine._by_id[record.id]
            task._status = status

    async def aenqueue_many(self, tasks: list[Task[Any]]) -> None:
        """``enqueue_many`` from async code."""
        now = self.clock.now()
        records = [self.prepare(task, now) for task in tasks]
        for task in tasks:
            task._engine = self.engine
        if self._push_here_on_loop():
            await self._push_batch(tasks, records)
        else:
            await self.engine.arun_on_home(self._push_batch(tasks, records))

    def enqueue_group(
        self, members: list[Task[Any]], callback: Task[Any], policy: str, check_every: float
    ) -> None:
        """Push a group's members and its held callback in one atomic write."""
        tasks, records = self._group_records(members, callback, policy, check_every)
        self.engine.run_on_home(self._push_batch(tasks, records))

    async def aenqueue_group(
        self, members: list[Task[Any]], callback: Task[Any], policy: str, check_every: float
    ) -> None:
        """``enqueue_group`` from async code."""
        tasks, records = self._group_records(members, callback, policy, check_every)
        await self.engine.arun_on_home(self._push_batch(tasks, records))

    def _group_records(
        self, members: list[Task[Any]], callback: Task[Any], policy: str, check_every: float
    ) -> tuple[list[Task[Any]], list[Record]]:
        """Encode a group: members name their callback, the callback waits with their ids."""
        for task in (*members, callback):
            task._frozen = True
        records = [self.prepare(task) for task in members]
        held = self.prepare(callback)
        for record in records:
            record.options = _with_options(record.options, group=held.id)
        held.options = _with_options(
            held.options,
            group_of=[r.id for r in records],
            group_policy=policy,
            group_check=check_every,
        )
        held.status = "scheduled"
        held.run_at = held.created_at + check_every
        tasks = [*members, callback]
        for task in tasks:
            task._engine = self.engine
        return tasks, [*records, held]

    async def _push_batch(
        self, tasks: list[Task[Any]], records: list[Record], fresh: bool = False
    ) -> None:
        previous = [task._status for task in tasks]
        for task, record in zip(tasks, records, strict=True):
            self._register(task, record)  # (before: this worker may claim it meanwhile)
        try:
            same = await self.backend.push(records, fresh=fresh)
        except OutcomeUnknown as exc:
            self._unregister(tasks, records, previous)
            _unknown(exc, tasks)
            raise
        except BaseException:
            self._unregister(tasks, records, previous)
            raise
        for task, record in zip(tasks, records, strict=True):
            self._pushed(task, record, same)

    async def _push_record(self, task: Task[Any], record: Record, fresh: bool = False) -> None:
        """``_push_batch`` of one task, without its lists and loops (``asubmit()``)."""
        status = task._status
        self._register(task, record)  # (before: this worker may claim it meanwhile)
        try:
            same = await self.backend.push((record,), fresh=fresh)
        except OutcomeUnknown as exc:
            self._unregister([task], [record], [status])
            _unknown(exc, [task])
            raise
        except BaseException:
            self._unregister([task], [record], [status])
            raise
        if same or self.engine._h_enqueue:
            self._pushed(task, record, same)

    def _pushed(self, task: Task[Any], record: Record, same: dict[str, str]) -> None:
        """A push stored ``record``, or found its idempotency key held (``same``)."""
        if same and record.id in same:  # its idempotency key is held: a handle on that task
            if self.engine._by_id.get(record.id) is task:
                del self.engine._by_id[record.id]  # (its own id was never stored)
            task._id = same[record.id]
            task._status = TaskStatus.PENDING  # until the stored record is read
            return
        if self.engine._h_enqueue:
            self.engine._call_hooks(self.engine._h_enqueue, task)

    async def aenqueue(self, task: Task[Any], timeout: float | None = None) -> None:
        """Encode and push from async code; returns once the backend confirmed.

        ``timeout`` (waiting for room) does not apply: a store has no bound.
        """
        fresh = task._id is None  # its id is drawn now: no need to check it is free
        record = self.prepare(task)
        task._engine = self.engine
        if self._push_here_on_loop():
            await self._push_record(task, record, fresh)
        else:
            await self.engine.arun_on_home(self._push_record(task, record, fresh))

    def _push_here_on_loop(self) -> bool:
        """Whether to push from the running loop (the store can: ``pushes_anywhere``).

        A queue whose home is another loop (a worker on its own thread, say) then costs the
        caller no hop to that loop and back, as ``submit()`` pushes from its own thread
        (``_push_here``); enqueue hooks still run on the home loop. A queue with no home
        yet takes the running loop, as ``arun_on_home`` does.
        """
        engine = self.engine
        anywhere = self.extras.pushes_anywhere
        if anywhere is None or engine._h_enqueue or not anywhere():
            return False
        engine.bind_running()
        return True

    def _push_soon(self, task: Task[Any], record: Record, push: Coroutine[Any, Any, None]) -> None:
        """Push from the loop in the background; the record counts as on its way meanwhile."""
        task_id = record.id
        self._pushing.add(task_id)
        pushing = asyncio.get_running_loop().create_task(push)
        self.engine._afters.add(pushing)

        def done(finished: asyncio.Task[None]) -> None:
            self.engine._afters.discard(finished)
            self._pushing.discard(task_id)

        pushing.add_done_callback(done)
