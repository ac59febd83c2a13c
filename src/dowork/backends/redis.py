"""Redis backend: one Redis (5.0+) shared by every worker process on any host.

Every state change is one Lua script, so it is atomic and a crash can never leave a task half
moved. A task is leased, never popped: a claim moves its id from the queue's waiting set to
its running set and bumps ``attempts`` (the fencing token) in the same script, and it stays
there until a settlement naming that token arrives or the reaper finds the lease expired.

Key schema (``P`` is the prefix, ``dowork`` by default; ``Q`` a queue name)::

    P:task:{id}         hash, one per task: id queue name payload options status attempts
                        run_at created_at updated_at lease_until owner crashes
                        cancel_requested error reason result finished_at expires_at seq
                        (a field that is None is absent)
    P:q:Q:waiting       zset of waiting tasks (pending, scheduled, retrying); score run_at,
                        member "%016x:{id}" % seq, so equal run_at sort first in, first out
    P:q:Q:running       zset of leased tasks; score lease_until, member id
    P:q:Q:counts        hash status -> number of the queue's tasks in that status (deleted
                        with the queue's last task)
    P:q:Q:created       zset of all the queue's tasks; score created_at, member as in
                        waiting ("%016x:{id}" % seq), so ties list in push order
    P:q:Q:created.S     the same for the queue's tasks in status S only (one zset per status
                        in use), so a page of one status never reads the others
    P:queues            set of the queue names that have tasks
    P:expiry            zset of finished tasks kept for lookups; score expires_at, member id
    P:seq               counter giving each pushed task its FIFO sequence number
    P:notify            pub/sub channel: "{sender} {queue}" after every push
    P:idem:K            hash id, until: the task holding idempotency key K (K is
                        "{len(queue)}:{queue}:{key}") until the caller's time until; a Redis
                        TTL of the window drops it later
    P:epoch             a random value written at first connect: if it vanishes, the data was
                        wiped (a restart without persistence, FLUSHALL), which is logged

Every script that changes a task's status moves it between the ``created.S`` zsets and
updates ``counts`` in the same step; ``list()`` reads one page of a ``created`` zset (or merges
the first pages of a few ``created.S``), never the whole queue.

Times (``run_at``, ``lease_until``, ...) are the caller's clock, as in the other backends,
and are passed to the scripts as exact ``repr(float)`` strings. The scripts touch keys they
compute from the prefix, so they need a single Redis (or a primary with replicas), not a
cluster. Finished records carry no Redis TTL: ``purge_finished(now)`` deletes them, so that
the retention follows the same clock as everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from ..errors import BackendError, BackendFull, BackendUnavailable, DuplicateTask
from ._protocol import (
    STATS_MINUTES,
    Outcome,
    Record,
    Settlement,
    Wakeups,
    WorkerBeat,
    check_page,
    minute_of,
    retention,
    status_filter,
)

__all__ = ["RedisBackend"]

log = logging.getLogger("dowork")

_FINAL = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.FAILED: "failed",
    Outcome.CANCELLED: "cancelled",
    Outcome.DEAD: "dead",
}

# -- the scripts -------------------------------------------------------------------------------
#
# ARGV[1] of every script is the key prefix with its colon ("dowork:"). An optional string
# argument is "" for None and "=" followed by the value otherwise, so "" stays distinct.
# Scripts check everything before their first write, so none stops half way.

_PRELUDE = """
local P = ARGV[1]
local WAITING = {pending = true, scheduled = true, retrying = true}
local function tkey(id) return P .. 'task:' .. id end
local function qkey(queue, kind) return P .. 'q:' .. queue .. ':' .. kind end
local function member(seq, id) return string.format('%016x', tonumber(seq)) .. ':' .. id end
-- Count changes and listing-zset moves are gathered while a script runs and written once at
-- its end (flush), one HINCRBY per queue and status and one ZREM/ZADD per key, instead of a
-- few commands per task: that is most of the Redis CPU a task costs.
local DELTAS, ZREMS, ZADDS = {}, {}, {}
local function count(queue, status, delta)
    local q = DELTAS[queue]
    if not q then q = {}; DELTAS[queue] = q end
    q[status] = (q[status] or 0) + delta
end
local function gather(t, key, a, b)
    local list = t[key]
    if not list then list = {}; t[key] = list end
    list[#list + 1] = a
    if b then list[#list + 1] = b end
end
local function chunks(cmd, key, list, step)
    for i = 1, #list, step do
        redis.call(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
    end
end
local function flush()
    for queue, by in pairs(DELTAS) do
        for status, delta in pairs(by) do
            if delta ~= 0 then redis.call('HINCRBY', qkey(queue, 'counts'), status, delta) end
        end
    end
    for key, list in pairs(ZREMS) do chunks('ZREM', key, list, 4000) end
    for key, list in pairs(ZADDS) do chunks('ZADD', key, list, 4000) end
    DELTAS, ZREMS, ZADDS = {}, {}, {}
end
-- A task (zset member m, created_at at) leaves status old and/or enters status new (nil:
-- none): counts and the per-status listing zsets follow (written at flush).
local function move(queue, m, at, old, new)
    if old then
        count(queue, old, -1)
        gather(ZREMS, qkey(queue, 'created.' .. old), m)
    end
    if new then
        count(queue, new, 1)
        gather(ZADDS, qkey(queue, 'created.' .. new), at, m)
    end
end
-- After a task hash was deleted: drop it from the listings, and the queue once it is empty.
local function forget(queue, status, m)
    move(queue, m, nil, status, nil)
    flush()  -- the counts are read just below
    redis.call('ZREM', qkey(queue, 'created'), m)
    local counts = qkey(queue, 'counts')
    for _, n in ipairs(redis.call('HVALS', counts)) do
        if tonumber(n) ~= 0 then return end
    end
    redis.call('DEL', counts)
    redis.call('SREM', P .. 'queues', queue)
end
local function setopt(key, name, value)
    if value == '' then
        redis.call('HDEL', key, name)
    else
        redis.call('HSET', key, name, string.sub(value, 2))
    end
end
"""


# ARGV: P, n, sender, then n x (id, queue, name, payload, run_at, created_at, status, options?,
# attempts), then k and k x (record index, idempotency key, until, ttl ms).
# Returns {'ok', then the id and holder id of each record whose idempotency key was held (not
# written)}, or {'duplicate', id} having written nothing.
def _wrap(script: str) -> str:
    """Run a script body as a function, then write what it gathered (see ``flush``)."""
    return (
        f"{_PRELUDE}\nlocal function body()\n{script}\nend\nlocal r = body()\nflush()\nreturn r\n"
    )


_PUSH = """
local n = tonumber(ARGV[2])
local seen = {}
for i = 0, n - 1 do
    local id = ARGV[4 + i * 9]
    if seen[id] or redis.call('EXISTS', tkey(id)) == 1 then return {'duplicate', id} end
    seen[id] = true
end
local ok, todo, keyed, k0 = {'ok'}, {}, {}, 4 + n * 9
for j = 0, tonumber(ARGV[k0] or '0') - 1 do
    keyed[tonumber(ARGV[k0 + 1 + j * 4])] = k0 + 2 + j * 4
end
for i = 0, n - 1 do
    local b, kb = 4 + i * 9, keyed[i]
    local held = kb and redis.call('HMGET', P .. 'idem:' .. ARGV[kb], 'id', 'until') or {}
    if held[1] and tonumber(held[2]) > tonumber(ARGV[b + 5]) then
        ok[#ok + 1] = ARGV[b]; ok[#ok + 1] = held[1]
    else
        if kb then
            redis.call('HSET', P .. 'idem:' .. ARGV[kb], 'id', ARGV[b], 'until', ARGV[kb + 1])
            redis.call('PEXPIRE', P .. 'idem:' .. ARGV[kb], ARGV[kb + 2])
        end
        todo[#todo + 1] = i
    end
end
local seq = redis.call('INCRBY', P .. 'seq', n) - n
local queues = {}
for _, i in ipairs(todo) do
    local b = 4 + i * 9
    local id, queue, status = ARGV[b], ARGV[b + 1], ARGV[b + 6]
    local key = tkey(id)
    seq = seq + 1
    redis.call('HSET', key, 'id', id, 'queue', queue, 'name', ARGV[b + 2],
        'payload', ARGV[b + 3], 'run_at', ARGV[b + 4], 'created_at', ARGV[b + 5],
        'updated_at', ARGV[b + 5], 'status', status, 'attempts', ARGV[b + 8],
        'seq', string.format('%d', seq))
    setopt(key, 'options', ARGV[b + 7])
    local m = member(seq, id)
    if WAITING[status] then
        redis.call('ZADD', qkey(queue, 'waiting'), ARGV[b + 4], m)
    end
    redis.call('ZADD', qkey(queue, 'created'), ARGV[b + 5], m)
    move(queue, m, ARGV[b + 5], nil, status)
    queues[queue] = true
end
for queue in pairs(queues) do
    redis.call('SADD', P .. 'queues', queue)
    redis.call('PUBLISH', P .. 'notify', ARGV[3] .. ' ' .. queue)
end
return ok
"""

# ARGV: P, queue, now, limit, lease_until, owner, max_running ('' = no cap), alone_from
# ('' = none).
# Returns the claimed records as HGETALL lists, oldest first.
_CLAIM = """
local queue, now = ARGV[2], ARGV[3]
local running = qkey(queue, 'running')
local limit = tonumber(ARGV[4])
if ARGV[7] ~= '' then
    limit = math.min(limit, tonumber(ARGV[7]) - redis.call('ZCARD', running))
end
if limit <= 0 then return {} end
local waiting = qkey(queue, 'waiting')
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', waiting, '-inf', now, 'LIMIT', 0, limit)) do
    local id = string.sub(m, 18)
    local key = tkey(id)
    local rec = redis.call('HMGET', key, 'status', 'created_at', 'crashes')
    local status = rec[1]
    -- A repeat crasher is claimed alone (see Backend.claim).
    local crasher = ARGV[8] ~= '' and tonumber(rec[3] or '0') >= tonumber(ARGV[8])
    if crasher and #out > 0 then break end
    gather(ZREMS, waiting, m)
    if status and WAITING[status] then
        redis.call('HINCRBY', key, 'attempts', 1)
        redis.call('HSET', key, 'status', 'running', 'lease_until', ARGV[5],
            'owner', ARGV[6], 'updated_at', now)
        gather(ZADDS, running, ARGV[5], id)
        move(queue, m, rec[2], status, 'running')
        out[#out + 1] = redis.call('HGETALL', key)
        if crasher then break end
    end
end
return out
"""

# ARGV: P, n, then n x (id, token, status, now, run_at, error?, reason?, result?,
# expires_at ('' = forget the record), payload?, attempt?). status 'retrying' means RETRY;
# attempt is a line appended to the task's history.
# Returns the ids refused because the record is not running under that token.
_SETTLE = """
local refused = {}
local function log_attempt(key, line)
    if line ~= '' then
        local old = redis.call('HGET', key, 'history') or ''
        redis.call('HSET', key, 'history', old .. string.sub(line, 2) .. '\\n')
    end
end
for i = 0, tonumber(ARGV[2]) - 1 do
    local b = 3 + i * 11
    local id, status, now = ARGV[b], ARGV[b + 2], ARGV[b + 3]
    local key = tkey(id)
    local rec = redis.call('HMGET', key, 'status', 'attempts', 'queue', 'seq', 'created_at')
    if rec[1] ~= 'running' or tonumber(rec[2]) ~= tonumber(ARGV[b + 1]) then
        refused[#refused + 1] = id
    else
        local queue, m = rec[3], member(rec[4], id)
        redis.call('ZREM', qkey(queue, 'running'), id)
        if status == 'retrying' then
            redis.call('HSET', key, 'status', status, 'run_at', ARGV[b + 4], 'updated_at', now)
            redis.call('HDEL', key, 'lease_until', 'owner')
            setopt(key, 'error', ARGV[b + 5])
            if ARGV[b + 9] ~= '' then setopt(key, 'payload', ARGV[b + 9]) end
            log_attempt(key, ARGV[b + 10])
            redis.call('ZADD', qkey(queue, 'waiting'), ARGV[b + 4], m)
            move(queue, m, rec[5], 'running', status)
        elseif ARGV[b + 8] == '' then
            redis.call('DEL', key)
            forget(queue, 'running', m)
        else
            redis.call('HSET', key, 'status', status, 'updated_at', now, 'finished_at', now,
                'expires_at', ARGV[b + 8])
            redis.call('HDEL', key, 'lease_until', 'owner')
            setopt(key, 'error', ARGV[b + 5])
            setopt(key, 'reason', ARGV[b + 6])
            setopt(key, 'result', ARGV[b + 7])
            log_attempt(key, ARGV[b + 10])
            redis.call('ZADD', P .. 'expiry', ARGV[b + 8], id)
            move(queue, m, rec[5], 'running', status)
        end
    end
end
return refused
"""

# ARGV: P, lease_until, n, then n x (id, token). Returns one code per lease:
# 0 lost, 1 extended, 2 extended and asked to cancel.
_HEARTBEAT = """
local codes = {}
for i = 0, tonumber(ARGV[3]) - 1 do
    local id = ARGV[4 + i * 2]
    local key = tkey(id)
    local rec = redis.call('HMGET', key, 'status', 'attempts', 'queue', 'cancel_requested')
    if rec[1] ~= 'running' or tonumber(rec[2]) ~= tonumber(ARGV[5 + i * 2]) then
        codes[#codes + 1] = 0
    else
        redis.call('HSET', key, 'lease_until', ARGV[2])
        redis.call('ZADD', qkey(rec[3], 'running'), ARGV[2], id)
        codes[#codes + 1] = rec[4] == '1' and 2 or 1
    end
end
return codes
"""

# ARGV: P, now, sender, n, then n ids. Makes later-due waiting records due now; returns
# {id, queue, ...} of those released.
_RELEASE = """
local now, released, queues = ARGV[2], {}, {}
for i = 1, tonumber(ARGV[4]) do
    local id = ARGV[4 + i]
    local key = tkey(id)
    local rec = redis.call('HMGET', key, 'status', 'queue', 'seq', 'created_at', 'run_at')
    local status, queue = rec[1], rec[2]
    if status and WAITING[status] and tonumber(rec[5]) > tonumber(now) then
        local m = member(rec[3], id)
        local new = status == 'scheduled' and 'pending' or status
        redis.call('HSET', key, 'status', new, 'run_at', now, 'updated_at', now)
        redis.call('ZADD', qkey(queue, 'waiting'), now, m)
        if new ~= status then move(queue, m, rec[4], status, new) end
        released[#released + 1] = id
        released[#released + 1] = queue
        queues[queue] = true
    end
end
for queue in pairs(queues) do
    redis.call('PUBLISH', P .. 'notify', ARGV[3] .. ' ' .. queue)
end
return released
"""

# ARGV: P, n, then n x (id, token, progress). Stores progress on records still on that attempt.
_PROGRESS = """
for i = 0, tonumber(ARGV[2]) - 1 do
    local key = tkey(ARGV[3 + i * 3])
    local attempts = redis.call('HGET', key, 'attempts')
    if attempts and tonumber(attempts) == tonumber(ARGV[4 + i * 3]) then
        redis.call('HSET', key, 'progress', ARGV[5 + i * 3])
    end
end
return 0
"""

# ARGV: P, queue, now, crash_budget, expires_at. Returns {requeued, dead_lettered}.
_REAP = """
local queue, now = ARGV[2], ARGV[3]
local running = qkey(queue, 'running')
local requeued, dead = 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', running, '-inf', '(' .. now)) do
    redis.call('ZREM', running, id)
    local key = tkey(id)
    local rec = redis.call('HMGET', key, 'status', 'seq', 'created_at', 'run_at')
    if rec[1] == 'running' then
        local m = member(rec[2], id)
        local crashes = redis.call('HINCRBY', key, 'crashes', 1)
        redis.call('HDEL', key, 'lease_until', 'owner')
        if crashes >= tonumber(ARGV[4]) then
            redis.call('HSET', key, 'status', 'dead', 'reason', 'crashed_worker',
                'error', 'the worker running it stopped renewing its lease ' .. crashes ..
                ' times', 'updated_at', now, 'finished_at', now, 'expires_at', ARGV[5])
            redis.call('ZADD', P .. 'expiry', ARGV[5], id)
            move(queue, m, rec[3], 'running', 'dead')
            dead = dead + 1
        else
            -- run_at is kept: the orphan goes back to its place at the head of the queue
            redis.call('HSET', key, 'status', 'retrying', 'updated_at', now)
            redis.call('ZADD', qkey(queue, 'waiting'), rec[4] or now, m)
            move(queue, m, rec[3], 'running', 'retrying')
            requeued = requeued + 1
        end
    end
end
return {requeued, dead}
"""

# ARGV: P, id, now, expires_at. Returns cancelled, requested, finished or unknown.
_CANCEL = """
local id, now = ARGV[2], ARGV[3]
local key = tkey(id)
local rec = redis.call('HMGET', key, 'status', 'queue', 'seq', 'created_at')
local status, queue = rec[1], rec[2]
if not status then return 'unknown' end
if WAITING[status] then
    local m = member(rec[3], id)
    redis.call('HSET', key, 'status', 'cancelled', 'error', 'cancelled', 'updated_at', now,
        'finished_at', now, 'expires_at', ARGV[4])
    redis.call('ZREM', qkey(queue, 'waiting'), m)
    redis.call('ZADD', P .. 'expiry', ARGV[4], id)
    move(queue, m, rec[4], status, 'cancelled')
    return 'cancelled'
end
if status == 'running' then
    redis.call('HSET', key, 'cancel_requested', '1')
    return 'requested'
end
return 'finished'
"""

# ARGV: P, now, batch. Deletes up to batch finished records whose expires_at < now.
_PURGE = """
local ids = redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', '(' .. ARGV[2],
    'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
    redis.call('ZREM', P .. 'expiry', id)
    local key = tkey(id)
    local rec = redis.call('HMGET', key, 'status', 'queue', 'seq')
    if rec[1] then
        redis.call('DEL', key)
        forget(rec[2], rec[1], member(rec[3], id))
    end
end
return #ids
"""

# ARGV: P, now, sender, n, then n ids. Sends failed, cancelled and dead tasks back to pending
# (attempts kept: it is the fencing token). Returns id, queue of each task requeued.
_REQUEUE = """
local now = ARGV[2]
local done, queues = {}, {}
for i = 1, tonumber(ARGV[4]) do
    local id = ARGV[4 + i]
    local key = tkey(id)
    local rec = redis.call('HMGET', key, 'status', 'queue', 'seq', 'created_at')
    local status, queue = rec[1], rec[2]
    if status == 'failed' or status == 'cancelled' or status == 'dead' then
        local m = member(rec[3], id)
        redis.call('HSET', key, 'status', 'pending', 'run_at', now, 'updated_at', now,
            'crashes', '0')
        redis.call('HDEL', key, 'error', 'reason', 'result', 'cancel_requested',
            'lease_until', 'owner', 'finished_at', 'expires_at')
        redis.call('ZREM', P .. 'expiry', id)
        redis.call('ZADD', qkey(queue, 'waiting'), now, m)
        move(queue, m, rec[4], status, 'pending')
        done[#done + 1] = id
        done[#done + 1] = queue
        queues[queue] = true
    end
end
for queue in pairs(queues) do
    redis.call('PUBLISH', P .. 'notify', ARGV[3] .. ' ' .. queue)
end
return done
"""

# ARGV: P, queue, batch, then the statuses to delete (none: every status but running).
# Deletes up to batch of the queue's tasks in those statuses; returns how many.
_PURGE_QUEUE = """
local queue, left = ARGV[2], tonumber(ARGV[3])
local statuses = {}
if #ARGV > 3 then
    for i = 4, #ARGV do statuses[#statuses + 1] = ARGV[i] end
else
    for _, status in ipairs(redis.call('HKEYS', qkey(queue, 'counts'))) do
        if status ~= 'running' then statuses[#statuses + 1] = status end
    end
end
for _, status in ipairs(statuses) do
    if left <= 0 then break end
    local members = redis.call('ZRANGE', qkey(queue, 'created.' .. status), 0, left - 1)
    for _, m in ipairs(members) do
        local id = string.sub(m, 18)
        redis.call('DEL', tkey(id))
        if WAITING[status] then
            redis.call('ZREM', qkey(queue, 'waiting'), m)
        elseif status == 'running' then
            redis.call('ZREM', qkey(queue, 'running'), id)
        else
            redis.call('ZREM', P .. 'expiry', id)
        end
        forget(queue, status, m)
    end
    left = left - #members
end
return tonumber(ARGV[3]) - left
"""

# ARGV: P, queue, offset, limit, newest ('1' or ''), then the statuses (none: all).
# Returns one page of the queue's task hashes (HGETALL lists) in created_at order.
_LIST = """
local queue, offset, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local newest = ARGV[5] == '1'
local range = newest and 'ZREVRANGE' or 'ZRANGE'
local page
if #ARGV <= 6 then
    local key = #ARGV == 6 and qkey(queue, 'created.' .. ARGV[6]) or qkey(queue, 'created')
    page = redis.call(range, key, offset, offset + limit - 1)
else
    -- Several statuses: the page lies within the first offset + limit of each listing.
    local all = {}
    for i = 6, #ARGV do
        local key = qkey(queue, 'created.' .. ARGV[i])
        local flat = redis.call(range, key, 0, offset + limit - 1, 'WITHSCORES')
        for j = 1, #flat, 2 do
            local m = flat[j]
            all[#all + 1] = {tonumber(flat[j + 1]), tonumber(string.sub(m, 1, 16), 16), m}
        end
    end
    table.sort(all, function(a, b)  -- by (created_at, seq), like the zsets
        local x, y = a, b
        if newest then x, y = b, a end
        if x[1] ~= y[1] then return x[1] < y[1] end
        return x[2] < y[2]
    end)
    page = {}
    for i = offset + 1, math.min(#all, offset + limit) do page[#page + 1] = all[i][3] end
end
local out = {}
for _, m in ipairs(page) do
    local h = redis.call('HGETALL', tkey(string.sub(m, 18)))
    if #h > 0 then out[#out + 1] = h end
end
return out
"""

# ARGV: P, worker id, queue, beat JSON, now, expires_at ('' = the worker left), oldest minute
# kept, then pairs of "minute:outcome", n. Stores the beat, drops expired ones, adds the counts.
_BEAT = """
local id, now = ARGV[2], ARGV[5]
local workers, alive = P .. 'workers', P .. 'workers:alive'
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', alive, '-inf', now)) do
    redis.call('HDEL', workers, gone)
    redis.call('ZREM', alive, gone)
end
if ARGV[6] == '' then
    redis.call('HDEL', workers, id)
    redis.call('ZREM', alive, id)
else
    redis.call('HSET', workers, id, ARGV[4])
    redis.call('ZADD', alive, ARGV[6], id)
end
if #ARGV > 7 then
    local stats = qkey(ARGV[3], 'stats')
    for i = 8, #ARGV, 2 do redis.call('HINCRBY', stats, ARGV[i], ARGV[i + 1]) end
    local oldest = tonumber(ARGV[7])
    for _, f in ipairs(redis.call('HKEYS', stats)) do
        if tonumber(string.match(f, '^(%d+):')) < oldest then redis.call('HDEL', stats, f) end
    end
end
"""

_SCRIPTS = {
    "push": _PUSH,
    "claim": _CLAIM,
    "settle": _SETTLE,
    "heartbeat": _HEARTBEAT,
    "progress": _PROGRESS,
    "release": _RELEASE,
    "reap": _REAP,
    "cancel": _CANCEL,
    "purge": _PURGE,
    "requeue": _REQUEUE,
    "purge_queue": _PURGE_QUEUE,
    "list": _LIST,
    "beat": _BEAT,
}
_PURGE_BATCH = 500

# -- encoding ----------------------------------------------------------------------------------


def _num(value: float) -> str:
    """An exact decimal form of a time: ``repr`` round-trips every float."""
    return repr(float(value))


def _opt(value: str | bytes | None) -> bytes:
    """An optional string argument: empty for None, ``=`` then the value otherwise."""
    if value is None:
        return b""
    return b"=" + (value if isinstance(value, bytes) else _text(value))


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _str(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "surrogatepass")


def _float(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def _record(flat: Sequence[bytes] | dict[bytes, bytes]) -> Record:
    """Build a record from a task hash (an HGETALL dict, or the flat list a script returns)."""
    h = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
    return Record(
        id=h[b"id"].decode("utf-8", "surrogatepass"),
        queue=h[b"queue"].decode("utf-8", "surrogatepass"),
        name=h[b"name"].decode("utf-8", "surrogatepass"),
        payload=h[b"payload"],
        run_at=float(h[b"run_at"]),
        created_at=float(h[b"created_at"]),
        status=h[b"status"].decode(),
        options=_str(h.get(b"options")),
        attempts=int(h.get(b"attempts", b"0")),
        lease_until=_float(h.get(b"lease_until")),
        owner=_str(h.get(b"owner")),
        crashes=int(h.get(b"crashes", b"0")),
        cancel_requested=h.get(b"cancel_requested") == b"1",
        error=_str(h.get(b"error")),
        reason=_str(h.get(b"reason")),
        result=h.get(b"result"),
        updated_at=float(h.get(b"updated_at", b"0")),
        finished_at=_float(h.get(b"finished_at")),
        progress=_str(h.get(b"progress")),
        history=_str(h.get(b"history")),
    )


def _idempotency_args(records: Sequence[Record]) -> list[str | bytes | int]:
    """The push script's tail: k, then (record index, key, until, ttl ms) per keyed record."""
    tail: list[str | bytes | int] = []
    for index, r in enumerate(records):
        if r.idempotency_key is not None:
            until = r.idempotency_until or r.created_at
            ttl = max(1, int((until - r.created_at) * 1000) + 60_000)  # GC only: a minute spare
            name = f"{len(r.queue)}:{r.queue}:{r.idempotency_key}"
            tail += [index, _text(name), _num(until), ttl]
    return [len(tail) // 4, *tail] if tail else []


def _redact(url: str) -> str:
    """Return ``url`` with its password (in the user part or the query) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if colon else netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs])
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return shown + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


# -- per-loop connections ----------------------------------------------------------------------


@dataclass(eq=False)
class _Link:
    """The backend's connections on one event loop (redis.asyncio clients are loop-bound)."""

    loop: asyncio.AbstractEventLoop
    client: redis.asyncio.Redis
    scripts: dict[str, AsyncScript]
    keeper: asyncio.Task[None] | None = None
    listener: asyncio.Task[None] | None = None
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    ready: bool = False
    released: bool = False
    queues: set[str] = field(default_factory=set)  #: queues waited on through this link
    waiting: dict[str, int] = field(default_factory=dict)  #: wait() calls in progress
    dirty: set[str] = field(default_factory=set)  #: pushed to while nobody waited


class RedisBackend:
    """A task store in Redis, shared by worker processes on any number of hosts.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS, the
            server certificate is verified) or ``unix:///path.sock``; see redis-py's
            ``from_url`` for query options.
        prefix: the first part of every key, so several apps can share one Redis.
        keep_finished: default seconds a finished task's record (status, result, error) is
            kept for lookups by id; ``0`` deletes it at once.
        client: a ``redis.asyncio.Redis`` to use instead of connecting to ``url``; the caller
            keeps ownership (``close()`` leaves it open) and it serves one event loop only.
        socket_timeout: seconds to wait for a reply before the server counts as unreachable.
        connect_timeout: seconds to wait for a connection.
        ping_interval: seconds of silence after which the wake-up subscription is checked.
        keep_dead: seconds a dead-lettered record is kept (``None``: ``keep_finished``).

    Attributes:
        resets: how many times this process found the store wiped (its ``epoch`` key gone).
    """

    durable = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "dowork",
        keep_finished: float = 7 * 24 * 3600.0,
        keep_dead: float | None = None,
        client: redis.asyncio.Redis | None = None,
        socket_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        ping_interval: float = 5.0,
    ) -> None:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"a Redis URL starts with redis://, rediss:// or unix://: {_redact(url)!r}"
            )
        if not prefix:
            raise ValueError("prefix must not be empty")
        if client is not None and client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the client must return bytes: create it with decode_responses=False")
        self.url = url
        self.prefix = prefix
        self.keep_finished = keep_finished
        self.keep_dead = keep_dead
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self._client = client
        self._keys = f"{prefix}:"
        self._channel = f"{prefix}:notify"
        self._sender = uuid.uuid4().hex[:16]
        self._links: dict[asyncio.AbstractEventLoop, _Link] = {}
        self._links_lock = threading.Lock()
        self._wakeups = Wakeups()
        self._checked_memory = False
        self._epoch: bytes | None = None
        self.resets = 0

    def __repr__(self) -> str:
        where = "client=..." if self._client is not None else repr(_redact(self.url))
        return f"RedisBackend({where}, prefix={self.prefix!r})"

    # -- plumbing --------------------------------------------------------------------------

    def _retention(self, outcome: Outcome | None, keep: float | None) -> float:
        """Seconds to keep a finished record (see ``retention``)."""
        return retention(outcome, keep, self.keep_finished, self.keep_dead)

    def _new_client(self) -> redis.asyncio.Redis:
        try:
            return redis.asyncio.Redis.from_url(
                self.url,
                retry=Retry(NoBackoff(), 0),  # a lost reply must not run a script twice
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.connect_timeout,
            )
        except ValueError as exc:  # redis-py names the bad part of the URL
            raise ValueError(f"{_redact(self.url)}: {exc}") from None

    def _link(self) -> _Link:
        """The connections for the running event loop, created on first use."""
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is not None:
            return link
        with self._links_lock:
            for old in [old for old in self._links if old.is_closed()]:
                del self._links[old]  # a loop closed without cancelling our keeper
            client = self._client if self._client is not None else self._new_client()
            scripts = {name: client.register_script(_wrap(s)) for name, s in _SCRIPTS.items()}
            link = _Link(loop, client, scripts)
            link.keeper = loop.create_task(self._keep(link), name="dowork-redis-keeper")
            self._links[loop] = link
        return link

    async def _keep(self, link: _Link) -> None:
        """Live as long as the loop: closing the loop cancels it, which closes the link."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await self._release(link)
            raise
        # A GeneratorExit (the loop was dropped without cancelling us) passes through:
        # with no loop left there is nothing to await, and the connections die with it.

    async def _release(self, link: _Link) -> None:
        if link.released:
            return
        link.released = True
        with self._links_lock:
            if self._links.get(link.loop) is link:
                del self._links[link.loop]
        listener, link.listener = link.listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait([listener])
        if link.client is not self._client:
            with contextlib.suppress(Exception):
                await link.client.aclose()
        self._wakeups.notify(link.queues)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn redis-py's exceptions into dowork's (never showing a password)."""
        try:
            yield
        except redis.exceptions.AuthenticationError as exc:
            raise BackendError(f"{_redact(self.url)}: {exc}") from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise BackendUnavailable(f"{_redact(self.url)}: {exc}") from exc
        except redis.exceptions.ResponseError as exc:
            if str(exc).startswith(("READONLY", "MASTERDOWN", "LOADING", "TRYAGAIN")):
                raise BackendUnavailable(f"{_redact(self.url)}: {exc}") from exc
            if isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM " in str(exc):
                raise BackendFull(f"{_redact(self.url)}: {exc} (maxmemory reached)") from exc
            raise BackendError(f"{_redact(self.url)}: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"{_redact(self.url)}: {exc}") from exc

    async def _script(self, name: str, *args: str | bytes | int) -> Any:
        link = self._link()
        with self._errors():
            return await link.scripts[name](args=[self._keys, *args], client=link.client)

    # -- opening and closing ---------------------------------------------------------------

    async def open(self) -> None:
        """Connect (PING) and load the scripts; other calls connect lazily too."""
        link = self._link()
        if link.ready:
            return
        with self._errors():
            await link.client.ping()
            for script in link.scripts.values():
                script.sha = await link.client.script_load(script.script)
            if not self._checked_memory:
                self._checked_memory = True
                await self._check_eviction(link.client)
            await self._check_epoch(link.client)
        link.ready = True

    async def _check_epoch(self, client: redis.asyncio.Redis) -> None:
        """Write the epoch key if missing; say loudly when the one we saw before is gone.

        A different or missing epoch means Redis lost its data since we last looked (a restart
        without persistence, FLUSHALL, eviction): tasks stored before are gone.
        """
        key = _text(self._keys + "epoch")
        async with client.pipeline(transaction=False) as pipe:  # one round trip
            pipe.set(key, uuid.uuid4().hex, nx=True)
            pipe.get(key)
            _, current = await pipe.execute()
        if self._epoch is not None and current != self._epoch:
            self.resets += 1
            log.critical(
                "%r: backend data reset: the Redis data was wiped (restart without persistence, "
                "FLUSHALL or eviction); tasks stored before are lost. Working on.",
                self,
            )
        self._epoch = current

    async def _check_eviction(self, client: redis.asyncio.Redis) -> None:
        with contextlib.suppress(redis.exceptions.ResponseError):  # INFO not allowed
            policy = (await client.info("memory")).get("maxmemory_policy", "noeviction")
            if policy != "noeviction":
                log.warning(
                    "%r: maxmemory-policy is %s; Redis may evict task records, use noeviction",
                    self,
                    policy,
                )

    async def close(self) -> None:
        """Close this event loop's connections (and ask other loops to close theirs)."""
        running = asyncio.get_running_loop()
        with self._links_lock:
            links = list(self._links.values())
        for link in links:
            keeper = link.keeper
            if keeper is None:
                continue
            if link.loop is running:
                keeper.cancel()
                await asyncio.wait([keeper])
                await self._release(link)  # a keeper cancelled before it ran did not
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed already
                    link.loop.call_soon_threadsafe(keeper.cancel)

    # -- the protocol ----------------------------------------------------------------------

    async def push(self, records: Sequence[Record]) -> dict[str, str]:
        """Store the records in one script: all of them, or none if an id is taken.

        Records whose idempotency key is held are left out (see ``Backend.push``).
        """
        if not records:
            return {}
        args: list[str | bytes | int] = [len(records), self._sender]
        for r in records:
            args += [
                _text(r.id), _text(r.queue), _text(r.name), r.payload, _num(r.run_at),
                _num(r.created_at), r.status, _opt(r.options), r.attempts,
            ]  # fmt: skip
        args += _idempotency_args(records)
        answer = await self._script("push", *args)
        if answer[0] != b"ok":
            task_id = answer[1].decode("utf-8", "surrogatepass")
            raise DuplicateTask(f"a task with id {task_id!r} already exists (nothing written)")
        held = [bytes(i).decode("utf-8", "surrogatepass") for i in answer[1:]]
        same = dict(zip(held[::2], held[1::2], strict=True))
        self._wakeups.notify({r.queue for r in records if r.id not in same})
        return same

    async def claim(
        self,
        queue: str,
        now: float,
        limit: int,
        lease: float,
        owner: str,
        max_running: int | None = None,
        alone_from: int | None = None,
    ) -> list[Record]:
        """Lease up to ``limit`` due records (fewer under ``max_running``) in one script."""
        if limit <= 0:
            return []
        cap = "" if max_running is None else str(max_running)
        alone = "" if alone_from is None else str(alone_from)
        rows = await self._script(
            "claim", _text(queue), _num(now), limit, _num(now + lease), _text(owner), cap, alone
        )
        return [_record(row) for row in rows]

    async def settle(self, settlements: Sequence[Settlement]) -> list[str]:
        """Write outcomes in one script; refuse those whose lease token is stale."""
        if not settlements:
            return []
        args: list[str | bytes | int] = [len(settlements)]
        for s in settlements:
            if s.outcome is Outcome.RETRY:
                status, expires = "retrying", ""
            else:
                keep = self._retention(s.outcome, s.keep)
                status, expires = _FINAL[s.outcome], (_num(s.now + keep) if keep > 0 else "")
            args += [
                _text(s.id), s.token, status, _num(s.now), _num(s.run_at), _opt(s.error),
                _opt(s.reason), _opt(s.result), expires, _opt(s.payload), _opt(s.attempt),
            ]  # fmt: skip
        refused = await self._script("settle", *args)
        return [i.decode("utf-8", "surrogatepass") for i in refused]

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], now: float, lease: float
    ) -> tuple[list[str], list[str]]:
        """Extend leases; report the lost ones and those asked to cancel."""
        if not leases:
            return [], []
        args: list[str | bytes | int] = [_num(now + lease), len(leases)]
        for task_id, token in leases:
            args += [_text(task_id), token]
        codes = await self._script("heartbeat", *args)
        lost = [i for (i, _), code in zip(leases, codes, strict=True) if code == 0]
        cancel = [i for (i, _), code in zip(leases, codes, strict=True) if code == 2]
        return lost, cancel

    async def release(self, ids: Sequence[str], now: float) -> list[str]:
        """Make later-due waiting records due now (one script); wakes their queues' workers."""
        if not ids:
            return []
        flat = await self._script(
            "release", _num(now), self._sender, len(ids), *[_text(i) for i in ids]
        )
        released = [v.decode("utf-8", "surrogatepass") for v in flat]
        self._wakeups.notify(set(released[1::2]))
        return released[::2]

    async def progress(self, updates: Sequence[tuple[str, int, str]]) -> None:
        """Store reported progress for records still on the reporting attempt (one script)."""
        if not updates:
            return
        args: list[str | bytes | int] = [len(updates)]
        for task_id, token, text in updates:
            args += [_text(task_id), token, _text(text)]
        await self._script("progress", *args)

    async def reap(self, queue: str, now: float, crash_budget: int) -> tuple[int, int]:
        """Requeue expired leases; dead-letter tasks that crashed their workers too often.

        Every worker reaps on a timer, so this is also where a wiped store is noticed.
        """
        link = self._link()
        with self._errors():
            await self._check_epoch(link.client)
        requeued, dead = await self._script(
            "reap",
            _text(queue),
            _num(now),
            crash_budget,
            _num(now + self._retention(Outcome.DEAD, None)),
        )
        return int(requeued), int(dead)

    async def get(self, ids: Sequence[str]) -> list[Record]:
        """Fetch records by id (one pipelined round trip)."""
        if not ids:
            return []
        link = self._link()
        with self._errors():
            async with link.client.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hgetall(_text(self._keys + "task:" + task_id))
                hashes = await pipe.execute()
        return [_record(h) for h in hashes if h]

    async def cancel(self, task_id: str, now: float) -> str:
        """Cancel a waiting task, or flag a running one for its worker."""
        answer = await self._script(
            "cancel", _text(task_id), _num(now), _num(now + self.keep_finished)
        )
        return bytes(answer).decode()

    async def next_due(self, queue: str) -> float | None:
        """Earliest run time of the queue's waiting records."""
        link = self._link()
        with self._errors():
            first = await link.client.zrange(
                _text(f"{self._keys}q:{queue}:waiting"), 0, 0, withscores=True
            )
        return float(first[0][1]) if first else None

    async def counts(self, queue: str) -> dict[str, int]:
        """Records per status (kept up to date by every script)."""
        link = self._link()
        with self._errors():
            raw = await link.client.hgetall(_text(f"{self._keys}q:{queue}:counts"))
        counts = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}
        return {status: n for status, n in counts.items() if n > 0}

    async def wait(self, queue: str, timeout: float) -> None:
        """Return on a push to ``queue`` from any process, or after ``timeout`` seconds.

        The first call subscribes this event loop to the notify channel for good; a push seen
        while nobody waits makes the next call return at once, so nothing pushed while the
        worker was busy is slept through.
        """
        link = self._link()
        deadline = link.loop.time() + max(0.0, timeout)
        link.queues.add(queue)
        if link.listener is None or link.listener.done():
            link.listener = link.loop.create_task(self._listen(link), name="dowork-redis-wakeups")
        if not link.subscribed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await link.subscribed.wait()
        if queue in link.dirty:
            link.dirty.discard(queue)
            return
        link.waiting[queue] = link.waiting.get(queue, 0) + 1
        try:
            await self._wakeups.wait(queue, deadline - link.loop.time())
        finally:
            link.waiting[queue] -= 1

    def _signal(self, link: _Link, queues: Sequence[str] | set[str]) -> None:
        """Wake this loop's waiters on ``queues``, or remember the push for the next wait."""
        for queue in queues:
            if link.waiting.get(queue):
                self._wakeups.notify([queue])
            elif queue in link.queues:
                link.dirty.add(queue)

    async def _listen(self, link: _Link) -> None:
        """Follow the notify channel, reconnecting with capped, jittered backoff."""
        delay = 0.05
        first = True
        while True:
            pubsub = link.client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                pong_due = False
                while True:
                    message = await pubsub.get_message(timeout=self.ping_interval)
                    if message is None:
                        if pong_due:
                            raise redis.exceptions.ConnectionError("no answer to PING")
                        await pubsub.ping()
                        pong_due = True
                        continue
                    pong_due = False
                    if message["type"] == "subscribe":
                        delay = 0.05
                        link.subscribed.set()
                        if not first:  # pushes made while we were away were not heard
                            self._signal(link, set(link.queues))
                        first = False
                    elif message["type"] == "message":
                        text = bytes(message["data"]).decode("utf-8", "surrogatepass")
                        sender, _, queue = text.partition(" ")
                        if sender != self._sender:  # our own pushes woke us directly
                            self._signal(link, [queue])
            except Exception as exc:  # the listener must outlive any failure
                link.subscribed.clear()
                expected = isinstance(exc, redis.exceptions.RedisError | OSError)
                log.log(
                    logging.DEBUG if expected else logging.WARNING,
                    "%r: wake-up subscription lost (%r); reconnecting",
                    self,
                    exc,
                )
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 5.0)

    async def purge_finished(self, now: float) -> int:
        """Delete finished records past their retention, a batch per script call."""
        total = 0
        while True:
            deleted = int(await self._script("purge", _num(now), _PURGE_BATCH))
            total += deleted
            if deleted < _PURGE_BATCH:
                return total

    async def server_time(self) -> float:
        """The Redis server's clock (``TIME``), for leases that must share one clock."""
        link = self._link()
        with self._errors():
            seconds, micros = await link.client.time()
        return seconds + micros / 1e6

    async def queues(self) -> list[str]:
        """Names of the queues with records, sorted (the ``P:queues`` set)."""
        link = self._link()
        with self._errors():
            names = await link.client.smembers(_text(f"{self._keys}queues"))
        return sorted(
            n.decode("utf-8", "surrogatepass") if isinstance(n, bytes) else n for n in names
        )

    async def requeue(self, ids: Sequence[str], now: float) -> list[str]:
        """Send failed, cancelled and dead records back to pending in one script."""
        unique = [_text(i) for i in dict.fromkeys(ids)]
        if not unique:
            return []
        flat = await self._script("requeue", _num(now), self._sender, len(unique), *unique)
        done = [bytes(i).decode("utf-8", "surrogatepass") for i in flat]
        self._wakeups.notify(set(done[1::2]))  # other processes hear the script's PUBLISH
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
                await self._script("purge_queue", _text(queue), _PURGE_BATCH, *(wanted or ()))
            )
            total += deleted
            if deleted < _PURGE_BATCH:
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
            _text(worker.id),
            _text(worker.queue),
            _text(worker.to_json()),
            _num(now),
            _num(now + ttl) if ttl > 0 else "",
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
                pipe.zrangebyscore(_text(f"{self._keys}workers:alive"), f"({_num(now)}", "+inf")
                pipe.hgetall(_text(f"{self._keys}workers"))
                alive, beats = await pipe.execute()
        return [WorkerBeat.from_json(beats[i]) for i in sorted(alive) if i in beats]

    async def stats(self, queue: str, since: float) -> dict[int, dict[str, int]]:
        """Per-minute outcome counts of the queue from ``since`` on."""
        link = self._link()
        with self._errors():
            raw = await link.client.hgetall(_text(f"{self._keys}q:{queue}:stats"))
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
            "list", _text(queue), offset, limit, "1" if newest_first else "", *(wanted or ())
        )
        return [_record(row) for row in rows]
