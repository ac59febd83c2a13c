"""Storing tasks: ``push`` from an event loop and ``push_sync`` from any thread.

A plain task due now (``submit()``) goes to its queue's inbox with two plain commands, no
script; any other push is one ``push.lua`` call (records that share all but id and payload
travel as one run), or a ``MULTI`` of ``check.lua`` and ``push.lua`` calls for a large one,
or ``push_keyed.lua`` for records with idempotency keys. A push whose reply was lost raises
``OutcomeUnknown``: the task may be stored, and pushing it again under its id is safe.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import redis
import redis.exceptions
from redis.commands.core import Script

from ...errors import BackendUnavailable, DuplicateTask, OutcomeUnknown
from .._protocol import Record
from .client import Connection
from .records import check_push, inbox_entry, keyed_args, push_args, utf8
from .urls import redact
from .wire import (
    Command,
    Unanswered,
    commands_sync,
    described,
    evalsha_sync,
    transaction_sync,
)

__all__ = ["Producer"]

#: Records per script call of a large push (one transaction of several calls).
_PUSH_CHUNK = 1000


class Producer(Connection):
    """The producer's part of ``RedisBackend``: storing new tasks."""

    async def push(self, records: Sequence[Record], *, fresh: bool = False) -> dict[str, str]:
        """Store the records in one transaction: all of them, or none if an id is taken.

        Records whose idempotency key is held are left out (see ``Store.push``). A
        ``fresh`` plain task due now goes to its queue's inbox, as in ``push_sync``.
        """
        if not records:
            return {}
        inboxed = self._to_inbox(records) if fresh else None
        if inboxed is not None:  # asubmit(): two plain commands, no script
            try:  # (no context manager on the way: the hot path)
                for answer in await self._inbox_trip(inboxed):
                    if isinstance(answer, Exception):
                        raise answer
            except (redis.exceptions.RedisError, OSError):
                with self._pushing(records), self._errors():
                    raise
            return {}
        with self._pushing(records):
            return await self._push(records, fresh)

    @contextlib.contextmanager
    def _pushing(self, records: Sequence[Record]) -> Iterator[None]:
        """Report a push whose request went out but whose reply was lost as ``OutcomeUnknown``."""
        try:
            yield
        except BackendUnavailable as exc:
            if not isinstance(exc.__cause__, Unanswered):
                raise  # nothing was sent: nothing was stored
            cause = exc.__cause__.__cause__ or exc.__cause__  # (what cut the connection)
            ids = tuple(r.id for r in records)
            shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            raise OutcomeUnknown(
                f"{redact(self.url)}: the reply to a push of task(s) {shown} was lost "
                f"({described(cause)}): the outcome is unknown, they may be stored. "
                "Retrying with the same task id is safe (the id is the idempotency key: a "
                "stored task is refused as DuplicateTask, never run twice)",
                ids,
            ) from exc.__cause__
        except redis.exceptions.RedisError as exc:  # pipelines of large pushes
            with self._errors():
                raise exc from None

    async def _drain_for(self, records: Sequence[Record]) -> None:
        """Drain the inboxes of the records' queues before a push that checks its ids.

        A task id submitted through an inbox (a ``submit()`` whose reply was lost, say) is
        then a stored record, so the push refuses it as a duplicate instead of storing it
        a second time.
        """
        for queue in dict.fromkeys(r.queue for r in records):
            await self._script("drain", utf8(queue))

    async def _push(self, records: Sequence[Record], fresh: bool) -> dict[str, str]:
        if not fresh:
            await self._drain_for(records)
        if any(r.idempotency_key is not None for r in records):
            return await self._push_keyed(records)
        link = self._link()
        if len(records) <= _PUSH_CHUNK:
            answer = await self._script("push", *push_args(records, b"1"))
            check_push(answer)
        else:
            with self._errors():
                calls, flag = self._push_calls(records)
                async with link.client.pipeline(transaction=True) as pipe:
                    for name, args in calls:
                        await link.scripts[name](args=args, client=pipe)
                    pipe.delete(flag)
                    answers = await pipe.execute()
            check_push(answers[0])
        self._wakeups.notify({r.queue for r in records})
        return {}

    async def _push_keyed(self, records: Sequence[Record]) -> dict[str, str]:
        """Push records of which some carry idempotency keys, in one script."""
        answer = await self._script("push_keyed", *keyed_args(records))
        if answer[0] != b"ok":
            task_id = answer[1].decode("utf-8", "surrogatepass")
            raise DuplicateTask(f"a task with id {task_id!r} already exists (nothing written)")
        held = [bytes(i).decode("utf-8", "surrogatepass") for i in answer[1:]]
        same = dict(zip(held[::2], held[1::2], strict=True))
        self._wakeups.notify({r.queue for r in records if r.id not in same})
        return same

    async def _inbox_trip(self, commands: tuple[Command, Command]) -> list[Any]:
        """The inbox push's round trip, on a connection of the link's own (see ``_raw``)."""
        return await self._raw(self._link(), *commands)

    def pushes_anywhere(self) -> bool:
        """``push`` runs on any event loop (each has a link of its own).

        Not with a caller's ``client``, which serves one loop only.
        """
        return self._client is None

    def push_sync(self, records: Sequence[Record], *, fresh: bool = False) -> bool:
        """``push`` from the calling thread (blocking, thread-safe), with no event loop.

        One round trip on a blocking client. ``fresh`` says every id was just drawn at
        random (128 bits), so the check for ids already taken is skipped. Returns False,
        having done nothing, for a backend built on a caller's ``client`` (an asyncio
        client), or for records with idempotency keys: use ``push`` then.
        """
        if self._client is not None or any(r.idempotency_key is not None for r in records):
            return False
        if not records:
            return True
        client, scripts = self._sync_client()
        try:
            if not self._sync_policy_read:
                self._probe_sync(client)
            if not fresh:
                self._drain_sync(client, scripts, records)
            inboxed = self._to_inbox(records) if fresh else None
            if inboxed is not None:  # submit(): two plain commands, no script
                commands_sync(client, *inboxed)
                return True
            if len(records) <= _PUSH_CHUNK:
                script = scripts["push"]
                args = [self._keys, *push_args(records, b"" if fresh else b"1")]
                try:
                    answer = evalsha_sync(client, script.sha, args)
                except redis.exceptions.NoScriptError:
                    answer = script(args=args)  # loads it, then runs it
            else:
                calls, flag = self._push_calls(records, fresh)
                try:
                    answer = transaction_sync(client, scripts, calls, flag)
                except redis.exceptions.NoScriptError:  # Redis restarted: load, then again
                    for script in scripts.values():
                        script.sha = client.script_load(script.script)
                    answer = transaction_sync(client, scripts, calls, flag)
        except (redis.exceptions.RedisError, OSError):  # (no context manager: hot path)
            with self._pushing(records), self._errors():
                raise  # (as it is: its cause is what OutcomeUnknown says)
        check_push(answer)  # other processes wake on the script's tokens, and so do we
        return True

    def _drain_sync(
        self, client: redis.Redis, scripts: dict[str, Script], records: Sequence[Record]
    ) -> None:
        """``_drain_for`` from a thread."""
        for queue in dict.fromkeys(r.queue for r in records):
            drain: list[str | bytes | int] = [self._keys, utf8(queue)]
            try:
                evalsha_sync(client, scripts["drain"].sha, drain)
            except redis.exceptions.NoScriptError:
                scripts["drain"](args=drain)

    def _to_inbox(self, records: Sequence[Record]) -> tuple[Command, Command] | None:
        """The commands pushing one plain task due now to its queue's inbox, or None.

        None: the records must go through a script (see ``inbox_entry`` and ``inbox.lua``).
        """
        if len(records) != 1 or records[0].idempotency_key is not None:
            return None
        entry = inbox_entry(records[0])
        if entry is None:
            return None
        queue = utf8(records[0].queue)
        keys = utf8(self._keys)
        return ("RPUSH", keys + b"q:" + queue + b":inbox", entry), ("SADD", keys + b"queues", queue)

    def _push_calls(
        self, records: Sequence[Record], fresh: bool = False
    ) -> tuple[list[tuple[str, list[str | bytes | int]]], bytes]:
        """The script calls of a large push (one transaction) and the flag key to delete.

        Unless the ids are ``fresh``, every id is checked first (none taken sets the flag
        key), then one ``push.lua`` per chunk writes only if the flag is set, so that a check
        that did not run (NOSCRIPT) writes nothing either. The first answer says whether the
        push happened.
        """
        keys = self._keys
        calls: list[tuple[str, list[str | bytes | int]]] = []
        flag = b""
        if not fresh:
            flag = utf8(f"{keys}abort:{uuid.uuid4().hex}")
            calls.append(("check", [keys, flag, *(utf8(r.id) for r in records)]))
        for start in range(0, len(records), _PUSH_CHUNK):
            chunk = records[start : start + _PUSH_CHUNK]
            calls.append(("push", [keys, *push_args(chunk, flag)]))
        return calls, flag
