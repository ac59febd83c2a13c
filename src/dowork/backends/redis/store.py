"""The worker's side of the store protocol, beyond pushes and claims: ``RedisStore``.

Settlements, heartbeats, progress and releases of leased tasks (each a batch in one script),
upkeep (the worker's beat, the reaper, which also notices a wiped Redis and relieves a full
one, and purging finished records), a queue's next due time and waiting for work (``wait``,
``wake``).
``RedisStore`` puts the worker's parts together: ``Producer`` (pushes) and ``Fetcher`` (claims);
what ``Backend`` takes from ``StoreAdmin`` is in ``admin``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import redis
import redis.exceptions

from ...errors import BackendError, BackendFull, BackendUnavailable
from .._history import took_parts
from .._protocol import (
    STATS_MINUTES,
    Outcome,
    Settlement,
    WorkerBeat,
    attempt_line,
    minute_of,
    retention,
)
from ..extras import (
    SupportsCheckWorker,
    SupportsPermitEviction,
    SupportsPushAnywhere,
    SupportsPushSync,
    SupportsResets,
    SupportsServerTime,
    SupportsWaitClaim,
    SupportsWake,
)
from ..store import Burials, Upkeep, Upkept
from .claim import Fetcher, id_of
from .history import TOOK_LINE, history_arg
from .push import Producer
from .records import PURGE_BATCH, from_inbox, head_score, num, opt, utf8

__all__ = ["RedisStore"]

log = logging.getLogger("dowork")
_FINAL = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.FAILED: "failed",
    Outcome.CANCELLED: "cancelled",
    Outcome.DEAD: "dead",
}
#: A settlement's kind in ``settle.lua``: the status, ``+`` if the function ran, ``*`` if the
#: rest of the arguments follow (always for a retry).
_KINDS = {
    (outcome, ran, rest): status + ("+" if ran else "") + ("*" if rest else "")
    for outcome, status in [
        *_FINAL.items(),
        (Outcome.RETRY, "retrying"),
        (Outcome.STARTED, "started"),
    ]
    for ran in (False, True)
    for rest in (False, True)
}
#: An outcome as a history line names it.
_TEXTS = {outcome: str(outcome).encode() for outcome in Outcome}
#: (An enum's members read from the class cost a Python ``__getattr__`` hook each, 3.11.)
_STARTED, _RETRY = Outcome.STARTED, Outcome.RETRY
#: The share of ``maxmemory`` from which the reaper purges finished records early.
_MEMORY_SHORT = 0.95
#: Seconds a finished record is kept, however short memory is.
_EARLY_AGE = 300.0


class RedisStore(
    Producer,
    Fetcher,
    SupportsWake,
    SupportsWaitClaim,
    SupportsServerTime,
    SupportsPushSync,
    SupportsPushAnywhere,
    SupportsCheckWorker,
    SupportsPermitEviction,
    SupportsResets,
):
    """The worker's store: every call a worker makes, on one ``Connection``.

    Its extras: ``wake``, ``wait_claim``, ``server_time``, ``push_sync``, ``pushes_anywhere``,
    ``check_worker`` (``Connection``'s), ``permit_eviction`` and ``resets_seen``.
    """

    def permit_eviction(self) -> None:
        """Let workers claim even if Redis may evict records (``allow_eviction=True``)."""
        self.allow_eviction = True
        self._gate_at = 0.0  # a refusal read before is judged again at the next check

    def resets_seen(self) -> int:
        """How many times this process found the store wiped (``resets``)."""
        return self.resets

    async def settle(
        self, settlements: Sequence[Settlement], *, buried: Burials | None = None
    ) -> list[str]:
        """Write outcomes in one script; refuse those whose lease token is stale."""
        if not settlements:
            return []
        await self._taken([s.id for s in settlements])
        args: list[str | bytes | int] = [len(settlements)]
        texts: dict[float, str] = {}  # (times repeat: a batch of outcomes shares one)
        for s in settlements:
            args += self._settle_args(s, texts)
        try:
            answer = await self._script("settle", *args)
        except (BackendUnavailable, BackendFull):
            raise
        except BackendError as exc:  # the script refused an outcome: it wrote nothing
            if len(settlements) > 1:  # each alone, so that one never holds back the rest
                refused = []
                for s in settlements:
                    refused += await self.settle([s], buried=buried)
                return refused
            log.error("%r: outcome of task %r dropped: %s", self, settlements[0].id, exc)
            return [settlements[0].id]  # (its lease runs out: the reaper takes it back)
        if answer is None:  # (none refused or buried: the common batch)
            return []
        refused, dead = answer
        if dead and buried is not None:
            buried.extend((id_of(i), "malformed") for i in dead)
        return [i.decode("utf-8", "surrogatepass") for i in refused]

    def _settle_args(self, s: Settlement, texts: dict[float, str]) -> list[str | bytes | int]:
        """One settlement's ``settle.lua`` arguments; ``texts``: the times written so far.

        A STARTED mark sends three, an outcome seven, and four more (its ``*`` kind) only with
        an error, a reason, a payload or a retry's run_at. ``utf8`` and ``opt`` are written out
        for the values every settlement has (one call each fewer per task). A time is written
        once a batch (``repr`` of a float is some 8k instructions): the outcomes of a batch of
        threads share theirs, and so their expiry.
        """
        outcome, task_id = s.outcome, s.id.encode("utf-8", "surrogatepass")
        if outcome is _STARTED:
            return [task_id, s.token, _KINDS[outcome, s.ran, False]]
        now = float(s.now)
        expires = ""
        if outcome is not _RETRY:
            keep = retention(outcome, s.keep, self.keep_finished, self.keep_dead)
            if keep > 0:
                at = now + keep
                expires = texts.get(at) or texts.setdefault(at, repr(at))
        written = texts.get(now) or texts.setdefault(now, repr(now))
        error, reason, payload = s.error, s.reason, s.payload  # (mostly None: no opt call)
        result, took, token = s.result, s.took, s.token
        parts = None if took is None else took_parts(s)  # (TOOK_FORM's, as SQLite keeps it)
        if parts is not None:
            line = TOOK_LINE % (token, *parts, _TEXTS[outcome])
        else:  # (no took, or one TOOK_LINE cannot keep: the line as history_arg says)
            attempt = attempt_line(s)
            line = b"" if attempt is None else history_arg(attempt)
        rest = outcome is _RETRY or not (error is None and reason is None and payload is None)
        args: list[str | bytes | int] = [
            task_id, token, _KINDS[outcome, s.ran, rest], written, expires,
            b"" if result is None else b"=" + result, line,
        ]  # fmt: skip
        if rest:
            at = float(s.run_at)
            args += [
                b"" if error is None else opt(error), b"" if reason is None else opt(reason),
                texts.get(at) or texts.setdefault(at, repr(at)),
                b"" if payload is None else opt(payload),
            ]  # fmt: skip
        return args

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], now: float, lease: float
    ) -> tuple[list[str], list[str]]:
        """Extend leases; report the lost ones and those asked to cancel."""
        if not leases:
            return [], []
        await self._taken([i for i, _ in leases])
        args: list[str | bytes | int] = [num(now + lease), len(leases)]
        for task_id, token in leases:
            args += [utf8(task_id), token]
        codes = await self._script("heartbeat", *args)
        lost = [i for (i, _), code in zip(leases, codes, strict=True) if code == 0]
        cancel = [i for (i, _), code in zip(leases, codes, strict=True) if code == 2]
        return lost, cancel

    async def release(self, ids: Sequence[str], now: float) -> list[str]:
        """Make later-due waiting records due now (one script); wakes their queues' workers."""
        if not ids:
            return []
        flat = await self._script("release", num(now), len(ids), *[utf8(i) for i in ids])
        released = [bytes(v).decode("utf-8", "surrogatepass") for v in flat]
        self._wakeups.notify(set(released[1::2]))
        return released[::2]

    async def progress(self, updates: Sequence[tuple[str, int, str]]) -> None:
        """Store reported progress for records still on the reporting attempt (one script)."""
        if not updates:
            return
        await self._taken([i for i, _, _ in updates])
        args: list[str | bytes | int] = [len(updates)]
        for task_id, token, text in updates:
            args += [utf8(task_id), token, utf8(text)]
        await self._script("progress", *args)

    async def upkeep(self, job: Upkeep) -> Upkept:
        """Beat, reap and purge as ``job`` asks (``Store.upkeep``): a script each."""
        done = Upkept()
        if job.beat is not None:
            await self._beat(job.beat, job.now, job.ttl, job.finished)
        if job.crash_budget is not None:
            reaped = await self._reap(job.queue, job.now, job.crash_budget, job.transit)
            done.requeued, done.dead, dead = reaped
            if dead and job.buried is not None:
                job.buried.extend((id_of(i), "malformed") for i in dead)
        if job.purge:
            done.purged = await self._purge_finished(job.now)
        return done

    async def _reap(
        self, queue: str, now: float, crash_budget: int, transit: float | None = None
    ) -> tuple[int, int, list[bytes]]:
        """Requeue expired leases; dead-letter tasks that crashed their workers too often.

        Popped tasks never taken lapse ``transit`` after a drain found them (see reap.lua).
        Returns the counts requeued and dead-lettered, and the ids dead-lettered because
        they could not be read. Every worker reaps on a timer, so this is also where a wiped
        store is noticed.
        """
        link = self._link()
        with self._errors():
            await self._check_epoch(link.client)
        if await self._memory_short():
            await self._relieve(now)
        requeued, dead, buried = await self._script(
            "reap",
            utf8(queue),
            num(now),
            crash_budget,
            num(now + self._retention(Outcome.DEAD, None)),
            *(() if transit is None else (num(transit),)),
        )
        return int(requeued), int(dead), [bytes(i) for i in buried]

    async def next_due(self, queue: str) -> float | None:
        """Earliest run time of the queue's waiting records, across levels and lanes.

        One round trip for a queue without priority levels (the heads of the plain waiting
        zset and of the lanes' earliest run times), a second for the heads of the levels'
        zsets when there are some.
        """
        link = self._link()
        q = f"{self._keys}q:{queue}:"
        waiting = utf8(q + "waiting")
        with self._errors():
            first, *heads = await self._raw(
                link,
                ("LRANGE", utf8(q + "inbox"), 0, 8),
                ("SMEMBERS", utf8(q + "levels")),
                ("ZRANGE", waiting, 0, 0, "WITHSCORES"),
                ("ZRANGE", utf8(q + "lanes:due"), 0, 0, "WITHSCORES"),
                ("ZRANGE", utf8(q + "lanes:later"), 0, 0, "WITHSCORES"),
            )
            for answer in (first, *heads):
                if isinstance(answer, Exception):
                    raise answer
            # Tasks in the inbox (see inbox.lua) are due at once; at most its first 8 entries are
            # wake-up tokens, which announce tasks found below.
            pushed = [from_inbox(e, queue) for e in first]
            if any(r is not None for r in pushed):
                return min(r.run_at for r in pushed if r is not None)
            levels, heads = heads[0], heads[1:]
            if levels:
                heads += await self._raw(
                    link, *[("ZRANGE", waiting + b":" + p, 0, 0, "WITHSCORES") for p in levels]
                )
            for answer in heads:
                if isinstance(answer, Exception):
                    raise answer
        times = [head_score(head) for head in heads if head]
        return min(times) if times else None

    async def wake(self, queue: str, at: float) -> None:
        """A task of ``queue`` fell due at ``at``: wake an idle worker (a token in its inbox).

        Workers block on the inbox, so a retry that falls due while they wait is seen at once
        rather than at their next timeout.
        """
        await self._script("wake", utf8(queue), num(at))
        self._wakeups.notify({queue})

    async def wait(self, queue: str, timeout: float) -> None:
        """Return on a push to ``queue`` from any process, or after ``timeout`` seconds.

        Blocks until the queue's inbox holds something (``BLMOVE`` of its head back in
        place), then drains it (see ``inbox.lua``): every push adds a task or a wake-up token
        there, so one idle worker wakes per push. Without a server it sleeps out the timeout.
        """
        link = self._link()
        key = utf8(f"{self._keys}q:{queue}:inbox")
        deadline = link.loop.time() + timeout
        longest = max(0.01, min(self.ping_interval, self.socket_timeout / 2))
        while True:
            left = deadline - link.loop.time()
            if left <= 0:
                return
            try:
                wait = ("BLMOVE", key, key, "LEFT", "LEFT", num(min(left, longest)))
                drain = ("EVALSHA", link.scripts["drain"].sha, 0, self._keys, utf8(queue))
                popped, drained = await self._raw(link, wait, drain)  # (the move moves nothing)
                if isinstance(drained, redis.exceptions.NoScriptError):  # Redis restarted
                    await link.client.script_load(link.scripts["drain"].script)
                    drained = None  # (not a failure: what the inbox holds, the claim drains)
                for answer in (popped, drained):
                    if isinstance(answer, Exception):
                        raise answer
                if popped is not None:
                    return
            except (redis.exceptions.RedisError, OSError) as exc:
                log.debug("%r: blocking wait failed (%r)", self, exc)
                await self._wakeups.wait(queue, deadline - link.loop.time())
                return

    async def _memory_short(self) -> bool:
        """Whether Redis is within 5 % of its ``maxmemory`` (False without a limit)."""
        link = self._link()
        with self._errors():
            (info,) = await self._raw(link, ("INFO", "memory"))
        if isinstance(info, Exception):  # INFO refused: cannot tell
            return False
        text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
        fields = dict(line.partition(":")[::2] for line in text.splitlines())
        try:
            used, limit = int(fields["used_memory"]), int(fields["maxmemory"])
        except (KeyError, ValueError):
            return False
        return limit > 0 and used >= limit * _MEMORY_SHORT

    async def _relieve(self, now: float) -> None:
        """Memory is short: purge finished records first, so that work can go on.

        Those past their retention go at once; if there are none, one batch of those that
        finished more than ``_EARLY_AGE`` ago (judged by the default retention; the earliest
        to expire first) goes before its time, with a warning. Fresh results stay, for the
        callers waiting on them: a full Redis drains without purging anything anyway.
        """
        if await self._purge_finished(now):
            return
        before = now + self.keep_finished - _EARLY_AGE
        early = int(await self._script("purge", num(before), PURGE_BATCH))
        if early:
            log.warning(
                "%r: Redis is near maxmemory: purged %d finished record(s) before their "
                "retention ran out, to make room",
                self,
                early,
            )

    async def _purge_finished(self, now: float) -> int:
        """Delete finished records past their retention, a batch per script call."""
        total = 0
        while True:
            deleted = int(await self._script("purge", num(now), PURGE_BATCH))
            total += deleted
            if deleted < PURGE_BATCH:
                return total

    async def _beat(
        self,
        worker: WorkerBeat,
        now: float,
        ttl: float,
        finished: Mapping[int, Mapping[str, int]] | None,
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
