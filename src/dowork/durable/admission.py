"""Admitting a claimed record: decoding and checking it, opening groups, burying bad ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..backends._protocol import (
    Outcome,
    Record,
    Settlement,
)
from ..backends.flow import rank
from ..codec import check_depth, decode_for
from ..errors import (
    BackendError,
    DecodeError,
    PayloadTooLarge,
    TaskFailed,
    TooDeeplyNested,
)
from ..group import group_error
from ..options import Options
from ..task import Task, TaskStatus

if TYPE_CHECKING:
    pass


from .state import _FINISHED, _NO_OPTIONS, DurableState, _placeholder, log

#: (An enum's members read from the class cost a Python ``__getattr__`` hook each, 3.11.)
_RESERVED = TaskStatus.RESERVED


class Admission(DurableState):
    """Admitting a claimed record: decoding and checking it, opening groups, burying bad ones."""

    def _unreadable(self, record: Record, exc: BaseException) -> None:
        """Settle a claimed record that could not be started: dead-letter it (``malformed``).

        A store error while a group's callback reads its members hands the record back
        instead. A record already in line to run (or settled) is left alone.
        """
        task = self.engine._by_id.get(record.id)
        if task is not None and task._deliveries == record.attempts and not task._status.final:
            return  # taken by this claim: in line or running, settled as any other
        token = self._claimed.setdefault(record.id, record.attempts)
        if isinstance(exc, BackendError):
            del self._claimed[record.id]
            log.warning("queue %s: task %s handed back (%r)", self.name, record.id, exc)
            now = self.clock.now()
            run_at = now + self.settings.maintenance
            self._settle_out(Settlement(record.id, token, Outcome.RETRY, now, run_at=run_at))
            return
        self._bury(record, "malformed", f"{type(exc).__name__}: {exc}")

    async def _open_group(self, record: Record) -> None:
        """Run a group's callback with its members' results (or wait, or fail it unrun).

        It waits longer if a member has not finished, and fails unrun under
        ``on_failure="fail"`` if one did not succeed.
        """
        try:
            assert record.options is not None
            options = json.loads(record.options)
            members = [str(m) for m in options["group_of"]]
            policy = options.get("group_policy", "fail")
            check = float(options.get("group_check", 60.0))
        except (AssertionError, KeyError, TypeError, ValueError):
            self._take(record)  # dead-letters it as undecodable, or runs it plainly
            return
        states = {r.id: r for r in await self.backend.get(members)}
        now = self.clock.now()
        if any(r.status not in _FINISHED for r in states.values()):
            self._settle_out(
                Settlement(record.id, record.attempts, Outcome.RETRY, now, run_at=now + check)
            )
            return
        results: list[Any] = []
        failures: list[tuple[str, BaseException]] = []
        for member in members:
            state = states.get(member)  # gone: finished and not kept
            if state is not None and state.status != "succeeded":
                error = TaskFailed(state.error or state.status, state.status, state.reason)
                results.append(error)
                failures.append((member, error))
                continue
            try:
                value = (
                    None
                    if state is None or state.result is None
                    else self.codec.decode(state.result)
                )
            except DecodeError as exc:
                results.append(exc)
                failures.append((member, exc))
                continue
            results.append(value)
        if failures and policy == "fail":
            task = self._take(record, queued=False)
            if task is not None:
                self.finish(task, TaskStatus.FAILED, None, group_error(len(members), failures))
            return
        self._take(record, lead=results)

    def _start(
        self, record: Record, lead: list[Any] | None, queued: bool, first: bool
    ) -> Task[Any] | None:
        """``_take`` without its guard: check and decode everything, then change state."""
        entry = self.registry.get(record.name)
        if entry is None:
            self._dead(record, "unknown_task", f"no task named {record.name!r} is registered")
            return None
        decoded = self._read(record)
        if decoded is None:
            return None
        args, kwargs, headers, stored = decoded
        options, within, expires_at = Options.from_stored(stored) if stored else _NO_OPTIONS
        if expires_at is not None and self._expired(record, expires_at):
            return None
        if record.crashes >= self._alone_from:
            self._suspects.add(record.id)
        known = options if options is not None else entry._template._overrides
        default = self.engine.default_policy
        policy = default if known is None else known.retry_policy(default)
        order = rank(record.run_at, record.priority, self.engine.priority_aging)
        task = self.engine._by_id.get(record.id)
        if task is None or task._status.final:
            if kwargs and not all(isinstance(key, str) for key in kwargs):
                raise TypeError("keywords must be strings")  # (as entry.task(**kwargs) would)
            task = Task.__new__(Task)  # (entry.task(*args, **kwargs), without packing them)
            call = (lead, *args) if lead is not None else tuple(args)
            task._init(entry, call, kwargs, entry._dowork_is_async, entry._template)
            task._id = record.id
        elif lead is not None:
            task.args = (lead, *args)
            task.kwargs = kwargs
        task._frozen, task._engine = True, self.engine
        if headers:
            task._headers = headers
        task._attempts, task._deliveries = record.started - record.crashes, record.attempts
        task._status = _RESERVED  # held here, not started
        task._priority, task._concurrency_key = record.priority, record.concurrency_key
        task._rank = order
        if within is not None:
            task._within = within
        if options is not None:
            task._overrides = options
        task._policy = policy
        self.engine._by_id[record.id] = task
        self.engine._unfinished += 1
        if queued:  # ``first``: at the head of the line
            ready = self.engine._ready
            (ready.appendleft if first else ready.append)(task)
        return task

    def _expired(self, record: Record, expires_at: float) -> bool:
        """Whether a claimed task's ``expires`` time passed; if so it is dead-lettered."""
        if self.clock.now() < expires_at:
            return False
        when = datetime.fromtimestamp(expires_at, UTC).isoformat()
        self._dead(record, "expired", f"not started by {when}")
        return True

    def _read(
        self, record: Record
    ) -> tuple[list[Any], dict[str, Any], dict[str, str] | None, dict[str, Any] | None] | None:
        """A record's arguments, headers and options; group bookkeeping is taken out.

        None once a record it cannot read is dead-lettered (with why). The decoding limits of
        ``submit()`` hold here too: a payload over ``max_payload`` bytes is ``PayloadTooLarge``,
        arguments nested over ``MAX_DEPTH`` levels ``TooDeeplyNested`` (deeper still, the
        decoder's ``RecursionError``); both are ``malformed``.
        """
        try:
            codec = self.codec
            data = record.payload
            if len(data) > self.settings.max_payload:
                raise PayloadTooLarge(len(data), self.settings.max_payload)
            if self._binds:
                payload = decode_for(codec, data, record.name, record.id)
            else:
                payload = codec.decode(data)
            args, kwargs, headers = payload["a"], payload["k"], payload.get("h")
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise TypeError("payload must hold a list 'a' and a dict 'k'")
            if headers is not None and not isinstance(headers, dict):
                raise TypeError("payload headers 'h' must be a dict")
            check_depth(args)
            if kwargs:
                check_depth(kwargs.values())
            if headers:
                check_depth(headers.values())
            options = record.options
            return args, kwargs, headers, self._overrides(record.id, options) if options else None
        except DecodeError as exc:
            self._bury(record, exc.reason, f"{type(exc).__name__}: {exc}")
        except (TooDeeplyNested, PayloadTooLarge, RecursionError) as exc:
            self._bury(record, "malformed", f"{type(exc).__name__}: {exc}")
        except (KeyError, TypeError, ValueError) as exc:
            self._bury(record, "undecodable", f"{type(exc).__name__}: {exc}")
        return None

    def _overrides(self, task_id: str, options: str) -> dict[str, Any] | None:
        """A record's stored options, its group's bookkeeping taken out (``_read``'s part)."""
        overrides = json.loads(options)
        if overrides is not None and not isinstance(overrides, dict):
            raise TypeError("options must be a JSON object")
        if overrides:
            group = overrides.pop("group", None)
            if group is not None:
                self._group_of[task_id] = str(group)
            for key in ("group_of", "group_policy", "group_check"):
                overrides.pop(key, None)
        return overrides

    def _bury(self, record: Record, reason: str, error: str) -> None:
        """Dead-letter a claimed record that cannot be read, and tell the ``on_buried`` hooks."""
        self._dead(record, reason, error)
        self._buried(record.id, reason)

    def _tell_buried(self) -> None:
        """Tell the ``on_buried`` hooks of the records the store dead-lettered unread.

        The store adds them to ``_burials`` (from its own thread, for SQLite) as its calls
        write them; each is taken out once, here.
        """
        burials = self._burials
        found = burials[:]
        del burials[: len(found)]
        for task_id, reason in found:
            self._buried(task_id, reason)

    def _buried(self, task_id: str, reason: str) -> None:
        """Tell the ``on_buried`` hooks that a record was dead-lettered unread."""
        for hook in self.engine._hooks["on_buried"]:
            self.engine._call_hook(hook, self.name, task_id, reason)

    def _dead(self, record: Record, reason: str, error: str) -> None:
        log.error("queue %s: task %s dead-lettered (%s): %s", self.name, record.id, reason, error)
        token = self._claimed.pop(record.id)
        failure_hooks = self.engine._hooks["on_failure"]
        if failure_hooks:  # hooks (metrics) see dead letters too, through a stand-in task
            stand_in = Task._fast(_placeholder(record.name), (), {}, False)
            stand_in._id = record.id
            stand_in._engine = self.engine
            stand_in._status = TaskStatus.DEAD
            stand_in._attempts = record.started - record.crashes
            dead = TaskFailed(error, "dead", reason)
            stand_in._error = dead
            for hook in failure_hooks:
                self.engine._call_hook(hook, stand_in, dead)
        self._settle_out(
            Settlement(record.id, token, Outcome.DEAD, self.clock.now(), error=error, reason=reason)
        )
