"""Leasing tasks to a worker: ``claim``, and ``wait_claim`` for an idle one.

Every claim is one ``claim.lua`` call (the inbox drained, flow control applied, the records
leased and read back in one step). An idle worker with no flow control pops its queue's inbox
instead and starts the task it gets at once, before any script runs: ``take.lua`` records its
lease in the background, and every later call about that task waits for it (``_taken``).
Records a claim gave out that Python cannot read are dead-lettered (``bury.lua``). The records
either buries go to the request's ``buried`` list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import redis
import redis.exceptions

from ...errors import BackendError
from .._protocol import Outcome, Record
from ..store import ClaimRequest
from .client import Connection, Link
from .records import decode_record, from_inbox, num, rate_args, utf8

__all__ = ["Fetcher", "id_of", "split_claimed"]

log = logging.getLogger("dowork")
#: A claimed record Python cannot read, to be dead-lettered: raw id, lease token, why.
Unfit = tuple[bytes, int, str]


def split_claimed(rows: Sequence[Any], queue: str, owner: str) -> tuple[list[Record], list[Unfit]]:
    """The records of a ``claim.lua`` answer, and those Python cannot read (for ``bury``).

    The answer holds now and lease_until used, the records the script dead-lettered, then the
    claimed records: a record as pushed as its 6 values id, name, payload, run_at, created_at,
    options (None: none) in the answer itself, any other as its hash (HGETALL), a list. One
    ``decode_record`` cannot read (text that is not UTF-8: the checks Lua leaves to Python)
    goes to the second list. The payload and options are the worker's to check (it
    dead-letters what it cannot decode), as on every backend.
    """
    now, lease_until = float(rows[0]), float(rows[1])
    claimed = []
    unfit: list[Unfit] = []
    i, end = 3, len(rows)
    while i < end:
        row = rows[i]
        if type(row) is not list:  # (a record as pushed: the common case, leased as built)
            options = rows[i + 5]
            try:
                claimed.append(
                    Record(  # (positional up to updated_at: keywords cost a dict a call)
                        row.decode("utf-8", "surrogatepass"), queue,
                        rows[i + 1].decode("utf-8", "surrogatepass"), rows[i + 2],
                        float(rows[i + 3]), float(rows[i + 4]), "reserved",
                        None if options is None else options.decode("utf-8", "surrogatepass"),
                        1, lease_until, owner, 0, False, None, None, None, now,
                    )
                )  # fmt: skip
            except ValueError as exc:  # (UnicodeDecodeError is a ValueError)
                unfit.append((bytes(row), 1, f"{type(exc).__name__}: {exc}"[:200]))
            i += 6
            continue
        i += 1
        h = dict(zip(row[::2], row[1::2], strict=True))
        try:
            record = decode_record(h)
        except (KeyError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"[:200]
            unfit.append((bytes(h[b"id"]), int(h.get(b"attempts", b"0")) + 1, why))
            continue
        record.status = "reserved"
        record.attempts += 1
        record.lease_until = lease_until
        record.owner = owner
        record.updated_at = now
        record.slot = None
        claimed.append(record)
    return claimed, unfit


def id_of(raw: bytes) -> str:
    """A task id as Redis answered it: as ``utf8`` wrote it, or escaped if it is not UTF-8."""
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:  # (a record written by hand)
        return raw.decode("utf-8", "backslashreplace")


class Fetcher(Connection):
    """The fetching part of ``RedisBackend``: claims, the inbox pop, recorded starts."""

    async def claim(self, request: ClaimRequest) -> list[Record]:
        """Lease up to ``limit`` due records (fewer under ``max_running``) in one script."""
        if request.limit <= 0:
            return []
        await self.check_worker()
        return await self._claim(request)

    async def _claim(self, c: ClaimRequest, popped: bytes = b"") -> list[Record]:
        """``claim``, giving back an entry the caller ``popped`` from the inbox (see claim.lua)."""
        rows = await self._script("claim", *self._claim_args(c, popped))
        return await self._claimed(rows, c)

    def _claim_args(self, c: ClaimRequest, popped: bytes = b"") -> list[str | bytes | int]:
        """The ``claim.lua`` arguments of a request."""
        return [
            utf8(c.queue), num(c.now), c.limit, num(c.now + c.lease), utf8(c.owner),
            "" if c.max_running is None else str(c.max_running),
            "" if c.alone_from is None else str(c.alone_from),
            popped, num(c.lease), num(c.aging), "" if c.per_key is None else str(c.per_key),
            self._keep_dead(), *rate_args(c.rates),
        ]  # fmt: skip

    async def _pop(self, link: Link, c: ClaimRequest, block: str) -> list[Record]:
        """``wait_claim`` of a worker with no flow control: pop the inbox, start what it gives.

        The pop goes with ``peek.lua`` in one round trip (a second one if Redis had not loaded
        it yet): an entry whose id is in use (or twice in ``taken``) is given back to a claim
        instead, which dead-letters it; one stored by a drain meanwhile starts only once
        ``take.lua`` says so.
        """
        q = f"{self._keys}q:{c.queue}:"
        inbox = utf8(q + "inbox")
        began = link.loop.time()
        peek = link.scripts["peek"]
        with self._errors():
            popped, peeked = await self._raw(
                link,
                ("BLMOVE", inbox, utf8(q + "taken"), "LEFT", "RIGHT", block),
                ("EVALSHA", peek.sha, 0, self._keys, utf8(c.queue)),  # (see peek.lua)
            )
            if isinstance(popped, redis.exceptions.OutOfMemoryError):
                popped = peeked = b"t"  # Redis is full: a claim drains it (see may_fill.lua)
            elif isinstance(popped, Exception):
                raise popped
            if isinstance(peeked, redis.exceptions.NoScriptError):  # not loaded yet
                peeked = None
            elif isinstance(peeked, Exception):
                raise peeked
        if popped is None:
            return []
        record = from_inbox(popped, c.queue)
        if record is not None and peeked is None:
            # Peek again (loading the script): a drain may have stored the entry meanwhile,
            # which only take.lua takes over (a claim given it back would find it gone).
            peeked = await self._script("peek", utf8(c.queue))
        if record is None or utf8(record.id) in peeked[1]:
            # A wake-up token, garbage or an id in use: give it back to a claim, which checks
            # everything.
            return await self._claim(c, popped)
        now = c.now + link.loop.time() - began  # the blocking wait
        record.status, record.attempts, record.owner = "running", 1, c.owner
        record.lease_until, record.updated_at = now + c.lease, now
        if utf8(record.id) not in peeked[0]:  # stored by a drain meanwhile: ask first
            if await self._take(record, popped) == 0:
                return []
            return [record]
        self._start_take(link, record, popped)
        return [record]

    async def wait_claim(self, request: ClaimRequest, timeout: float) -> list[Record]:
        """``wait`` then ``claim``: what an idle worker does.

        The worker has a free slot. With no flow control to apply (no ``max_running``, rate
        limits or ``per_key``) it pops the queue's inbox into ``taken`` and, when that gives
        it a task pushed by ``submit()``, returns it at once, started before any script ran:
        ``take`` records its lease in the background (the record running), and every later
        call about that task waits for it. A wake-up token it pops instead is given back to
        a claim. With flow control, it waits for the inbox to hold something (popping it
        back in place) and sends the claim in the same round trip, so that it runs in Redis
        the moment a push comes.
        Either way the drained tokens' and tasks' times serve as ``now`` when later than
        the ``now`` given (taken before the wait); leases run from that time.
        """
        c = request
        if timeout <= 0 or c.limit <= 0:
            return await self.claim(c)
        await self.check_worker()
        link = self._link()
        inbox = utf8(f"{self._keys}q:{c.queue}:inbox")
        block = num(max(0.01, min(timeout, self.ping_interval, self.socket_timeout / 2)))
        if c.max_running is None and not c.rates and c.per_key is None:
            return await self._pop(link, c, block)
        script = link.scripts["claim"]
        claim = ("EVALSHA", script.sha, 0, self._keys, *self._claim_args(c))
        with self._errors():
            wait = ("BLMOVE", inbox, inbox, "LEFT", "LEFT", block)  # (moves nothing)
            popped, rows = await self._raw(link, wait, claim)
            if isinstance(rows, redis.exceptions.NoScriptError):  # Redis restarted
                await link.client.script_load(script.script)
                return []
            for answer in (popped, rows):
                if isinstance(answer, Exception):
                    raise answer
        return await self._claimed(rows, c)

    def _keep_dead(self) -> str:
        """Seconds a dead letter is kept, as the claim script takes it (see ``bury``)."""
        return num(self._retention(Outcome.DEAD, None))

    async def _claimed(self, rows: Sequence[Any], c: ClaimRequest) -> list[Record]:
        """The records of a claim's answer; those Python cannot read are dead-lettered.

        The records the claim script buried, and those buried here, go to ``c.buried``.
        """
        claimed, unfit = split_claimed(rows, c.queue, c.owner)
        buried = rows[2]
        for task_id, why in zip(buried[::2], buried[1::2], strict=True):
            shown, reason = (bytes(b).decode("utf-8", "backslashreplace") for b in (task_id, why))
            log.error("%r: task %r dead-lettered (malformed): %s", self, shown, reason)
        if buried and c.buried is not None:
            c.buried.extend((id_of(task_id), "malformed") for task_id in buried[::2])
        if unfit:
            now = float(rows[0])
            args: list[str | bytes | int] = [num(now), num(now + float(self._keep_dead()))]
            args.append(len(unfit))
            for task_id, token, why in unfit:
                args += [task_id, token, utf8(why)]
            done = {bytes(i) for i in await self._script("bury", *args)}
            for task_id, _, why in unfit:
                shown = task_id.decode("utf-8", "backslashreplace")
                log.error("%r: task %r dead-lettered (malformed): %s", self, shown, why)
                if task_id in done and c.buried is not None:
                    c.buried.append((id_of(task_id), "malformed"))
        return claimed

    def _start_take(self, link: Link, record: Record, entry: bytes) -> None:
        """Record in the background that this worker runs a task it popped (see ``take.lua``)."""

        async def take() -> None:
            try:
                code = await self._take(record, entry)
                if code == 0:  # its settlement will be refused, like a lost lease's
                    log.warning("%r: task %s is not this worker's to run any more", self, record.id)
            except BackendError as exc:  # Redis away: the drain and the reaper take over
                log.warning("%r: could not record the start of task %s (%r)", self, record.id, exc)
            finally:
                self._taking.pop(record.id, None)

        self._taking[record.id] = link.loop.create_task(take())

    async def _take(self, record: Record, entry: bytes) -> int:
        """Record that this worker runs a task it popped (``take.lua``); 0 if it must not."""
        assert record.lease_until is not None
        code = await self._script(
            "take", utf8(record.queue), entry, utf8(record.owner or ""),
            num(record.lease_until), num(record.updated_at),
        )  # fmt: skip
        return int(code)

    async def _taken(self, ids: Sequence[str]) -> None:
        """Wait until the starts of these tasks are recorded (see ``_start_take``)."""
        if not self._taking:
            return
        loop = asyncio.get_running_loop()
        taking = (self._taking.get(i) for i in ids)
        pending = [t for t in taking if t is not None and t.get_loop() is loop]
        if pending:
            await asyncio.wait(pending)
