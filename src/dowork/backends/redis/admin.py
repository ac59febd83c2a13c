"""The ``StoreAdmin`` part of the protocol, what operators and handles ask: ``RedisAdmin``.

Records by id (draining inboxes for those not stored yet), cancelling one, a queue's counts
(the inbox counted too), the queues there are, a page of a queue's records (``list.lua``),
sending finished tasks back (``requeue.lua``), purging a queue in batches
(``purge_queue.lua``), and the live workers and per-minute outcome counts (written by
``beat.lua`` from ``RedisStore.beat``; read here with plain commands).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
import redis.exceptions

from .._protocol import Record, WorkerBeat, check_page, minute_of, status_filter
from .client import Connection
from .records import PURGE_BATCH, named, num, show_record, utf8

__all__ = ["RedisAdmin"]


class RedisAdmin(Connection):
    """``StoreAdmin`` on Redis: the calls of the command line, the dashboard and handles."""

    async def get(self, ids: Sequence[str]) -> list[Record]:
        """Fetch records by id (one pipelined round trip)."""
        if not ids:
            return []
        found = await self._get(ids)
        if len(found) < len(set(ids)):  # maybe in an inbox: drain them all, and look again
            for _ in range(1000):
                if not await self._script("drain", b""):
                    break
            have = {r.id for r in found}
            found += await self._get([i for i in ids if i not in have])
            order = {task_id: n for n, task_id in enumerate(ids)}
            found.sort(key=lambda r: order[r.id])
        return found

    async def _get(self, ids: Sequence[str]) -> list[Record]:
        link = self._link()
        with self._errors():
            hashes = await self._raw(
                link, *[("HGETALL", utf8(self._keys + "task:" + task_id)) for task_id in ids]
            )
            for answer in hashes:
                if isinstance(answer, Exception):
                    raise answer
        return [show_record(named(h, i)) for i, h in zip(ids, hashes, strict=True) if h]

    async def cancel(self, task_id: str, now: float) -> str:
        """Cancel a waiting task, or flag a running one for its worker."""
        answer = await self._script(
            "cancel", utf8(task_id), num(now), num(now + self.keep_finished)
        )
        return bytes(answer).decode()

    async def counts(self, queue: str) -> dict[str, int]:
        """Records per status (kept up to date by every script), plus the inbox, exactly.

        The inbox is counted, not drained (a drain moves 1,000 entries at most): its tasks
        are pending, those popped into ``taken`` running; wake-up tokens (only ever among its
        first 8 entries, see ``inbox.lua``) are not tasks. One transaction, so nothing moves
        between the reads; a Redis at maxmemory refuses transactions, so there the reads go
        one after the other (a drain between them may count a task twice, as nothing new can
        be pushed then).
        """
        link = self._link()
        q = f"{self._keys}q:{queue}:"
        inbox = utf8(q + "inbox")
        reads: tuple[tuple[str | bytes | int, ...], ...] = (
            ("HGETALL", utf8(q + "counts")),
            ("LLEN", inbox),
            ("LRANGE", inbox, 0, 7),
            ("LRANGE", utf8(q + "taken"), 0, -1),
        )
        with self._errors():
            answers = await self._raw(link, ("MULTI",), *reads, ("EXEC",))
            if any(isinstance(a, redis.exceptions.OutOfMemoryError) for a in answers):
                answers = await self._raw(link, *reads)  # the reads' own answers
                results = answers
            else:
                results = answers[-1]  # EXEC's
            for answer in answers:
                if isinstance(answer, Exception):
                    raise answer
        raw, inboxed, head, taken = results
        if not isinstance(raw, dict):  # RESP2: a flat list of fields and values
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        counts = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}
        tokens = sum(1 for e in head if bytes(e)[:1] == b"t")
        pending = int(inboxed) - tokens
        if pending:
            counts["pending"] = counts.get("pending", 0) + pending
        running = sum(1 for e in taken if bytes(e)[:1] != b"t")
        if running:
            counts["running"] = counts.get("running", 0) + running
        return {status: n for status, n in counts.items() if n > 0}

    async def queues(self) -> list[str]:
        """Names of the queues with records, sorted (the ``P:queues`` set)."""
        names = await self._one("SMEMBERS", utf8(f"{self._keys}queues"))
        return sorted(
            n.decode("utf-8", "surrogatepass") if isinstance(n, bytes) else n for n in names
        )

    async def requeue(self, ids: Sequence[str], now: float) -> list[str]:
        """Send failed, cancelled and dead records back to pending in one script."""
        unique = [utf8(i) for i in dict.fromkeys(ids)]
        if not unique:
            return []
        flat = await self._script("requeue", num(now), len(unique), *unique)
        done = [bytes(i).decode("utf-8", "surrogatepass") for i in flat]
        self._wakeups.notify(set(done[1::2]))  # other processes wake on the script's tokens
        return done[::2]

    async def purge(self, queue: str, statuses: Sequence[str] | None = None) -> int:
        """Delete the queue's records in ``statuses`` (all but running ones for None).

        Runs a batch per script call, so a large queue never blocks Redis for long.
        """
        wanted = status_filter(statuses)
        if wanted == ():
            return 0
        total = 0
        while True:
            deleted = int(
                await self._script("purge_queue", utf8(queue), PURGE_BATCH, *(wanted or ()))
            )
            total += deleted
            if deleted < PURGE_BATCH:
                return total

    async def workers(self, now: float) -> list[WorkerBeat]:
        """The workers whose beat has not expired (one round trip)."""
        link = self._link()
        with self._errors():
            async with link.client.pipeline(transaction=False) as pipe:
                pipe.zrangebyscore(utf8(f"{self._keys}workers:alive"), f"({num(now)}", "+inf")
                pipe.hgetall(utf8(f"{self._keys}workers"))
                alive, beats = await pipe.execute()
        return [WorkerBeat.from_json(beats[i]) for i in sorted(alive) if i in beats]

    async def stats(self, queue: str, since: float) -> dict[int, dict[str, int]]:
        """Per-minute outcome counts of the queue from ``since`` on."""
        link = self._link()
        with self._errors():
            raw = await link.client.hgetall(utf8(f"{self._keys}q:{queue}:stats"))
        first = minute_of(since)
        out: dict[int, dict[str, int]] = {}
        for field_, n in raw.items():
            text = field_.decode() if isinstance(field_, bytes) else field_
            minute, _, outcome = text.partition(":")
            if int(minute) >= first:
                out.setdefault(int(minute), {})[outcome] = int(n)
        return dict(sorted(out.items()))

    # ``list`` comes last: a method of that name hides the builtin in annotations below it.
    async def list(
        self,
        queue: str,
        statuses: Sequence[str] | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[Record]:
        """One page of the queue's records by ``created_at``, read from its listing zsets."""
        check_page(limit, offset)
        wanted = status_filter(statuses)
        if limit == 0 or wanted == ():
            return []
        rows = await self._script(
            "list", utf8(queue), offset, limit, "1" if newest_first else "", *(wanted or ())
        )
        return [show_record(row) for row in rows]
