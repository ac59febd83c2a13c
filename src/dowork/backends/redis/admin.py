"""What operators (the command line, the dashboard) ask of the store: ``Admin``.

Listing a queue a page at a time (``list.lua``), the queues there are, sending finished
tasks back (``requeue.lua``), purging a queue in batches (``purge_queue.lua``), and the
workers' beats and per-minute outcome counts (``beat.lua`` writes them; reads are plain).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .._protocol import STATS_MINUTES, Record, WorkerBeat, check_page, minute_of, status_filter
from .client import Connection
from .records import PURGE_BATCH, num, show_record, utf8

__all__ = ["Admin"]


class Admin(Connection):
    """The operator's part of ``RedisBackend``: listings, requeues, purges, beats and stats."""

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

    async def beat(
        self,
        worker: WorkerBeat,
        now: float,
        ttl: float,
        finished: Mapping[int, Mapping[str, int]] | None = None,
    ) -> None:
        """Store the worker's beat and add its outcome counts, in one script."""
        args: list[str | bytes | int] = [
            utf8(worker.id),
            utf8(worker.queue),
            utf8(worker.to_json()),
            num(now),
            num(now + ttl) if ttl > 0 else "",
            minute_of(now) - STATS_MINUTES * 60,
        ]
        for minute, by_outcome in (finished or {}).items():
            for outcome, n in by_outcome.items():
                args += [f"{int(minute)}:{outcome}", n]
        await self._script("beat", *args)

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
