"""Redis backend: one Redis (6.0+) shared by every worker process on any host.

Every state change is one Lua script, so it is atomic and a crash can never leave a task half
moved. A task is leased, never popped: a claim moves its id from the queue's waiting set to
its running set and bumps ``attempts`` (the fencing token) in the same script, and it stays
there until a settlement naming that token arrives or the reaper finds the lease expired.

Key schema (``P`` is the prefix, ``dowork`` by default; ``Q`` a queue name)::

    P:task:{id}         hash, one per task: queue name payload options status attempts
                        run_at created_at updated_at lease_until owner crashes
                        cancel_requested error reason result expires_at seq
                        priority slot concurrency_key history (its attempts' lines, a
                        worker's in a short form: see history.py; a field that is None is absent;
                        absent attempts and priority are 0, absent updated_at is created_at;
                        attempts is a count, written "01" by a lease of a record as pushed,
                        so that its settlement reads less of it (see FRESH in claim.lua);
                        lease_until and owner mean something only while status is running);
                        finished_at is updated_at once expires_at is set, and the id is
                        the key's (a record written before 2026-12-07 may hold either as a
                        field of its own: its finished_at counts, its id must match the key)
    P:q:Q:waiting       zset of waiting tasks (pending, scheduled, retrying) of priority 0
                        without a concurrency key; score run_at, member "{seq}:{id}" (seq:
                        16 hex digits), so equal run_at sort first in, first out
    P:q:Q:waiting:{p}   the same for those of priority p (-9..9, not 0)
    P:q:Q:levels        set of the priorities p with a waiting:{p} zset (added by every
                        write to one; a claim drops a level whose zset it finds gone)
    P:q:Q:lane:{p}:{K}  the same for the waiting tasks of concurrency key K and priority p
                        (0 too): K's "lane"
    P:q:Q:lanes:levels  hash K -> the priorities other than 0 of K's lane zsets ("3 -2");
                        a level found empty is unlisted
    P:q:Q:lanes         zset of the awake lanes: K -> the turn K was last served in (0:
                        never); also a lane emptied since the last claim (see drained)
    P:q:Q:lanes:due     zset K -> the earliest run_at of K's waiting tasks, for awake lanes
    P:q:Q:lanes:later   zset K -> the same, for lanes asleep: a claim that finds nothing of K
                        due moves K here, and the first claim at or after that time wakes it
    P:q:Q:lanes:turns   hash K -> the turn a sleeping lane was last served in (absent: never)
    P:q:Q:lanes:drained set of the keys whose lane lost its last waiting task outside a claim
                        (cancel, purge): the next claim forgets those still empty
    P:q:Q:turn          hash: n, the last turn given; "", the turn the tasks without a key
                        were last served in (absent: never); deleted when no turn is left to
                        remember. The plain claim only marks "" served (1) or forgets it
    P:q:Q:keyrun        hash K -> the queue's running tasks of key K (absent: none), for
                        per_key: +1 by a claim, -1 by every way out of running (settle, reap,
                        purge)
    P:q:Q:rate:{key}    list of the last n start times a rate limit (n, per) gave out,
                        ascending (key: a task name, or "" for the queue's limit); a Redis
                        TTL drops it once no start in it matters any more
    P:q:Q:running       zset of leased tasks; score lease_until, member id (plus one long
                        member that keeps it a skiplist, see KEEPER)
    P:q:Q:counts        hash status -> number of the queue's tasks in that status (deleted
                        with the queue's last task)
    P:q:Q:created.S     zset of the queue's tasks in status S (every status but running,
                        which is listed from the running zset); score created_at, member
                        as in waiting, so ties list in push order
    P:q:Q:inbox         list of tasks submitted one at a time (plain ones, due now: "r" id
                        NUL name NUL created_at NUL options NUL payload), not stored as above
                        yet, and of wake-up tokens ("t" then a time; scripts add one only
                        while the list holds fewer than 8 entries). Idle workers block on it;
                        every script that reads or writes waiting tasks drains it first
    P:q:Q:taken         list of the inbox entries a worker popped (BLMOVE) and started but has
                        not recorded yet (see take.lua); a drain stores them as running, leased
                        to no one ("~"), and lists them in transit, so that the reaper requeues
                        those whose worker died in between or never got its pop's reply
    P:q:Q:transit       zset of the tasks a drain found in taken; score the time of Redis's
                        clock it found them. The queue's reaper requeues those still leased to
                        no one its transit later (lease - maintenance), and forgets the rest
                        then; their own lease_until (a minute on) serves reapers of no transit
    P:queues            set of the queue names that have tasks
    P:expiry            zset of finished tasks kept for lookups; score expires_at, member id
    P:seq               counter giving each pushed task its FIFO sequence number
    P:idem:K            hash id, until: the task holding idempotency key K (K is
                        "{len(queue)}:{queue}:{key}") until the caller's time until; a Redis
                        TTL of the window drops it later
    P:epoch             a random value written at first connect: if it vanishes, the data was
                        wiped (a restart without persistence, FLUSHALL), which is logged
    P:workers           hash worker id -> its last beat (JSON), for dashboards
    P:workers:alive     zset worker id -> when its beat expires
    P:q:Q:stats         hash "minute:outcome" -> tasks finished that minute (the last hour)

A claim of plain tasks (no ``levels``, no lanes, no rate limits) reads the head of
``waiting`` only. Otherwise it serves the lanes in turn (the tasks without a key are one more
lane, over ``waiting`` and its levels; see ``Store.claim``): each step takes the most urgent
due task (by rank, ``run_at - p * aging``, then seq, merging the lane's levels) of the lane
served longest ago. It reads the lanes never served at once (their order is their heads'),
the others a page at a time in turn order while one not read yet may come first, and each
lane's due tasks a few at a time; lanes with nothing due sleep in ``lanes:later``, so a claim
does not pass over them again, and one key's backlog never stands in another's way. A queue
left with no task at all forgets its turns with its other keys, at once (the in-memory
reference waits for its next claim).

Every script that changes a task's status moves it between the ``created.S`` zsets and
updates ``counts`` in the same step; ``list()`` reads one page of a ``created.S`` zset (or
merges the first pages of several, and the running zset), never the whole queue. A push
from a thread (``push_sync``) of one plain task due now (``submit()``) is ``RPUSH`` to the
inbox and ``SADD`` to ``P:queues``, no script: about what a bare ``LPUSH`` costs, where a
script costs Redis several times that (and ~0.15 ms more when Redis was idle). An idle
worker with no flow control to apply pops that entry and starts the task before any script
runs, so a submit reaches an idle worker in one hop, as in the simplest list-based queues;
the ``take`` script then records the lease, and the worker's settlement waits for it. Any
other push is one ``EVALSHA``: records that share their fields but id and payload travel as
one run.

Times (``run_at``, ``lease_until``, ...) are the caller's clock, as in the other backends,
and are passed to the scripts as exact ``repr(float)`` strings. The scripts touch keys they
compute from the prefix, so they need a single Redis (or a primary with replicas), not a
cluster. Finished records carry no Redis TTL: the purge of ``upkeep`` deletes them, so that
the retention follows the same clock as everything else.

The package, one concern a module: ``backend`` (``RedisBackend``, assembled from the parts
below), ``client`` (connections, round trips, errors, the epoch), ``wire`` (packed commands
from threads), ``urls`` and ``policy`` (what a URL carries, the ``maxmemory-policy``),
``records`` (task hashes and script arguments), ``push``, ``claim`` and ``store`` (the
worker's protocol), ``admin`` (``StoreAdmin``: what operators and handles ask), and
``scripts``, which assembles the Lua scripts of ``lua/`` (one file per script, shared parts
in ``lua/include``) as they are first used; ``importing`` imports redis-py first.
"""

from __future__ import annotations

from . import importing  # noqa: F401  # first: redis-py without what it does not need
from .backend import RedisBackend

__all__ = ["RedisBackend"]
