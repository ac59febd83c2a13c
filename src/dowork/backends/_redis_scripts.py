"""The Lua scripts of the Redis backend: every state change of a task is one of them.

Each runs atomically inside Redis, checks everything before its first write (so none stops
half way) and touches only keys it computes from the prefix in ``ARGV[1]``. ``SCRIPTS`` maps
their names to their full sources; ``redis.py`` loads and calls them. The key layout is
described in ``redis.py``'s docstring.
"""

from __future__ import annotations

__all__ = ["SCRIPTS"]

# -- the scripts -------------------------------------------------------------------------------
#
# ARGV[1] of every script is the key prefix with its colon ("dowork:"). An optional string
# argument is "" for None and "=" followed by the value otherwise, so "" stays distinct.
# Scripts check everything before their first write, so none stops half way.

# What every script needs; _PUSH (the producers' hot path) needs only this.
_BASE = """
local P = ARGV[1]
local WAITING = {pending = true, scheduled = true, retrying = true}
local function tkey(id) return P .. 'task:' .. id end
local function qkey(queue, kind) return P .. 'q:' .. queue .. ':' .. kind end
local function chunks(cmd, key, list, step)
    for i = 1, #list, step do
        redis.call(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
    end
end
-- The running zset keeps this member (longer than zset-max-listpack-value, 64 by default),
-- so Redis stores it as a skiplist from the start: leases churn in batches, and every insert
-- into a small (listpack) zset parses the scores before it, several times slower.
local KEEPER = string.rep('~', 80)
-- Wake up to n idle workers of the queue (blocked on its wake list). The list holds at most
-- WAKE_CAP tokens, so pushes while every worker is busy cost nothing more. A token is a time
-- (the caller's now) by which the work it announces was due: a worker whose claim was sent
-- before it blocked claims what was due by then.
local WAKE_CAP = 8
local function wake(queue, n, at)
    local key = qkey(queue, 'wake')
    local room = WAKE_CAP - redis.call('LLEN', key)
    if room > 0 then
        local tokens = {}
        for i = 1, math.min(n, room) do tokens[i] = at end
        redis.call('RPUSH', key, unpack(tokens))
    end
end
"""

_PRELUDE = """
-- seq is stored as 16 hex digits, so a listing member is "seq:id" (ordered by push).
local function member(seq, id) return seq .. ':' .. id end
-- Count changes and listing-zset moves are gathered while a script runs and written once at
-- its end (flush), one HINCRBY per queue and status and one ZREM/ZADD per key, instead of a
-- few commands per task: that is most of the Redis CPU a task costs.
local DELTAS, ZREMS, ZADDS, EMPTIED = {}, {}, {}, {}
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
local function flush()
    for queue, by in pairs(DELTAS) do
        for status, delta in pairs(by) do
            if delta ~= 0 then redis.call('HINCRBY', qkey(queue, 'counts'), status, delta) end
        end
    end
    for key, list in pairs(ZREMS) do chunks('ZREM', key, list, 4000) end
    for key, list in pairs(ZADDS) do chunks('ZADD', key, list, 4000) end
    for queue in pairs(EMPTIED) do  -- a queue whose last task went is forgotten
        local counts = qkey(queue, 'counts')
        local empty = true
        for _, n in ipairs(redis.call('HVALS', counts)) do
            if tonumber(n) ~= 0 then empty = false; break end
        end
        if empty then
            redis.call('DEL', counts, qkey(queue, 'wake'), qkey(queue, 'running'))
            redis.call('SREM', P .. 'queues', queue)
        end
    end
    DELTAS, ZREMS, ZADDS, EMPTIED = {}, {}, {}, {}
end
-- A task (zset member m, created_at at) leaves status old and/or enters status new (nil:
-- none): counts and the per-status listing zsets follow (written at flush). Running tasks
-- are listed from the running zset, so they have no listing zset of their own.
local function move(queue, m, at, old, new)
    if old then
        count(queue, old, -1)
        if old ~= 'running' then gather(ZREMS, qkey(queue, 'created.' .. old), m) end
    end
    if new then
        count(queue, new, 1)
        if new ~= 'running' then gather(ZADDS, qkey(queue, 'created.' .. new), at, m) end
    end
end
-- After a task hash was deleted: drop it from the listings, and the queue once it is empty.
local function forget(queue, status, m)
    move(queue, m, nil, status, nil)
    EMPTIED[queue] = true
end
local function setopt(key, name, value)
    if value == '' then
        redis.call('HDEL', key, name)
    else
        redis.call('HSET', key, name, string.sub(value, 2))
    end
end
"""


def _wrap(script: str) -> str:
    """Run a script body as a function, then write what it gathered (see ``flush``)."""
    return (
        f"{_BASE}{_PRELUDE}\nlocal function body()\n{script}\nend\n"
        "local r = body()\nflush()\nreturn r\n"
    )


# ARGV: P, check, then groups of records sharing their fields: queue, name, run_at,
# created_at, status, options?, attempts, k, then k x (id, payload). check is "1" to refuse
# ids already taken, or the name of a flag key (see _CHECK): write nothing if it exists.
# Returns {'ok'}, {'duplicate', id} having written nothing, or {'skipped'}.
_PUSH = """
local P = ARGV[1]
local function zadd(key, list)  -- chunks (see _BASE)
    if #list <= 8000 then
        redis.call('ZADD', key, unpack(list))
        return
    end
    for i = 1, #list, 8000 do
        redis.call('ZADD', key, unpack(list, i, math.min(i + 7999, #list)))
    end
end
local check = ARGV[2]
if check == '1' then
    local seen, i = {}, 3
    while i <= #ARGV do
        local k = tonumber(ARGV[i + 7])
        for j = i + 8, i + 6 + k * 2, 2 do
            local id = ARGV[j]
            if seen[id] or redis.call('EXISTS', P .. 'task:' .. id) == 1 then
                return {'duplicate', id}
            end
            seen[id] = true
        end
        i = i + 8 + k * 2
    end
elseif check ~= '' and redis.call('EXISTS', check) == 1 then
    return {'skipped'}
end
local i, woken, woken_at = 3, {}, {}
while i <= #ARGV do
    local queue, name, run_at, at, status = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
        ARGV[i + 4]
    local options, attempts, k = ARGV[i + 5], ARGV[i + 6], tonumber(ARGV[i + 7])
    local seq = redis.call('INCRBY', P .. 'seq', k) - k
    local extra = {}
    if options ~= '' then extra[1] = 'options'; extra[2] = string.sub(options, 2) end
    if attempts ~= '0' then extra[#extra + 1] = 'attempts'; extra[#extra + 1] = attempts end
    local listed, n = {}, 0  -- (score, member) pairs: run_at for waiting, at for the listing
    local ids = {}
    local taskp = P .. 'task:'
    for j = i + 8, i + 6 + k * 2, 2 do
        local id = ARGV[j]
        seq = seq + 1
        local s = string.format('%016x', seq)
        redis.call('HSET', taskp .. id, 'id', id, 'queue', queue, 'name', name,
            'payload', ARGV[j + 1], 'run_at', run_at, 'created_at', at, 'status', status,
            'seq', s, unpack(extra))
        n = n + 2
        listed[n - 1] = at
        listed[n] = s .. ':' .. id
        if status == 'running' then ids[#ids + 1] = id end
    end
    local q = P .. 'q:' .. queue .. ':'
    if status == 'pending' or status == 'scheduled' or status == 'retrying' then
        local waiting = {}
        for j = 1, n, 2 do waiting[j] = run_at; waiting[j + 1] = listed[j + 1] end
        zadd(q .. 'waiting', waiting)
    end
    if status == 'running' then  -- never expires, like a lease nobody holds
        local keeper = string.rep('~', 80)  -- KEEPER
        for _, id in ipairs(ids) do
            redis.call('ZADD', q .. 'running', '+inf', keeper, '+inf', id)
        end
    else
        zadd(q .. 'created.' .. status, listed)
    end
    if redis.call('HINCRBY', q .. 'counts', status, k) == k then
        redis.call('SADD', P .. 'queues', queue)  -- maybe the queue's first task
    end
    woken[queue] = (woken[queue] or 0) + k
    woken_at[queue] = at
    i = i + 8 + k * 2
end
for queue, n in pairs(woken) do  -- wake (see _BASE), inlined
    local key = P .. 'q:' .. queue .. ':wake'
    local room = 8 - redis.call('LLEN', key)
    if room > 0 then
        local tokens = {}
        for t = 1, math.min(n, room) do tokens[t] = woken_at[queue] end
        redis.call('RPUSH', key, unpack(tokens))
    end
end
return {'ok'}
"""

# ARGV: P, flag, then ids. Sets the flag key and returns the first id already taken (or
# repeated), else returns "". Runs first in a transaction of several _PUSH calls, so that a
# taken id anywhere means none of them writes.
_CHECK = """
local seen = {}
for i = 3, #ARGV do
    local id = ARGV[i]
    if seen[id] or redis.call('EXISTS', tkey(id)) == 1 then
        redis.call('SET', ARGV[2], '1')
        return id
    end
    seen[id] = true
end
return ''
"""

# ARGV: P, n, then n x (id, queue, name, payload, run_at, created_at, status, options?,
# attempts), then k and k x (record index, idempotency key, until ('u': a unique key, held
# while its task waits or runs), ttl ms). The push of
# records that carry idempotency keys (``_PUSH`` is the fast path for those that do not).
# Returns {'ok', then the id and holder id of each record whose idempotency key was held (not
# written)}, or {'duplicate', id} having written nothing.
_PUSH_KEYED = """
local n = tonumber(ARGV[2])
local seen = {}
for i = 0, n - 1 do
    local id = ARGV[3 + i * 9]
    if seen[id] or redis.call('EXISTS', tkey(id)) == 1 then return {'duplicate', id} end
    seen[id] = true
end
local ok, todo, keyed, k0 = {'ok'}, {}, {}, 3 + n * 9
for j = 0, tonumber(ARGV[k0] or '0') - 1 do
    keyed[tonumber(ARGV[k0 + 1 + j * 4])] = k0 + 2 + j * 4
end
for i = 0, n - 1 do
    local b, kb = 3 + i * 9, keyed[i]
    local held = kb and redis.call('HMGET', P .. 'idem:' .. ARGV[kb], 'id', 'until') or {}
    local taken = false
    if held[1] and held[2] == 'u' then  -- a unique key: taken while its task waits or runs
        local st = redis.call('HGET', tkey(held[1]), 'status')
        taken = st and (WAITING[st] or st == 'running') or false
    elseif held[1] then
        taken = tonumber(held[2]) > tonumber(ARGV[b + 5])
    end
    if taken then
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
local woken = {}
for _, i in ipairs(todo) do
    local b = 3 + i * 9
    local id, queue, status, at = ARGV[b], ARGV[b + 1], ARGV[b + 6], ARGV[b + 5]
    local key = tkey(id)
    seq = seq + 1
    local m = member(string.format('%016x', seq), id)
    redis.call('HSET', key, 'id', id, 'queue', queue, 'name', ARGV[b + 2],
        'payload', ARGV[b + 3], 'run_at', ARGV[b + 4], 'created_at', at, 'status', status,
        'attempts', ARGV[b + 8], 'seq', string.format('%016x', seq))
    setopt(key, 'options', ARGV[b + 7])
    if WAITING[status] then
        redis.call('ZADD', qkey(queue, 'waiting'), ARGV[b + 4], m)
    elseif status == 'running' then  -- never expires, like a lease nobody holds
        redis.call('ZADD', qkey(queue, 'running'), '+inf', KEEPER, '+inf', id)
    end
    move(queue, m, at, nil, status)
    redis.call('SADD', P .. 'queues', queue)
    woken[queue] = {(woken[queue] or {0})[1] + 1, at}
end
for queue, w in pairs(woken) do wake(queue, w[1], w[2]) end
return ok
"""

# ARGV: P, queue, now, limit, lease_until, owner, max_running ('' = no cap), alone_from
# ('' = none: see Backend.claim), then optionally a list key and the lease in seconds: a
# wake-up token found there (see wake) later than now replaces now, and the lease runs from
# it. Returns now and lease_until as used, then the claimed records as HGETALL lists, oldest
# first, read before the claim: the caller applies it (status running, attempts + 1,
# lease_until, owner, updated_at).
_CLAIM = """
local P, queue, now, lease, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[5], ARGV[6]
local alone = ARGV[8] ~= '' and tonumber(ARGV[8])
if ARGV[9] then
    local token = redis.call('LPOP', ARGV[9])
    if token and tonumber(token) > tonumber(now) then
        now = token
        lease = string.format('%.17g', tonumber(token) + tonumber(ARGV[10]))
    end
end
local function many(cmd, key, list)  -- chunks (see _BASE)
    for i = 1, #list, 4000 do
        redis.call(cmd, key, unpack(list, i, math.min(i + 3999, #list)))
    end
end
local q = P .. 'q:' .. queue .. ':'
local running = q .. 'running'
local keeper = string.rep('~', 80)  -- KEEPER
local limit = tonumber(ARGV[4])
if ARGV[7] ~= '' then
    local held = redis.call('ZCARD', running)
    if redis.call('ZSCORE', running, keeper) then held = held - 1 end
    limit = math.min(limit, tonumber(ARGV[7]) - held)
end
local out = {now, lease}
if limit <= 0 then return out end
local waiting = q .. 'waiting'
local due = redis.call('ZRANGEBYSCORE', waiting, '-inf', now, 'LIMIT', 0, limit)
if #due == 0 then return out end
local leased, left, n, taken = {'+inf', keeper}, {}, 0, {}
for _, m in ipairs(due) do
    local id = string.sub(m, 18)
    local key = P .. 'task:' .. id
    local h = redis.call('HGETALL', key)
    local status, attempts, crashes
    for j = 1, #h, 2 do
        local f = h[j]
        if f == 'status' then status = h[j + 1]
        elseif f == 'attempts' then attempts = h[j + 1]
        elseif f == 'crashes' then crashes = h[j + 1] end
    end
    -- A repeat crasher is claimed alone (see Backend.claim).
    local crasher = alone and tonumber(crashes or '0') >= alone
    if crasher and n > 0 then break end
    taken[#taken + 1] = m
    if status == 'pending' or status == 'scheduled' or status == 'retrying' then
        local a = string.format('%d', (attempts and tonumber(attempts) or 0) + 1)
        redis.call('HSET', key, 'status', 'running', 'attempts', a, 'lease_until', lease,
            'owner', owner, 'updated_at', now)
        leased[#leased + 1] = lease
        leased[#leased + 1] = id
        local l = left[status]
        if not l then l = {}; left[status] = l end
        l[#l + 1] = m
        n = n + 1
        out[#out + 1] = h
        if crasher then break end
    end
end
many('ZREM', waiting, taken)
if n > 0 then
    many('ZADD', running, leased)
    for status, l in pairs(left) do
        many('ZREM', q .. 'created.' .. status, l)
        redis.call('HINCRBY', q .. 'counts', status, -#l)
    end
    redis.call('HINCRBY', q .. 'counts', 'running', n)
end
if #due == limit then  -- more may be due: wake another idle worker to help (see wake)
    local wake = q .. 'wake'
    if redis.call('LLEN', wake) < 8 then redis.call('RPUSH', wake, now) end
end
return out
"""

# ARGV: P, n, then n x (id, token, status, now, run_at, error?, reason?, result?,
# expires_at ('' = forget the record), payload?, attempt?). status 'retrying' means RETRY;
# attempt is a line appended to the task's history.
# Returns the ids refused because the record is not running under that token.
# lease_until and owner are left in the hash: they mean nothing once status is not running.
_SETTLE = """
local refused, accepted, leases = {}, {}, {}
for i = 0, tonumber(ARGV[2]) - 1 do
    local b = 3 + i * 11
    local rec = redis.call('HMGET', tkey(ARGV[b]), 'status', 'attempts', 'queue', 'seq',
        'created_at', 'error', 'history')
    if rec[1] ~= 'running' or tonumber(rec[2]) ~= tonumber(ARGV[b + 1]) then
        refused[#refused + 1] = ARGV[b]
    else
        accepted[#accepted + 1] = {b, rec}
        gather(leases, qkey(rec[3], 'running'), ARGV[b])
    end
end
-- The leases go first: a write that frees memory, after which Redis lets this script finish
-- its writes even at maxmemory (noeviction), so outcomes are stored while submits are refused.
for key, list in pairs(leases) do chunks('ZREM', key, list, 4000) end
for _, a in ipairs(accepted) do
    local b, rec = a[1], a[2]
    local id, status, now = ARGV[b], ARGV[b + 2], ARGV[b + 3]
    local key = tkey(id)
    do
        local queue, m = rec[3], member(rec[4], id)
        local err = ARGV[b + 5]
        if ARGV[b + 8] == '' and status ~= 'retrying' then
            redis.call('DEL', key)
            forget(queue, 'running', m)
        else
            if err == '' and rec[6] then redis.call('HDEL', key, 'error') end
            local fields = {'status', status, 'updated_at', now}
            if err ~= '' then
                fields[#fields + 1] = 'error'
                fields[#fields + 1] = string.sub(err, 2)
            end
            if status == 'retrying' then
                fields[#fields + 1] = 'run_at'
                fields[#fields + 1] = ARGV[b + 4]
                if ARGV[b + 9] ~= '' then
                    fields[#fields + 1] = 'payload'
                    fields[#fields + 1] = string.sub(ARGV[b + 9], 2)
                end
                gather(ZADDS, qkey(queue, 'waiting'), ARGV[b + 4], m)
            else
                fields[#fields + 1] = 'finished_at'
                fields[#fields + 1] = now
                fields[#fields + 1] = 'expires_at'
                fields[#fields + 1] = ARGV[b + 8]
                if ARGV[b + 6] ~= '' then
                    fields[#fields + 1] = 'reason'
                    fields[#fields + 1] = string.sub(ARGV[b + 6], 2)
                end
                if ARGV[b + 7] ~= '' then
                    fields[#fields + 1] = 'result'
                    fields[#fields + 1] = string.sub(ARGV[b + 7], 2)
                end
                gather(ZADDS, P .. 'expiry', ARGV[b + 8], id)
            end
            if ARGV[b + 10] ~= '' then
                fields[#fields + 1] = 'history'
                fields[#fields + 1] = (rec[7] or '') .. string.sub(ARGV[b + 10], 2) .. '\\n'
            end
            redis.call('HSET', key, unpack(fields))
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
        gather(ZADDS, qkey(rec[3], 'running'), ARGV[2], id)
        codes[#codes + 1] = rec[4] == '1' and 2 or 1
    end
end
return codes
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
if requeued > 0 then wake(queue, requeued, now) end
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

# ARGV: P, now, n, then n ids. Sends failed, cancelled and dead tasks back to pending
# (attempts kept: it is the fencing token). Returns id, queue of each task requeued.
_REQUEUE = """
local now = ARGV[2]
local done, queues = {}, {}
for i = 1, tonumber(ARGV[3]) do
    local id = ARGV[3 + i]
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
        queues[queue] = (queues[queue] or 0) + 1
    end
end
for queue, n in pairs(queues) do wake(queue, n, now) end
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
    local members
    if status == 'running' then
        members = redis.call('ZRANGE', qkey(queue, 'running'), 0, left - 1)
    else
        members = redis.call('ZRANGE', qkey(queue, 'created.' .. status), 0, left - 1)
    end
    for _, m in ipairs(members) do
        if m == KEEPER then
            left = left + 1  -- not a task
        else
            if status == 'running' then
                redis.call('DEL', tkey(m))
                redis.call('ZREM', qkey(queue, 'running'), m)
            else
                local id = string.sub(m, 18)
                redis.call('DEL', tkey(id))
                if WAITING[status] then
                    redis.call('ZREM', qkey(queue, 'waiting'), m)
                else
                    redis.call('ZREM', P .. 'expiry', id)
                end
            end
            forget(queue, status, m)
        end
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
local statuses = {}
for i = 6, #ARGV do statuses[#statuses + 1] = ARGV[i] end
if #statuses == 0 then
    statuses = {'pending', 'scheduled', 'retrying', 'running', 'succeeded', 'failed',
        'cancelled', 'dead'}
end
local page = {}
if #statuses == 1 and statuses[1] ~= 'running' then
    local key = qkey(queue, 'created.' .. statuses[1])
    for _, m in ipairs(redis.call(range, key, offset, offset + limit - 1)) do
        page[#page + 1] = string.sub(m, 18)
    end
else
    -- Merge by (created_at, seq): the page lies within the first offset + limit of each
    -- listing; running tasks (a few per worker) come from the running zset.
    local all = {}
    for _, status in ipairs(statuses) do
        if status == 'running' then
            for _, id in ipairs(redis.call('ZRANGE', qkey(queue, 'running'), 0, -1)) do
                local rec = redis.call('HMGET', tkey(id), 'created_at', 'seq', 'status')
                if rec[3] == 'running' then
                    all[#all + 1] = {tonumber(rec[1]), tonumber(rec[2], 16), id}
                end
            end
        else
            local key = qkey(queue, 'created.' .. status)
            local flat = redis.call(range, key, 0, offset + limit - 1, 'WITHSCORES')
            for j = 1, #flat, 2 do
                local m = flat[j]
                all[#all + 1] = {tonumber(flat[j + 1]), tonumber(string.sub(m, 1, 16), 16),
                    string.sub(m, 18)}
            end
        end
    end
    table.sort(all, function(a, b)  -- by (created_at, seq), like the zsets
        local x, y = a, b
        if newest then x, y = b, a end
        if x[1] ~= y[1] then return x[1] < y[1] end
        return x[2] < y[2]
    end)
    for i = offset + 1, math.min(#all, offset + limit) do page[#page + 1] = all[i][3] end
end
local out = {}
for _, id in ipairs(page) do
    local h = redis.call('HGETALL', tkey(id))
    if #h > 0 then out[#out + 1] = h end
end
return out
"""

# ARGV: P, now, n, then n ids. Makes later-due waiting records due now; returns
# {id, queue, ...} of those released.
_RELEASE = """
local now, released, woken = ARGV[2], {}, {}
for i = 1, tonumber(ARGV[3]) do
    local id = ARGV[3 + i]
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
        woken[queue] = (woken[queue] or 0) + 1
    end
end
for queue, k in pairs(woken) do wake(queue, k, now) end
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

#: The scripts' full sources by name.
SCRIPTS = {
    "push": _PUSH,  # the producers' hot path: no shared prelude (a few us per call)
    "check": _BASE + _CHECK,
    "claim": _CLAIM,  # an idle worker's wake-up: self-contained, like push
    "settle": _wrap(_SETTLE),
    "heartbeat": _wrap(_HEARTBEAT),
    "reap": _wrap(_REAP),
    "cancel": _wrap(_CANCEL),
    "purge": _wrap(_PURGE),
    "requeue": _wrap(_REQUEUE),
    "purge_queue": _wrap(_PURGE_QUEUE),
    "list": _wrap(_LIST),
    "push_keyed": _wrap(_PUSH_KEYED),
    "release": _wrap(_RELEASE),
    "progress": _wrap(_PROGRESS),
    "beat": _wrap(_BEAT),
}
