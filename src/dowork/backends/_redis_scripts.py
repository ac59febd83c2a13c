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


# Reading stored records. A task hash may have been written by an older or hostile writer, so
# every script reads a record through these checks before it writes anything: a record that
# fails them is left alone (no script stops half way), and the claim, the settle and the reaper
# move it to the dead letters with reason malformed (``bury``), its other fields kept for
# ``dowork inspect``. ``CHECKS`` is the table of the stored fields and their tests; Python adds
# the check Lua cannot make cheaply (text that is not UTF-8: see redis.py), and the worker
# checks the payload and options, as on every backend.
# Needs only P.
_CHECKS = r"""
-- A finite number written as Python's repr writes one ("12", "1.5", "1e+16"), or nil: Lua's
-- tonumber alone takes "nan", "inf", "0x1f" and spaces, which Redis and Python refuse.
local function decimal(s)
    local x = tonumber(s)
    if not x or x ~= x or x == math.huge or x == -math.huge or #s > 40
        or string.find(s, '[^0-9.eE+-]')  -- (spaces, hex, "inf", "nan")
    then
        return nil
    end
    return x
end
local function count_ok(s) return #s <= 15 and string.find(s, '^%d+$') ~= nil end
local function seq_ok(s) return #s == 16 and not string.find(s, '[^0-9a-f]') end
local STATUSES = {pending = true, scheduled = true, retrying = true, reserved = true,
    running = true, succeeded = true, failed = true, cancelled = true, dead = true}
-- The statuses of a leased task (claimed: reserved until its function starts, then running);
-- both are listed from the running zset, which holds every lease.
local LEASED = {reserved = true, running = true}
-- A list of at most 16 lease tokens (see charge).
local function tokens_ok(s) return #s <= 16 * 16 and string.find(s, '^[%d,]*$') ~= nil end
local LEVELS = {}
for p = -9, 9 do LEVELS[tostring(p)] = true end
-- The stored fields a worker reads, and what each must hold when present (see NEEDED).
local CHECKS = {
    status = function(s) return STATUSES[s] end,
    run_at = decimal, created_at = decimal, updated_at = decimal, finished_at = decimal,
    slot = decimal,
    attempts = count_ok, crashes = count_ok, started = count_ok, lost = count_ok,
    charged = tokens_ok,
    priority = function(s) return LEVELS[s] end,
    seq = seq_ok,
}
local NEEDED = {'id', 'queue', 'name', 'payload', 'status', 'run_at', 'created_at', 'seq'}
-- A HGETALL list as a table of fields.
local function fields(h)
    local v = {}
    for j = 1, #h, 2 do v[h[j]] = h[j + 1] end
    return v
end
-- A stored value as an error message shows it: printable, at most 40 characters.
local function shown(s)
    local cut = string.gsub(string.sub(s, 1, 40), '[^%w%p ]', '?')
    if #s > 40 then cut = cut .. '...' end
    return "'" .. cut .. "'"
end
local NEED = {}
for _, f in ipairs(NEEDED) do NEED[f] = true end
-- Why the record (HGETALL list h) of id in queue cannot be read, or nil if it can: one pass
-- over its fields (a claim reads every record it hands out). A record made of a malformed
-- inbox entry says why in its malformed field (see inbox_put).
local function unreadable(h, id, queue)
    local got = 0
    for j = 1, #h, 2 do
        local f, s = h[j], h[j + 1]
        local test = CHECKS[f]
        if test then
            if not test(s) then return f .. ' is ' .. shown(s) end
        elseif f == 'malformed' then
            return s
        end
        if NEED[f] then
            got = got + 1
            if f == 'id' and s ~= id then
                return 'id ' .. shown(s) .. ' does not match its key'
            elseif f == 'queue' and queue and s ~= queue then
                return 'queue ' .. shown(s) .. ' is not the queue holding it'
            end
        end
    end
    if got < #NEEDED then
        local v = fields(h)
        for _, f in ipairs(NEEDED) do
            if not v[f] then return f .. ' is missing' end
        end
    end
    return nil
end
-- Move the record of id (listing member m, or nil if its seq cannot be read; fields v) of
-- queue to the dead letters with reason malformed (why: see unreadable), kept until expires.
-- old is the status it is counted in (a leased one, a waiting one, or nil: the listing holding
-- m says). Its other fields stay as they were; its queue, and a seq or created_at that
-- cannot be read, are replaced, so that it is listed and counted like any dead letter.
local function bury(queue, id, m, v, why, old, now, expires)
    local q = P .. 'q:' .. queue .. ':'
    local key = P .. 'task:' .. id
    if not old and m then
        for _, s in ipairs({'pending', 'scheduled', 'retrying'}) do
            if redis.call('ZSCORE', q .. 'created.' .. s, m) then old = s; break end
        end
    end
    if old then
        if not LEASED[old] and m then redis.call('ZREM', q .. 'created.' .. old, m) end
        redis.call('HINCRBY', q .. 'counts', old, -1)
    end
    if not m then m = string.format('%016x', redis.call('INCR', P .. 'seq')) .. ':' .. id end
    local at = decimal(v.created_at) and v.created_at or now
    redis.call('HSET', key, 'status', 'dead', 'reason', 'malformed',
        'error', 'malformed record: ' .. why, 'queue', queue, 'seq', string.sub(m, 1, 16),
        'created_at', at,
        'updated_at', now, 'finished_at', now, 'expires_at', expires)
    redis.call('ZADD', q .. 'created.dead', at, m)
    if redis.call('HINCRBY', q .. 'counts', 'dead', 1) == 1 then
        redis.call('SADD', P .. 'queues', queue)
    end
    redis.call('ZADD', P .. 'expiry', expires, id)
end
"""

# The inbox (see the key layout in redis.py): ``submit()`` appends a pending task there with
# plain commands (RPUSH, SADD), no script, and an idle worker pops it straight into ``taken``
# and starts it before any script runs (``_TAKE`` then records the lease). Every script that
# reads or writes a queue's waiting tasks drains its inbox first, so that everything else sees
# the tasks as if ``_PUSH`` had stored them; wake-up tokens ("t" then a time) go there too.
# Self-contained: needs only P.
_INBOX = (
    _CHECKS
    + r"""
-- An entry: "r" id NUL name NUL created_at NUL options ("" or "=" json) NUL payload; nil if
-- malformed.
local function inbox_fields(e)
    if string.sub(e, 1, 1) ~= 'r' then return nil end
    local f, pos = {}, 2
    for i = 1, 4 do
        local z = string.find(e, '\0', pos, true)
        if not z then return nil end
        f[i] = string.sub(e, pos, z - 1)
        pos = z + 1
    end
    f[5] = string.sub(e, pos)
    if f[1] == '' or not decimal(f[3]) then return nil end
    return f
end
-- Store entry e of the queue's inbox as a task: waiting, or (owner given) running, leased
-- to owner until lease with attempts 1, as a claim would have. A malformed entry, or one of
-- an id already taken, becomes a task of no known name holding the entry as its payload and
-- saying why in its malformed field, for the next claim to dead-letter (see bury).
-- Returns the entry's time (0 for such junk), its id and its status.
local function inbox_put(queue, e, owner, lease)
    local f, why = inbox_fields(e), 'inbox entry that cannot be read'
    if f and redis.call('EXISTS', P .. 'task:' .. f[1]) == 1 then  -- (written by hand)
        f, why = nil, 'inbox entry of a task id in use (' .. shown(f[1]) .. ')'
    end
    local s = string.format('%016x', redis.call('INCR', P .. 'seq'))
    local run_at = f and f[3]
    if not f then  -- (waiting, due at once, never running: the next claim dead-letters it)
        owner, run_at = nil, '0'
        local t = redis.call('TIME')
        local at = t[1] .. '.' .. string.format('%06d', t[2])
        f = {'junk-' .. s, '<malformed inbox entry>', at, '', e}
        redis.call('HSET', P .. 'task:' .. f[1], 'malformed', why)
    end
    local id, at = f[1], f[3]
    local key, q, m = P .. 'task:' .. id, P .. 'q:' .. queue .. ':', s .. ':' .. id
    local status = owner and 'running' or 'pending'
    redis.call('HSET', key, 'id', id, 'queue', queue, 'name', f[2], 'payload', f[5],
        'run_at', run_at, 'created_at', at, 'status', status, 'seq', s)
    if f[4] ~= '' then redis.call('HSET', key, 'options', string.sub(f[4], 2)) end
    if owner then
        redis.call('HSET', key, 'attempts', '1', 'started', '1', 'lease_until', lease,
            'owner', owner, 'updated_at', at)  -- (popped and started at once: see _TAKE)
        redis.call('ZADD', q .. 'running', '+inf', string.rep('~', 80), lease, id)  -- KEEPER
    else
        redis.call('ZADD', q .. 'waiting', run_at, m)
        redis.call('ZADD', q .. 'created.pending', at, m)
    end
    if redis.call('HINCRBY', q .. 'counts', status, 1) == 1 then
        redis.call('SADD', P .. 'queues', queue)
    end
    return run_at, id, status
end
-- Wake up to n idle workers of the queue: a token in its inbox, unless it holds 8 entries
-- already (so pushes while every worker is busy cost nothing more). A token is a time (the
-- caller's now) by which the work it announces was due: the claim that drains it uses it as
-- its now when later.
local function inbox_wake(queue, n, at)
    local key = P .. 'q:' .. queue .. ':inbox'
    local room = 8 - redis.call('LLEN', key)
    if room > 0 then
        local tokens = {}
        for i = 1, math.min(n, room) do tokens[i] = 't' .. at end
        redis.call('RPUSH', key, unpack(tokens))
    end
end
-- Store entry e, popped from the inbox into taken, as running for owner until lease; garbage
-- waits instead (see inbox_put), with a token to wake a worker that dead-letters it. Returns
-- its status.
local function inbox_taken(queue, e, owner, lease)
    local at, _, status = inbox_put(queue, e, owner, lease)
    if status == 'pending' then inbox_wake(queue, 1, at) end
    return status
end
-- Drain the queue's inbox into waiting tasks (at most 1000 entries, oldest first), and store
-- the entries popped by workers that have not taken them yet (taken) as running, leased to
-- no one ('~') for TRANSIT seconds of Redis's clock: the popping worker takes them over (see
-- _TAKE), and the reaper requeues those of a worker that died in between. Returns the latest
-- time of the drained tokens and waiting tasks (a time the pushers saw them due), or nil.
local TRANSIT = 60
local function drain(queue)
    local q = P .. 'q:' .. queue .. ':'
    local latest = nil
    local entries = redis.call('LRANGE', q .. 'inbox', 0, 999)
    if #entries > 0 then
        redis.call('LTRIM', q .. 'inbox', #entries, -1)
        for _, e in ipairs(entries) do
            local at
            if string.sub(e, 1, 1) == 't' then
                at = string.sub(e, 2)
            else
                at = inbox_put(queue, e)
            end
            if decimal(at) and (not latest or tonumber(at) > tonumber(latest)) then
                latest = at
            end
        end
    end
    local popped = redis.call('LRANGE', q .. 'taken', 0, -1)
    if #popped > 0 then
        redis.call('DEL', q .. 'taken')
        local t = redis.call('TIME')
        local lease = tostring(tonumber(t[1]) + TRANSIT)
        for _, e in ipairs(popped) do
            if string.sub(e, 1, 1) ~= 't' then inbox_taken(queue, e, '~', lease) end
        end
    end
    return latest
end
local function drain_all()
    for _, queue in ipairs(redis.call('SMEMBERS', P .. 'queues')) do drain(queue) end
end
"""
)

# What every script needs; _PUSH (the producers' hot path) needs only this.
_BASE = (
    """
local P = ARGV[1]
"""
    + _INBOX
    + """
local WAITING = {pending = true, scheduled = true, retrying = true}
local function tkey(id) return P .. 'task:' .. id end
local function qkey(queue, kind) return P .. 'q:' .. queue .. ':' .. kind end
-- The waiting zset of a task of priority p (its hash field: absent or '0' is the plain one).
local function wkey(queue, p)
    if not p or p == '0' then return qkey(queue, 'waiting') end
    return qkey(queue, 'waiting:' .. p)
end
-- A task of priority p enters its waiting zset again: list its level (claims drop a level
-- whose zset they find gone).
local function level(queue, p)
    if p and p ~= '0' then redis.call('SADD', qkey(queue, 'levels'), p) end
end
local function chunks(cmd, key, list, step)
    for i = 1, #list, step do
        redis.call(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
    end
end
-- The running zset keeps this member (longer than zset-max-listpack-value, 64 by default),
-- so Redis stores it as a skiplist from the start: leases churn in batches, and every insert
-- into a small (listpack) zset parses the scores before it, several times slower.
local KEEPER = string.rep('~', 80)
"""
)

# The lanes of concurrency keys (see the key layout in redis.py). q is the queue's key prefix
# ("P:q:Q:") and k a concurrency key; a lane is the key's waiting tasks, a zset per priority.
# Every lane with waiting tasks is awake (in lanes, its earliest run_at in lanes:due) or asleep
# (lanes:later, its turn in lanes:turns); a lane that lost its last task stays in lanes with
# its turn, listed in lanes:drained, until the next claim forgets it (see Backend.claim).
_LANES = """
local function lkey(q, p, k) return q .. 'lane:' .. p .. ':' .. k end
-- The priorities of k's lane: '0', then the others listed in lanes:levels.
local function lane_levels(q, k)
    local ls, s = {'0'}, redis.call('HGET', q .. 'lanes:levels', k)
    if s then for p in string.gmatch(s, '%S+') do ls[#ls + 1] = p end end
    return ls
end
-- A task of priority p (false: 0) enters k's lane: list the level.
local function lane_level(q, k, p)
    if not p or p == '0' then return end
    local s = redis.call('HGET', q .. 'lanes:levels', k)
    if not s then
        redis.call('HSET', q .. 'lanes:levels', k, p)
    elseif not string.find(' ' .. s .. ' ', ' ' .. p .. ' ', 1, true) then
        redis.call('HSET', q .. 'lanes:levels', k, s .. ' ' .. p)
    end
end
-- A waiting task (run_at at) entered k's lane: the lane's earliest run_at follows, and a lane
-- that had no waiting task is awake (with the turn it kept, or never served).
local function lane_in(q, k, at)
    local due = q .. 'lanes:due'
    local old = redis.call('ZSCORE', due, k)
    if not old then
        old = redis.call('ZSCORE', q .. 'lanes:later', k)
        if old then due = q .. 'lanes:later' end
    end
    if not old then
        redis.call('ZADD', q .. 'lanes', 'NX', 0, k)
        redis.call('ZADD', due, at, k)
    elseif tonumber(at) < tonumber(old) then
        redis.call('ZADD', due, at, k)
    end
end
-- The earliest run_at (a score string) of k's waiting tasks, or nil; unlists empty levels.
local function lane_head(q, k)
    local ls, kept, best = lane_levels(q, k), {}, nil
    for _, p in ipairs(ls) do
        local h = redis.call('ZRANGE', lkey(q, p, k), 0, 0, 'WITHSCORES')
        if h[2] then
            if p ~= '0' then kept[#kept + 1] = p end
            if not best or tonumber(h[2]) < tonumber(best) then best = h[2] end
        end
    end
    if #kept < #ls - 1 then
        if #kept == 0 then
            redis.call('HDEL', q .. 'lanes:levels', k)
        else
            redis.call('HSET', q .. 'lanes:levels', k, table.concat(kept, ' '))
        end
    end
    return best
end
-- A waiting task (run_at at) left k's lane (outside a claim): the earliest run_at follows;
-- a lane left empty is listed in lanes:drained, awake with its turn, for the next claim.
local function lane_out(q, k, at)
    local due, asleep = q .. 'lanes:due', false
    local old = redis.call('ZSCORE', due, k)
    if not old then
        old = redis.call('ZSCORE', q .. 'lanes:later', k)
        if old then due, asleep = q .. 'lanes:later', true end
    end
    if not old then  -- (not listed: made consistent)
        redis.call('ZADD', q .. 'lanes', 'NX', 0, k)
    elseif tonumber(at) > tonumber(old) then
        return  -- not its earliest task
    end
    local head = lane_head(q, k)
    if head then
        redis.call('ZADD', due, head, k)
        return
    end
    redis.call('ZREM', due, k)
    if asleep then
        local turn = redis.call('HGET', q .. 'lanes:turns', k) or 0
        redis.call('HDEL', q .. 'lanes:turns', k)
        redis.call('ZADD', q .. 'lanes', turn, k)
    end
    redis.call('SADD', q .. 'lanes:drained', k)
end
"""

_PRELUDE = """
-- seq is stored as 16 hex digits, so a listing member is "seq:id" (ordered by push).
local function member(seq, id) return seq .. ':' .. id end
-- Count changes and listing-zset moves are gathered while a script runs and written once at
-- its end (flush), one HINCRBY per queue and status and one ZREM/ZADD per key, instead of a
-- few commands per task: that is most of the Redis CPU a task costs.
local DELTAS, ZREMS, ZADDS, EMPTIED, KEYRUN = {}, {}, {}, {}, {}
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
    for key, by in pairs(KEYRUN) do  -- running tasks per concurrency key (see running_key)
        for k, delta in pairs(by) do
            if delta ~= 0 and redis.call('HINCRBY', key, k, delta) <= 0 then
                redis.call('HDEL', key, k)
            end
        end
    end
    for queue in pairs(EMPTIED) do  -- a queue whose last task went is forgotten
        local counts = qkey(queue, 'counts')
        local empty = true
        for _, n in ipairs(redis.call('HVALS', counts)) do
            if tonumber(n) ~= 0 then empty = false; break end
        end
        if empty and redis.call('EXISTS', qkey(queue, 'inbox'), qkey(queue, 'taken')) == 0 then
            -- (with no task left, no turn is worth remembering either)
            redis.call('DEL', counts, qkey(queue, 'running'),
                qkey(queue, 'levels'), qkey(queue, 'turn'), qkey(queue, 'keyrun'),
                qkey(queue, 'lanes'), qkey(queue, 'lanes:due'), qkey(queue, 'lanes:later'),
                qkey(queue, 'lanes:turns'), qkey(queue, 'lanes:levels'),
                qkey(queue, 'lanes:drained'))
            redis.call('SREM', P .. 'queues', queue)
        end
    end
    DELTAS, ZREMS, ZADDS, EMPTIED, KEYRUN = {}, {}, {}, {}, {}
end
-- A task (zset member m, created_at at) leaves status old and/or enters status new (nil:
-- none): counts and the per-status listing zsets follow (written at flush). Leased tasks
-- are listed from the running zset, so they have no listing zset of their own.
local function move(queue, m, at, old, new)
    if old then
        count(queue, old, -1)
        if not LEASED[old] then gather(ZREMS, qkey(queue, 'created.' .. old), m) end
    end
    if new then
        count(queue, new, 1)
        if not LEASED[new] then gather(ZADDS, qkey(queue, 'created.' .. new), at, m) end
    end
end
-- After a task hash was deleted: drop it from the listings, and the queue once it is empty.
local function forget(queue, status, m)
    move(queue, m, nil, status, nil)
    EMPTIED[queue] = true
end
-- A running task of concurrency key k (false: none) of the queue stops running (delta -1) or
-- starts (+1): the queue's keyrun hash follows (written at flush).
local function running_key(queue, k, delta)
    if not k then return end
    local key = qkey(queue, 'keyrun')
    local by = KEYRUN[key]
    if not by then by = {}; KEYRUN[key] = by end
    by[k] = (by[k] or 0) + delta
end
-- The waiting zset of a task of priority p (false: 0) and concurrency key k (false: none).
local function zkey(queue, p, k)
    if not k then return wkey(queue, p) end
    return qkey(queue, 'lane:' .. (p or '0') .. ':' .. k)
end
-- A waiting task of priority p and key k (run_at at) entered its zset: list its level, and
-- its key's lane (see lane_in).
local function entered(queue, p, k, at)
    if not k then
        level(queue, p)
    else
        lane_level(qkey(queue, ''), k, p)
        lane_in(qkey(queue, ''), k, at)
    end
end
local function setopt(key, name, value)
    if value == '' then
        redis.call('HDEL', key, name)
    else
        redis.call('HSET', key, name, string.sub(value, 2))
    end
end
"""


# A Redis at maxmemory with noeviction refuses a script's first write if that command may
# grow memory (HSET, ZADD...), but lets every write through once the script has written: a
# worker's own scripts (claim, heartbeat, beat, reap, drain) start with a DEL of a key that
# never exists, so that a full Redis can always be drained. They move tasks between
# structures (a few bytes more at most) and settlements free memory; only producers'
# pushes are refused, as BackendFull.
_MAY_FILL = "redis.call('DEL', P .. 'never')  -- see _MAY_FILL\n"


def _wrap(script: str, *, drains: bool = True, may_fill: bool = False) -> str:
    """Run a script body as a function, then write what it gathered (see ``flush``).

    A script that ``drains`` first moves every queue's inbox into the store (see ``_INBOX``),
    so that it sees the tasks pushed there; those that only touch running tasks (settle,
    heartbeat, progress) or finished ones need not. One that ``may_fill`` runs at maxmemory
    too (see ``_MAY_FILL``).
    """
    first = (_MAY_FILL if may_fill else "") + ("drain_all()\n" if drains else "")
    return (
        f"{_BASE}{_LANES}{_PRELUDE}\nlocal function body()\n{script}\nend\n"
        f"{first}local r = body()\nflush()\nreturn r\n"
    )


# ARGV: P, queue ('' = every queue). Drains the inbox (see _INBOX); returns 1 if a queue's
# inbox still holds entries (a drain takes 1000 at most), else 0.
_DRAIN = """
local queues = {ARGV[2]}
if ARGV[2] == '' then queues = redis.call('SMEMBERS', P .. 'queues') end
local more = 0
for _, queue in ipairs(queues) do
    drain(queue)
    if redis.call('EXISTS', qkey(queue, 'inbox')) == 1 then more = 1 end
end
return more
"""

# ARGV: P, queue, entry, owner, lease_until, now. A worker popped entry (a task) from the
# queue's inbox into taken and started it: lease it to owner until lease_until, with attempts
# 1, as a claim would have. Returns 1, 2 if it is to be cancelled already, or 0 if the task is
# not this worker's to run any more (drained, then reaped after TRANSIT, or wiped).
_TAKE = """
local P, queue, e, owner, lease, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
"""
_TAKE += _INBOX
_TAKE += """
local q = P .. 'q:' .. queue .. ':'
local f = inbox_fields(e)
if redis.call('LREM', q .. 'taken', 1, e) == 1 then
    if inbox_taken(queue, e, owner, lease) ~= 'running' then return 0 end  -- (garbage)
    redis.call('HSET', P .. 'task:' .. f[1], 'updated_at', now)
    return 1
end
if not f then return 0 end
local key = P .. 'task:' .. f[1]
local h = redis.call('HMGET', key, 'status', 'owner', 'attempts', 'cancel_requested')
if h[1] ~= 'running' or h[2] ~= '~' or h[3] ~= '1' then return 0 end
redis.call('HSET', key, 'owner', owner, 'lease_until', lease, 'updated_at', now)
redis.call('ZADD', q .. 'running', lease, f[1])
if h[4] then return 2 end
return 1
"""


# ARGV: P, check, then groups of records sharing their fields: queue, name, run_at,
# created_at, status, options?, attempts, priority, slot?, concurrency key?, k, then
# k x (id, payload). A priority other than '0' puts the group in its level's waiting zset, a
# concurrency key in its key's lane (see _LANES). check is "1" to refuse ids already taken,
# or the name of a flag key (see _CHECK): write nothing if it exists.
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
        local k = tonumber(ARGV[i + 10])
        for j = i + 11, i + 9 + k * 2, 2 do
            local id = ARGV[j]
            if seen[id] or redis.call('EXISTS', P .. 'task:' .. id) == 1 then
                return {'duplicate', id}
            end
            seen[id] = true
        end
        i = i + 11 + k * 2
    end
elseif check ~= '' and redis.call('EXISTS', check) == 1 then
    return {'skipped'}
end
local i, woken, woken_at = 3, {}, {}
while i <= #ARGV do
    local queue, name, run_at, at, status = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
        ARGV[i + 4]
    local options, attempts, prio, slot = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]
    local ckey = ARGV[i + 9] ~= '' and string.sub(ARGV[i + 9], 2)
    local k = tonumber(ARGV[i + 10])
    local seq = redis.call('INCRBY', P .. 'seq', k) - k
    local extra = {}
    if options ~= '' then extra[1] = 'options'; extra[2] = string.sub(options, 2) end
    if attempts ~= '0' then extra[#extra + 1] = 'attempts'; extra[#extra + 1] = attempts end
    if prio ~= '0' then extra[#extra + 1] = 'priority'; extra[#extra + 1] = prio end
    if slot ~= '' then extra[#extra + 1] = 'slot'; extra[#extra + 1] = string.sub(slot, 2) end
    if ckey then extra[#extra + 1] = 'concurrency_key'; extra[#extra + 1] = ckey end
    local listed, n = {}, 0  -- (score, member) pairs: run_at for waiting, at for the listing
    local ids = {}
    local taskp = P .. 'task:'
    for j = i + 11, i + 9 + k * 2, 2 do
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
        if ckey then  -- the key's lane (see _LANES: lkey, lane_level, lane_in), inlined
            zadd(q .. 'lane:' .. prio .. ':' .. ckey, waiting)
            if prio ~= '0' then
                local lv = redis.call('HGET', q .. 'lanes:levels', ckey)
                if not lv then
                    redis.call('HSET', q .. 'lanes:levels', ckey, prio)
                elseif not string.find(' ' .. lv .. ' ', ' ' .. prio .. ' ', 1, true) then
                    redis.call('HSET', q .. 'lanes:levels', ckey, lv .. ' ' .. prio)
                end
            end
            local due = q .. 'lanes:due'
            local old = redis.call('ZSCORE', due, ckey)
            if not old then
                old = redis.call('ZSCORE', q .. 'lanes:later', ckey)
                if old then due = q .. 'lanes:later' end
            end
            if not old then
                redis.call('ZADD', q .. 'lanes', 'NX', 0, ckey)
                redis.call('ZADD', due, run_at, ckey)
            elseif tonumber(run_at) < tonumber(old) then
                redis.call('ZADD', due, run_at, ckey)
            end
        elseif prio == '0' then
            zadd(q .. 'waiting', waiting)
        else  -- a level of its own, listed in levels (see wkey)
            zadd(q .. 'waiting:' .. prio, waiting)
            redis.call('SADD', q .. 'levels', prio)
        end
    end
    if status == 'running' then  -- never expires, like a lease nobody holds
        local keeper = string.rep('~', 80)  -- KEEPER
        for _, id in ipairs(ids) do
            redis.call('ZADD', q .. 'running', '+inf', keeper, '+inf', id)
        end
        if ckey then redis.call('HINCRBY', q .. 'keyrun', ckey, k) end
    else
        zadd(q .. 'created.' .. status, listed)
    end
    if redis.call('HINCRBY', q .. 'counts', status, k) == k then
        redis.call('SADD', P .. 'queues', queue)  -- maybe the queue's first task
    end
    woken[queue] = (woken[queue] or 0) + k
    woken_at[queue] = at
    i = i + 11 + k * 2
end
for queue, n in pairs(woken) do  -- inbox_wake (see _INBOX), inlined
    local key = P .. 'q:' .. queue .. ':inbox'
    local room = 8 - redis.call('LLEN', key)
    if room > 0 then
        local tokens = {}
        for t = 1, math.min(n, room) do tokens[t] = 't' .. woken_at[queue] end
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
# attempts, priority, slot?, concurrency key?), then k and k x (record index, idempotency
# key, until ('u': a unique key, held while its task waits or runs), ttl ms). The push of
# records that carry idempotency keys (``_PUSH`` is the fast path for those that do not).
# Returns {'ok', then the id and holder id of each record whose idempotency key was held (not
# written)}, or {'duplicate', id} having written nothing.
_PUSH_KEYED = """
local n = tonumber(ARGV[2])
local seen = {}
for i = 0, n - 1 do
    local id = ARGV[3 + i * 12]
    if seen[id] or redis.call('EXISTS', tkey(id)) == 1 then return {'duplicate', id} end
    seen[id] = true
end
local ok, todo, keyed, k0 = {'ok'}, {}, {}, 3 + n * 12
for j = 0, tonumber(ARGV[k0] or '0') - 1 do
    keyed[tonumber(ARGV[k0 + 1 + j * 4])] = k0 + 2 + j * 4
end
for i = 0, n - 1 do
    local b, kb = 3 + i * 12, keyed[i]
    local held = kb and redis.call('HMGET', P .. 'idem:' .. ARGV[kb], 'id', 'until') or {}
    local taken = false
    if held[1] and held[2] == 'u' then  -- a unique key: taken while its task waits or runs
        local st = redis.call('HGET', tkey(held[1]), 'status')
        taken = st and (WAITING[st] or LEASED[st]) or false
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
    local b = 3 + i * 12
    local id, queue, status, at = ARGV[b], ARGV[b + 1], ARGV[b + 6], ARGV[b + 5]
    local prio = ARGV[b + 9]
    local ckey = ARGV[b + 11] ~= '' and string.sub(ARGV[b + 11], 2)
    local key = tkey(id)
    seq = seq + 1
    local m = member(string.format('%016x', seq), id)
    redis.call('HSET', key, 'id', id, 'queue', queue, 'name', ARGV[b + 2],
        'payload', ARGV[b + 3], 'run_at', ARGV[b + 4], 'created_at', at, 'status', status,
        'attempts', ARGV[b + 8], 'seq', string.format('%016x', seq))
    setopt(key, 'options', ARGV[b + 7])
    if prio ~= '0' then redis.call('HSET', key, 'priority', prio) end
    if ARGV[b + 10] ~= '' then setopt(key, 'slot', ARGV[b + 10]) end
    if ckey then redis.call('HSET', key, 'concurrency_key', ckey) end
    if WAITING[status] then
        redis.call('ZADD', zkey(queue, prio, ckey), ARGV[b + 4], m)
        entered(queue, prio, ckey, ARGV[b + 4])
    elseif status == 'running' then  -- never expires, like a lease nobody holds
        redis.call('ZADD', qkey(queue, 'running'), '+inf', KEEPER, '+inf', id)
        running_key(queue, ckey, 1)
    end
    move(queue, m, at, nil, status)
    redis.call('SADD', P .. 'queues', queue)
    woken[queue] = {(woken[queue] or {0})[1] + 1, at}
end
for queue, w in pairs(woken) do inbox_wake(queue, w[1], w[2]) end
return ok
"""

# ARGV: P, queue, now, limit, lease_until, owner, max_running ('' = no cap), alone_from
# ('' = none: see Backend.claim), popped, lease, aging, per_key ('' = no cap), keep_dead
# (seconds), then (name, n, per) per rate limit. The claim drains the queue's inbox first
# (see _INBOX); popped ('' = none) is an entry the caller popped from the inbox into taken and
# gives back, and lease the lease in seconds: the latest time of the drained tokens and tasks,
# when later than now, replaces now, and the lease runs from it. A due record that cannot be
# read (see unreadable) is dead-lettered as malformed, kept keep_dead seconds, and takes no
# place in the claim.
# Returns now and lease_until as used, the records dead-lettered (a flat list of id, why), then
# the claimed records as HGETALL lists, in claim order, read before the claim: the caller
# applies it (status reserved, attempts + 1, lease_until, owner, updated_at, no slot). A
# record written before dowork counted starts (no started field) gets started = attempts:
# every claim of it counted as one (OLD).
_CLAIM = (
    """
local P, queue, now, lease, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[5], ARGV[6]
local alone = ARGV[8] ~= '' and tonumber(ARGV[8])
"""
    + _MAY_FILL
    + _INBOX
    + """
local WAITS = {pending = true, scheduled = true, retrying = true}
local NONE = {}
-- Whether the record (status, HGETALL list h) of a due member should be dead-lettered, and
-- why: a waiting record (or one of no known status) that cannot be read. Others are stale.
local function unclaimable(status, h, id)
    if not status or (STATUSES[status] and not WAITS[status]) then return nil end
    return unreadable(h, id, queue)
end
-- Dead-letter such a record (listing member m) as malformed, kept ARGV[13] seconds; listed
-- in BURIED (id, why) for the caller to log.
local BURIED = {}
local function bury_due(id, m, h, why)
    BURIED[#BURIED + 1] = id
    BURIED[#BURIED + 1] = why
    local v = fields(h)
    local expires = string.format('%.17g', tonumber(now) + tonumber(ARGV[13]))
    bury(queue, id, m, v, why, WAITS[v.status] and v.status or nil, now, expires)
end
"""
    + """
local woke = nil
if ARGV[9] ~= '' then  -- an entry this worker popped from the inbox and gives back
    local e = ARGV[9]
    if redis.call('LREM', P .. 'q:' .. queue .. ':taken', 1, e) == 1 then
        woke = string.sub(e, 2)  -- a token's time
        if string.sub(e, 1, 1) ~= 't' then woke = inbox_put(queue, e) end
        if not decimal(woke) then woke = nil end
    end
end
local drained = drain(queue)
if drained and (not woke or tonumber(drained) > tonumber(woke)) then woke = drained end
if woke and tonumber(woke) > tonumber(now) then
    now = woke
    lease = string.format('%.17g', tonumber(woke) + tonumber(ARGV[10]))
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
local out = {now, lease, BURIED}
if limit <= 0 then return out end
local waiting, turn = q .. 'waiting', q .. 'turn'
local leased, left, n = {'+inf', keeper}, {}, 0
-- The claimed records leave the created.S listings for reserved (counts follow).
local function lease_all()
    if n == 0 then return end
    many('ZADD', running, leased)
    for status, l in pairs(left) do
        many('ZREM', q .. 'created.' .. status, l)
        redis.call('HINCRBY', q .. 'counts', status, -#l)
    end
    redis.call('HINCRBY', q .. 'counts', 'reserved', n)
end
local function wake_one()  -- more may be due: wake another idle worker to help
    inbox_wake(queue, 1, now)
end

if #ARGV <= 13 and redis.call('EXISTS', q .. 'levels', q .. 'lanes', q .. 'lanes:later') == 0
then
    -- Plain tasks only (priority 0, no concurrency key, no rate limits): the oldest due, by
    -- (run_at, seq). The tasks without a key are the only ones taking turns, so all their
    -- turn needs is to be marked served (1, less than any turn given later), and forgotten
    -- once none waits (see Backend.claim).
    local due = redis.call('ZRANGEBYSCORE', waiting, '-inf', now, 'LIMIT', 0, limit + 1)
    local taken, served = {}, false
    for i = 1, math.min(#due, limit) do
        local m = due[i]
        local id = string.sub(m, 18)
        local key = P .. 'task:' .. id
        local h = redis.call('HGETALL', key)
        local status, attempts, crashes, reserved, started
        for j = 1, #h, 2 do
            local f = h[j]
            if f == 'status' then status = h[j + 1]
            elseif f == 'attempts' then attempts = h[j + 1]
            elseif f == 'crashes' then crashes = h[j + 1]
            elseif f == 'started' then started = true
            elseif f == 'slot' then reserved = true end
        end
        local why = unclaimable(status, h, id)
        -- A repeat crasher is claimed alone (see Backend.claim).
        local crasher = not why and alone and tonumber(crashes or '0') >= alone
        if crasher and n > 0 then break end
        taken[#taken + 1] = m
        if why then
            bury_due(id, m, h, why)
        elseif status == 'pending' or status == 'scheduled' or status == 'retrying' then
            local a = string.format('%d', (attempts and tonumber(attempts) or 0) + 1)
            redis.call('HSET', key, 'status', 'reserved', 'attempts', a, 'lease_until', lease,
                'owner', owner, 'updated_at', now, unpack(started and NONE or {'started',
                attempts or '0'}))  -- (OLD)
            if reserved then redis.call('HDEL', key, 'slot') end  -- delayed by an earlier limit
            leased[#leased + 1] = lease
            leased[#leased + 1] = id
            local l = left[status]
            if not l then l = {}; left[status] = l end
            l[#l + 1] = m
            n = n + 1
            out[#out + 1] = h
            if crasher then break end
            served = true
        end
    end
    if #taken > 0 then many('ZREM', waiting, taken) end
    lease_all()
    if #due > limit then
        wake_one()
        if served then redis.call('HSETNX', turn, '', 1) end
    elseif redis.call('EXISTS', waiting) == 0 then
        redis.call('DEL', turn)
    elseif served then
        redis.call('HSETNX', turn, '', 1)
    end
    return out
end
"""
    + _LANES
    + r"""
-- Priorities, rate limits or concurrency keys. Each step serves the lane (the tasks of one
-- concurrency key, or those without one) served longest ago, ties by its most urgent due
-- task (rank = run_at - p * aging, then seq), and takes that task (see Backend.claim); a
-- task over a rate limit is delayed to the start time the limit gives it. Lanes are read in
-- turn order, a page at a time; a lane's due tasks a few at a time. Writes to the waiting
-- zsets wait for the end, so that what was read stays in place.
local aging, nowf, look = tonumber(ARGV[11]), tonumber(now), 2 * limit
local cap = ARGV[12] ~= '' and tonumber(ARGV[12])
local rates, starts = {}, {}
for i = 14, #ARGV, 3 do rates[ARGV[i]] = {tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])} end
local shared = rates[''] and ''
local LANES, DUE, LATER = q .. 'lanes', q .. 'lanes:due', q .. 'lanes:later'
local TURNS, LEVELS, KEYRUN = q .. 'lanes:turns', q .. 'lanes:levels', q .. 'keyrun'
local function hmget(key, names)  -- in chunks
    if #names <= 1000 then return redis.call('HMGET', key, unpack(names)) end
    local all = {}
    for i = 1, #names, 1000 do
        local got = redis.call('HMGET', key, unpack(names, i, math.min(i + 999, #names)))
        for j = 1, #got do all[i + j - 1] = got[j] end
    end
    return all
end

-- Sleeping lanes due by now wake, with the turn they kept.
local woke = redis.call('ZRANGEBYSCORE', LATER, '-inf', now, 'WITHSCORES')
if #woke > 0 then
    local names = {}
    for j = 1, #woke, 2 do names[#names + 1] = woke[j] end
    local turns = hmget(TURNS, names)
    for j, k in ipairs(names) do
        redis.call('ZADD', LANES, turns[j] or 0, k)
        redis.call('ZADD', DUE, woke[2 * j], k)
    end
    many('ZREM', LATER, names)
    many('HDEL', TURNS, names)
end
local keyed = redis.call('EXISTS', LANES) == 1
local tv = redis.call('HMGET', turn, 'n', '')
local counter = math.max(tonumber(tv[1] or '0'), tonumber(tv[2] or '0'))
local counter0 = counter

-- A lane's levels: z (zset), p, shift (p * aging), and a buffer of its due members and
-- scores, read size at a time (done: none left to read). The levels of the tasks without a
-- key gather their writes (rm, add: written at the end), so they read on from offset off;
-- a keyed lane's writes go at once (a lane gives a task or two per claim), and since every
-- member taken leaves the due range (claimed, dropped, or delayed past now), it reads on from
-- the start of the range.
local EMPTY = {}
local function fill(lv)
    local flat = redis.call('ZRANGEBYSCORE', lv.z, '-inf', now, 'WITHSCORES', 'LIMIT', lv.off,
        lv.size)
    lv.buf, lv.pos, lv.done = flat, 1, #flat < 2 * lv.size
    if lv.rm then lv.off = lv.off + #flat / 2 end
    lv.size = math.min(2 * lv.size, look)
end
local function new_level(z, p, size, gathers)
    return {z = z, p = p, shift = tonumber(p) * aging, buf = EMPTY, pos = 1, off = 0,
        done = false, size = size, rm = gathers and {}, add = gathers and {}}
end
-- The lane's most urgent due task: lane.lv (its level, nil: none due), lane.rank and
-- lane.m (its member).
local function head(lane)
    local best, br, bm
    for _, lv in ipairs(lane.levels) do
        if lv.pos > #lv.buf and not lv.done then fill(lv) end
        if lv.pos <= #lv.buf then
            local m = lv.buf[lv.pos]
            local r = tonumber(lv.buf[lv.pos + 1]) - lv.shift
            if not best or r < br or (r == br and m < bm) then best, br, bm = lv, r, m end
        end
    end
    lane.lv, lane.rank, lane.m = best, br, bm
    return best
end
-- The lanes with a due task, by (turn, rank of that task, its member): a binary heap. A lane
-- is in it at most once, and not while it is served, so its fields are its key.
local heap = {}
local function before(a, b)
    if a.turn ~= b.turn then return a.turn < b.turn end
    if a.rank ~= b.rank then return a.rank < b.rank end
    return a.m < b.m
end
local function offer(lane)
    if not head(lane) then return false end
    local i = #heap + 1
    heap[i] = lane
    while i > 1 do
        local up = math.floor(i / 2)
        if not before(lane, heap[up]) then break end
        heap[i], heap[up] = heap[up], lane
        i = up
    end
    return true
end
local function take()
    local top, last = heap[1], heap[#heap]
    heap[#heap] = nil
    if #heap > 0 then
        local i = 1
        heap[1] = last
        while true do
            local l, r, m = 2 * i, 2 * i + 1, i
            if l <= #heap and before(heap[l], heap[m]) then m = l end
            if r <= #heap and before(heap[r], heap[m]) then m = r end
            if m == i then break end
            heap[i], heap[m] = heap[m], heap[i]
            i = m
        end
    end
    return top
end

-- The tasks without a key: one lane over the waiting zsets of every level.
local levels = redis.call('SMEMBERS', q .. 'levels')
levels[#levels + 1] = '0'
local plain = {k = false, turn = tonumber(tv[2] or '0'), levels = {}}
local first = keyed and math.min(look, 8) or look
for _, p in ipairs(levels) do
    local z = p == '0' and waiting or waiting .. ':' .. p
    plain.levels[#plain.levels + 1] = new_level(z, p, first, true)
end
offer(plain)
for _, lv in ipairs(plain.levels) do
    if lv.p ~= '0' and lv.off == 0 and redis.call('EXISTS', lv.z) == 0 then
        redis.call('SREM', q .. 'levels', lv.p)  -- a level no longer used
    end
end

-- The keyed lanes read so far. Those never served (turn 0) are read at once, since their
-- order is their heads'; the others a page at a time, in turn order, while the most
-- urgent lane read may come after one not read yet (turns are unique, so a lane whose turn
-- is at most the last read one's comes first).
local lanes, read_all, frontier, offset, page = {}, not keyed, 0, 0, limit + 8
local function add_lanes(names, turns)
    if #names == 0 then return end
    local lvs, held = hmget(LEVELS, names), hmget(KEYRUN, names)
    for j, k in ipairs(names) do
        local ran = tonumber(held[j] or '0')
        local lane = {k = k, turn = tonumber(turns[j]), took = 0, held = ran, ran = ran}
        lanes[#lanes + 1] = lane
        if not (cap and lane.held >= cap) then  -- (else passed over: see the loop)
            lane.levels = {new_level(lkey(q, '0', k), '0', math.min(look, 2))}
            if lvs[j] then
                for p in string.gmatch(lvs[j], '%S+') do
                    lane.levels[#lane.levels + 1] = new_level(lkey(q, p, k), p, math.min(look, 2))
                end
            end
            lane.idle = not offer(lane)  -- nothing due: it sleeps (see below)
        end
    end
end
if keyed then
    local fresh = redis.call('ZRANGEBYSCORE', LANES, 0, 0)
    local zeros = {}
    for j = 1, #fresh do zeros[j] = 0 end
    add_lanes(fresh, zeros)
end
local function more_lanes()
    local flat = redis.call('ZRANGEBYSCORE', LANES, '(0', '+inf', 'WITHSCORES', 'LIMIT', offset,
        page)
    local names, turns = {}, {}
    for j = 1, #flat, 2 do
        names[#names + 1] = flat[j]
        turns[#turns + 1] = flat[j + 1]
    end
    offset = offset + #names
    if #names < page then read_all = true else frontier = tonumber(turns[#turns]) end
    page = 2 * page
    add_lanes(names, turns)
end

-- The start time the rate limit rk gives a record now (see take_slot); the last n start
-- times of each limit are read once and written back at the end.
local function slot(rk)
    local st = starts[rk]
    if not st then
        local list = q .. 'rate:' .. rk
        local times = redis.call('LRANGE', list, -rates[rk][1], -1)
        for i, t in ipairs(times) do times[i] = tonumber(t) end
        st = {rk = rk, list = list, times = times, added = {}}
        starts[rk] = st
    end
    local times, cap_n, per = st.times, rates[rk][1], rates[rk][2]
    local start = nowf
    if #times >= cap_n then start = math.max(nowf, times[#times - cap_n + 1] + per) end
    times[#times + 1] = start
    st.added[#st.added + 1] = string.format('%.17g', start)
    return start
end

local looked, stopped = 0, false
local function drop(lv, m)  -- the member leaves its level's zset (see fill)
    if lv.rm then lv.rm[#lv.rm + 1] = m else redis.call('ZREM', lv.z, m) end
end
local function delay(lv, s, m)  -- the member's score becomes s (after now)
    if lv.add then
        lv.add[#lv.add + 1] = s
        lv.add[#lv.add + 1] = m
    else
        redis.call('ZADD', lv.z, s, m)
    end
end
while n < limit and looked < look do
    while not read_all and (#heap == 0 or heap[1].turn > frontier) do more_lanes() end
    if #heap == 0 then break end
    local lane = take()
    local m, lv = lane.m, lane.lv
    if not (lane.k and cap and lane.held >= cap) then  -- (a key at its cap is passed over)
        lv.pos = lv.pos + 2
        looked = looked + 1
        lane.touched = true
        local id = string.sub(m, 18)
        local tk = P .. 'task:' .. id
        local h = redis.call('HGETALL', tk)
        local status, attempts, crashes, name, reserved, started
        for j = 1, #h, 2 do
            local f = h[j]
            if f == 'status' then status = h[j + 1]
            elseif f == 'attempts' then attempts = h[j + 1]
            elseif f == 'crashes' then crashes = h[j + 1]
            elseif f == 'name' then name = h[j + 1]
            elseif f == 'started' then started = true
            elseif f == 'slot' then reserved = true end
        end
        local why = unclaimable(status, h, id)
        if why then
            drop(lv, m)
            bury_due(id, m, h, why)
        elseif status ~= 'pending' and status ~= 'scheduled' and status ~= 'retrying' then
            drop(lv, m)  -- a stale member
        else
            -- A repeat crasher is claimed alone (see Backend.claim).
            local crasher = alone and tonumber(crashes or '0') >= alone
            if crasher and n > 0 then  -- (it stays at the head of its lane)
                lv.pos = lv.pos - 2
                stopped = true
                break
            end
            local rk = not reserved and (rates[name] and name or shared)
            local start = rk and slot(rk)
            if start and start > nowf then  -- over the limit: delayed, its turn kept
                local s = string.format('%.17g', start)
                redis.call('HSET', tk, 'run_at', s, 'slot', s)
                delay(lv, s, m)
            else
                local a = string.format('%d', (attempts and tonumber(attempts) or 0) + 1)
                redis.call('HSET', tk, 'status', 'reserved', 'attempts', a, 'lease_until',
                    lease, 'owner', owner, 'updated_at', now, unpack(started and NONE or
                    {'started', attempts or '0'}))  -- (OLD)
                if reserved then redis.call('HDEL', tk, 'slot') end
                drop(lv, m)
                leased[#leased + 1] = lease
                leased[#leased + 1] = id
                local l = left[status]
                if not l then l = {}; left[status] = l end
                l[#l + 1] = m
                n = n + 1
                out[#out + 1] = h
                lane.took = (lane.took or 0) + 1
                if crasher then stopped = true; break end
                counter = counter + 1
                lane.turn, lane.served = counter, true
                lane.held = (lane.held or 0) + 1
            end
        end
        if n < limit and looked < look then offer(lane) end  -- its next due task, in turn
    end
end
if stopped or n == limit or looked >= look then wake_one() end  -- (more may be due)
for _, lv in ipairs(plain.levels) do
    if #lv.rm > 0 then many('ZREM', lv.z, lv.rm) end
    if #lv.add > 0 then many('ZADD', lv.z, lv.add) end
end
lease_all()
for _, st in pairs(starts) do  -- keep the last n starts, for as long as they matter
    local last = nowf
    for _, t in ipairs(st.times) do last = math.max(last, t) end
    many('RPUSH', st.list, st.added)
    redis.call('LTRIM', st.list, -rates[st.rk][1], -1)
    local ms = math.floor((last - nowf + rates[st.rk][2]) * 1000) + 1000
    redis.call('PEXPIRE', st.list, string.format('%d', ms))
end

-- The earliest run_at of a lane's waiting tasks now (nil: none): the next buffered member
-- of a level (members before it left, or moved after now), else the head of its zset; a
-- level whose zset is gone is unlisted.
local function lane_at(lane)
    local best, kept, gone = nil, {}, false
    for _, lv in ipairs(lane.levels) do
        local at = lv.buf[lv.pos + 1]
        if not at then at = redis.call('ZRANGE', lv.z, 0, 0, 'WITHSCORES')[2] end
        if at and (not best or tonumber(at) < tonumber(best)) then best = at end
        if lv.p ~= '0' then
            if at then kept[#kept + 1] = lv.p else gone = true end
        end
    end
    if gone then
        if #kept == 0 then
            redis.call('HDEL', LEVELS, lane.k)
        else
            redis.call('HSET', LEVELS, lane.k, table.concat(kept, ' '))
        end
    end
    return best
end
-- Where each keyed lane read stands now: forgotten once it has no waiting task (see
-- Backend.claim), asleep while none is due, else awake with its new turn.
local function forget(k)
    redis.call('ZREM', LANES, k)
    redis.call('ZREM', DUE, k)
    redis.call('ZREM', LATER, k)
    redis.call('HDEL', TURNS, k)
    redis.call('HDEL', LEVELS, k)
end
local dues, served, runs = {}, {}, {}  -- (score, key) and (key, count) pairs: one write each
for _, lane in ipairs(lanes) do
    if lane.took > 0 then
        runs[#runs + 1] = lane.k
        runs[#runs + 1] = lane.ran + lane.took
    end
    if lane.touched or lane.idle then
        local at = lane_at(lane)
        if not at then
            forget(lane.k)
        elseif tonumber(at) > nowf then
            redis.call('ZREM', LANES, lane.k)
            redis.call('ZREM', DUE, lane.k)
            redis.call('ZADD', LATER, at, lane.k)
            if lane.turn > 0 then redis.call('HSET', TURNS, lane.k, lane.turn) end
        else
            dues[#dues + 1] = at
            dues[#dues + 1] = lane.k
            if lane.served then
                served[#served + 1] = lane.turn
                served[#served + 1] = lane.k
            end
        end
    end
end
if #dues > 0 then many('ZADD', DUE, dues) end
if #runs > 0 then many('HSET', KEYRUN, runs) end
if #served > 0 then many('ZADD', LANES, served) end
if keyed then  -- lanes emptied since the last claim
    local drained = redis.call('SMEMBERS', q .. 'lanes:drained')
    for _, k in ipairs(drained) do
        if not redis.call('ZSCORE', DUE, k) and not redis.call('ZSCORE', LATER, k) then
            forget(k)
        end
    end
    if #drained > 0 then redis.call('DEL', q .. 'lanes:drained') end
end
-- The tasks without a key lose their turn once none waits; with no turn left to remember,
-- the count starts again.
local t0 = plain.turn
if t0 > 0 then
    local zs = {}
    for _, lv in ipairs(plain.levels) do zs[#zs + 1] = lv.z end
    if redis.call('EXISTS', unpack(zs)) == 0 then t0 = 0 end
end
if t0 == 0 and redis.call('EXISTS', LANES, LATER) == 0 then
    redis.call('DEL', turn)
else
    if counter ~= counter0 then redis.call('HSET', turn, 'n', string.format('%d', counter)) end
    if t0 ~= tonumber(tv[2] or '0') then
        if t0 == 0 then
            redis.call('HDEL', turn, '')
        else
            redis.call('HSET', turn, '', string.format('%d', t0))
        end
    end
end
return out
"""
)

# ARGV: P, n, then n x (id, token, status, now, run_at, error?, reason?, result?,
# expires_at ('' = forget the record), payload?, attempt?, ran). status 'retrying' means RETRY,
# 'started' the STARTED mark (a reserved record becomes running, started + 1); attempt is a
# line appended to the task's history; ran is '1' when the function ran, so that an outcome
# on a record still reserved counts its start. See Backend.settle for late settlements.
# Returns the ids refused because the record is not leased under that token.
# lease_until and owner are left in the hash: they mean nothing once the lease is over.
_SETTLE = """
local refused, accepted, leases, broken = {}, {}, {}, {}
-- A settlement for token, whose lapsed lease the reaper charged as a crash (its token is in
-- the charged field, rec[9]): its worker was alive, so the charge moves to lost; and if no
-- lease was granted since and the record waits or was dead-lettered for crashes, the
-- outcome applies after all: the record is made running again (rec[1]) for it. Returns
-- whether it applies. A record whose fields cannot be read is left alone (a claim buries it).
local function late(id, token, rec)
    local kept, found = {}, false
    for t in string.gmatch(rec[9], '[^,]+') do
        if not found and t == token then found = true else kept[#kept + 1] = t end
    end
    if not found then return false end
    local key = tkey(id)
    local more = redis.call('HMGET', key, 'crashes', 'lost', 'reason', 'priority', 'run_at')
    if not (more[1] and count_ok(more[1]) and tonumber(more[1]) > 0)
        or (more[2] and not count_ok(more[2])) or not (rec[4] and seq_ok(rec[4]))
        or not decimal(rec[5]) or (more[4] and not LEVELS[more[4]])
    then
        return false
    end
    local fields = {'crashes', string.format('%d', tonumber(more[1]) - 1),
        'lost', string.format('%d', tonumber(more[2] or '0') + 1)}
    if #kept == 0 then
        redis.call('HDEL', key, 'charged')
    else
        fields[#fields + 1] = 'charged'
        fields[#fields + 1] = table.concat(kept, ',')
    end
    local status, queue, k = rec[1], rec[3], rec[8]
    local revive = tonumber(rec[2]) == tonumber(token)
        and (WAITING[status] or (status == 'dead' and more[3] == 'crashed_worker'))
    if revive then
        local m = member(rec[4], id)
        if WAITING[status] then
            redis.call('ZREM', zkey(queue, more[4], k), m)
            if k then lane_out(qkey(queue, ''), k, decimal(more[5]) and more[5] or '-inf') end
        else
            redis.call('ZREM', P .. 'expiry', id)
        end
        redis.call('HDEL', key, 'reason', 'finished_at', 'expires_at')
        fields[#fields + 1] = 'status'
        fields[#fields + 1] = 'running'
        move(queue, m, rec[5], status, 'running')
        running_key(queue, k, 1)
        rec[1] = 'running'
    end
    redis.call('HSET', key, unpack(fields))
    return revive
end
for i = 0, tonumber(ARGV[2]) - 1 do
    local b = 3 + i * 12
    local id, token, outcome = ARGV[b], ARGV[b + 1], ARGV[b + 2]
    local rec = redis.call('HMGET', tkey(id), 'status', 'attempts', 'queue', 'seq',
        'created_at', 'error', 'history', 'concurrency_key', 'charged', 'started')
    local ok = LEASED[rec[1]] and tonumber(rec[2]) == tonumber(token) and rec[3]
    if not ok and outcome ~= 'started' and rec[3] and rec[9] and tokens_ok(rec[9]) then
        ok = late(id, token, rec)
    end
    if not ok then
        refused[#refused + 1] = id
    elseif outcome == 'started' then  -- (a running record: started already, nothing to do)
        if rec[1] == 'reserved' and ARGV[b + 11] == '1' and (not rec[10] or count_ok(rec[10]))
        then
            redis.call('HSET', tkey(id), 'status', 'running',
                'started', string.format('%d', tonumber(rec[10] or '0') + 1))
            move(rec[3], nil, nil, 'reserved', 'running')
        end
    else
        -- A record changed by hand while it ran is dead-lettered instead (see bury); an
        -- outcome's times that cannot be used are replaced by now.
        local why = nil
        if outcome == 'retrying' then  -- (a finished task needs no priority: an absent
            rec[11] = redis.call('HGET', tkey(id), 'priority')  -- field costs a hash scan)
        end
        if not (rec[4] and seq_ok(rec[4])) then why = 'seq is missing or not 16 hex digits'
        elseif not decimal(rec[5]) then why = 'created_at is not a number'
        elseif rec[11] and not LEVELS[rec[11]] then why = 'priority is ' .. shown(rec[11])
        elseif rec[10] and not count_ok(rec[10]) then why = 'started is ' .. shown(rec[10]) end
        if not decimal(ARGV[b + 4]) then ARGV[b + 4] = ARGV[b + 3] end
        if ARGV[b + 8] ~= '' and not decimal(ARGV[b + 8]) then ARGV[b + 8] = ARGV[b + 3] end
        if why then
            broken[#broken + 1] = {b, rec, why}
        else
            accepted[#accepted + 1] = {b, rec}
        end
        gather(leases, qkey(rec[3], 'running'), id)
    end
end
-- The leases go first: a write that frees memory, after which Redis lets this script finish
-- its writes even at maxmemory (noeviction), so outcomes are stored while submits are refused.
for key, list in pairs(leases) do chunks('ZREM', key, list, 4000) end
for _, a in ipairs(broken) do
    local b, rec = a[1], a[2]
    local id, now = ARGV[b], ARGV[b + 3]
    running_key(rec[3], rec[8], -1)
    local m = seq_ok(rec[4] or '') and member(rec[4], id) or nil
    local expires = ARGV[b + 8] ~= '' and ARGV[b + 8] or now
    bury(rec[3], id, m, {created_at = rec[5]}, a[3], rec[1], now, expires)
end
for _, a in ipairs(accepted) do
    local b, rec = a[1], a[2]
    local id, status, now = ARGV[b], ARGV[b + 2], ARGV[b + 3]
    local key = tkey(id)
    do
        local queue, m = rec[3], member(rec[4], id)
        local err = ARGV[b + 5]
        running_key(queue, rec[8], -1)
        if ARGV[b + 8] == '' and status ~= 'retrying' then
            redis.call('DEL', key)
            forget(queue, rec[1], m)
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
                local p = rec[11]
                if rec[8] then  -- (a lane's earliest run_at is read now: no gathering)
                    redis.call('ZADD', zkey(queue, p, rec[8]), ARGV[b + 4], m)
                else
                    gather(ZADDS, wkey(queue, p), ARGV[b + 4], m)
                end
                entered(queue, p, rec[8], ARGV[b + 4])
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
            if rec[1] == 'reserved' and ARGV[b + 11] == '1' then  -- its start counts too
                fields[#fields + 1] = 'started'
                fields[#fields + 1] = string.format('%d', tonumber(rec[10] or '0') + 1)
            end
            redis.call('HSET', key, unpack(fields))
            move(queue, m, rec[5], rec[1], status)
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
    if not LEASED[rec[1]] or tonumber(rec[2]) ~= tonumber(ARGV[5 + i * 2]) or not rec[3] then
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
# A lapsed lease of a running task is a crash: crashes + 1, its token added to charged (see
# charge), dead-lettered crashed_worker at crash_budget, else retrying. One of a reserved task
# (never started) is not: lost + 1, and it waits again, pending. Either way run_at is kept,
# so the task goes back to its place at the head of the queue.
_REAP = """
local queue, now = ARGV[2], ARGV[3]
local running = qkey(queue, 'running')
local requeued, dead = 0, 0
-- Add token to a charged list, keeping the last 16.
local function charge(charged, token)
    local t = {}
    if charged then for x in string.gmatch(charged, '[^,]+') do t[#t + 1] = x end end
    t[#t + 1] = token
    while #t > 16 do table.remove(t, 1) end
    return table.concat(t, ',')
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', running, '-inf', '(' .. now)) do
    redis.call('ZREM', running, id)
    local key = tkey(id)
    local rec = redis.call('HMGET', key, 'status', 'seq', 'created_at', 'run_at', 'priority',
        'concurrency_key', 'crashes', 'attempts', 'charged', 'lost')
    local why = nil  -- (a record changed by hand while it ran: see bury)
    if LEASED[rec[1]] then
        if not (rec[2] and seq_ok(rec[2])) then why = 'seq is missing or not 16 hex digits'
        elseif not decimal(rec[3]) then why = 'created_at is not a number'
        elseif rec[4] and not decimal(rec[4]) then why = 'run_at is ' .. shown(rec[4])
        elseif rec[5] and not LEVELS[rec[5]] then why = 'priority is ' .. shown(rec[5])
        elseif rec[7] and not count_ok(rec[7]) then why = 'crashes is ' .. shown(rec[7])
        elseif not (rec[8] and count_ok(rec[8])) then why = 'attempts is not a count'
        elseif rec[9] and not tokens_ok(rec[9]) then why = 'charged is ' .. shown(rec[9])
        elseif rec[10] and not count_ok(rec[10]) then why = 'lost is ' .. shown(rec[10]) end
    end
    if why then
        running_key(queue, rec[6], -1)
        local m = rec[2] and seq_ok(rec[2]) and member(rec[2], id) or nil
        bury(queue, id, m, {created_at = rec[3]}, why, rec[1], now, ARGV[5])
        dead = dead + 1
    elseif rec[1] == 'reserved' then  -- never started: not a crash
        local m = member(rec[2], id)
        running_key(queue, rec[6], -1)
        redis.call('HDEL', key, 'lease_until', 'owner')
        redis.call('HSET', key, 'status', 'pending', 'updated_at', now,
            'lost', string.format('%d', tonumber(rec[10] or '0') + 1))
        redis.call('ZADD', zkey(queue, rec[5], rec[6]), rec[4] or now, m)
        entered(queue, rec[5], rec[6], rec[4] or now)
        move(queue, m, rec[3], 'reserved', 'pending')
        requeued = requeued + 1
    elseif rec[1] == 'running' then
        local m = member(rec[2], id)
        running_key(queue, rec[6], -1)
        local crashes = tonumber(rec[7] or '0') + 1
        redis.call('HDEL', key, 'lease_until', 'owner')
        redis.call('HSET', key, 'crashes', string.format('%d', crashes),
            'charged', charge(rec[9], rec[8]))
        if crashes >= tonumber(ARGV[4]) then
            redis.call('HSET', key, 'status', 'dead', 'reason', 'crashed_worker',
                'error', 'the worker running it stopped renewing its lease ' .. crashes ..
                ' times', 'updated_at', now, 'finished_at', now, 'expires_at', ARGV[5])
            redis.call('ZADD', P .. 'expiry', ARGV[5], id)
            move(queue, m, rec[3], 'running', 'dead')
            dead = dead + 1
        else
            redis.call('HSET', key, 'status', 'retrying', 'updated_at', now)
            redis.call('ZADD', zkey(queue, rec[5], rec[6]), rec[4] or now, m)
            entered(queue, rec[5], rec[6], rec[4] or now)
            move(queue, m, rec[3], 'running', 'retrying')
            requeued = requeued + 1
        end
    end
end
if requeued > 0 then inbox_wake(queue, requeued, now) end
return {requeued, dead}
"""

# ARGV: P, id, now, expires_at. Returns cancelled, requested, finished or unknown.
_CANCEL = """
local id, now = ARGV[2], ARGV[3]
local key = tkey(id)
local rec = redis.call('HMGET', key, 'status', 'queue', 'seq', 'created_at', 'priority',
    'concurrency_key', 'run_at')
local status, queue = rec[1], rec[2]
if not status then return 'unknown' end
if WAITING[status] and not (queue and rec[3] and seq_ok(rec[3]) and decimal(rec[4])
    and (not rec[5] or LEVELS[rec[5]])) then
    return 'unknown'  -- (a record changed by hand: the next claim dead-letters it)
end
if WAITING[status] then
    local m = member(rec[3], id)
    redis.call('HSET', key, 'status', 'cancelled', 'error', 'cancelled', 'updated_at', now,
        'finished_at', now, 'expires_at', ARGV[4])
    redis.call('ZREM', zkey(queue, rec[5], rec[6]), m)
    if rec[6] then lane_out(qkey(queue, ''), rec[6], decimal(rec[7]) and rec[7] or '-inf') end
    redis.call('ZADD', P .. 'expiry', ARGV[4], id)
    move(queue, m, rec[4], status, 'cancelled')
    return 'cancelled'
end
if LEASED[status] then
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
        if rec[2] and STATUSES[rec[1]] then  -- (else no count holds it: written by hand)
            if rec[3] and seq_ok(rec[3]) then
                forget(rec[2], rec[1], member(rec[3], id))
            else
                count(rec[2], rec[1], -1)
                EMPTIED[rec[2]] = true
            end
        end
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
    local rec = redis.call('HMGET', key, 'status', 'queue', 'seq', 'created_at', 'priority',
        'concurrency_key')
    local status, queue = rec[1], rec[2]
    local readable = queue and rec[3] and seq_ok(rec[3]) and decimal(rec[4])
        and (not rec[5] or LEVELS[rec[5]])  -- (else left alone: changed by hand)
    if readable and (status == 'failed' or status == 'cancelled' or status == 'dead') then
        local m = member(rec[3], id)
        redis.call('HSET', key, 'status', 'pending', 'run_at', now, 'updated_at', now,
            'crashes', '0')
        redis.call('HDEL', key, 'error', 'reason', 'result', 'cancel_requested',
            'lease_until', 'owner', 'finished_at', 'expires_at', 'charged')
        redis.call('ZREM', P .. 'expiry', id)
        redis.call('ZADD', zkey(queue, rec[5], rec[6]), now, m)
        entered(queue, rec[5], rec[6], now)
        move(queue, m, rec[4], status, 'pending')
        done[#done + 1] = id
        done[#done + 1] = queue
        queues[queue] = (queues[queue] or 0) + 1
    end
end
for queue, n in pairs(queues) do inbox_wake(queue, n, now) end
return done
"""

# ARGV: P, queue, batch, then the statuses to delete (none: every status but the leased ones).
# Deletes up to batch of the queue's tasks in those statuses; returns how many.
_PURGE_QUEUE = """
local queue, left = ARGV[2], tonumber(ARGV[3])
local statuses = {}
if #ARGV > 3 then
    for i = 4, #ARGV do statuses[#statuses + 1] = ARGV[i] end
else
    for _, status in ipairs(redis.call('HKEYS', qkey(queue, 'counts'))) do
        if not LEASED[status] then statuses[#statuses + 1] = status end
    end
end
for _, status in ipairs(statuses) do
    if left <= 0 then break end
    local members
    if LEASED[status] then  -- (the running zset holds both: a few per worker)
        members = {}
        for _, id in ipairs(redis.call('ZRANGE', qkey(queue, 'running'), 0, -1)) do
            if #members >= left then break end
            if id ~= KEEPER and redis.call('HGET', tkey(id), 'status') == status then
                members[#members + 1] = id
            end
        end
    else
        members = redis.call('ZRANGE', qkey(queue, 'created.' .. status), 0, left - 1)
    end
    for _, m in ipairs(members) do
        if m == KEEPER then
            left = left + 1  -- not a task
        else
            if LEASED[status] then
                local rec = redis.call('HMGET', tkey(m), 'status', 'concurrency_key')
                running_key(queue, rec[2], -1)
                redis.call('DEL', tkey(m))
                redis.call('ZREM', qkey(queue, 'running'), m)
            else
                local id = string.sub(m, 18)
                if WAITING[status] then
                    local rec = redis.call('HMGET', tkey(id), 'priority', 'concurrency_key',
                        'run_at')  -- (false: 0, none)
                    redis.call('ZREM', zkey(queue, rec[1], rec[2]), m)
                    if rec[2] then
                        lane_out(qkey(queue, ''), rec[2], decimal(rec[3]) and rec[3] or '-inf')
                    end
                else
                    redis.call('ZREM', P .. 'expiry', id)
                end
                redis.call('DEL', tkey(id))
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
    statuses = {'pending', 'scheduled', 'retrying', 'reserved', 'running', 'succeeded',
        'failed', 'cancelled', 'dead'}
end
local page = {}
if #statuses == 1 and not LEASED[statuses[1]] then
    local key = qkey(queue, 'created.' .. statuses[1])
    for _, m in ipairs(redis.call(range, key, offset, offset + limit - 1)) do
        page[#page + 1] = string.sub(m, 18)
    end
else
    -- Merge by (created_at, seq): the page lies within the first offset + limit of each
    -- listing; leased tasks (a few per worker) come from the running zset.
    local all = {}
    for _, status in ipairs(statuses) do
        if LEASED[status] then
            for _, id in ipairs(redis.call('ZRANGE', qkey(queue, 'running'), 0, -1)) do
                local rec = redis.call('HMGET', tkey(id), 'created_at', 'seq', 'status')
                if rec[3] == status then  -- (a field changed by hand sorts first)
                    all[#all + 1] = {decimal(rec[1]) or 0, tonumber(rec[2] or '', 16) or 0, id}
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
    local rec = redis.call('HMGET', key, 'status', 'queue', 'seq', 'created_at', 'run_at',
        'priority', 'concurrency_key')
    local status, queue = rec[1], rec[2]
    local readable = queue and rec[3] and seq_ok(rec[3]) and decimal(rec[4])
        and (decimal(rec[5]) or rec[5] == 'inf')  -- (call_at(inf): never, unless released)
        and (not rec[6] or LEVELS[rec[6]])  -- (else left alone: the next claim buries it)
    if readable and WAITING[status] and tonumber(rec[5]) > tonumber(now) then
        local m = member(rec[3], id)
        local new = status == 'scheduled' and 'pending' or status
        redis.call('HSET', key, 'status', new, 'run_at', now, 'updated_at', now)
        redis.call('ZADD', zkey(queue, rec[6], rec[7]), now, m)
        if rec[7] then lane_in(qkey(queue, ''), rec[7], now) end
        if new ~= status then move(queue, m, rec[4], status, new) end
        released[#released + 1] = id
        released[#released + 1] = queue
        woken[queue] = (woken[queue] or 0) + 1
    end
end
for queue, k in pairs(woken) do inbox_wake(queue, k, now) end
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

# ARGV: P, now, expires_at, n, then n x (id, token, why). Dead-letters as malformed the records
# a claim gave out that Python cannot read (see bury and redis.py's _unfit), if they still run
# on that token.
_BURY = """
local now, expires = ARGV[2], ARGV[3]
for i = 0, tonumber(ARGV[4]) - 1 do
    local b = 5 + i * 3
    local id = ARGV[b]
    local v = fields(redis.call('HGETALL', tkey(id)))
    if LEASED[v.status] and v.queue and tonumber(v.attempts) == tonumber(ARGV[b + 1]) then
        redis.call('ZREM', qkey(v.queue, 'running'), id)
        running_key(v.queue, v.concurrency_key, -1)
        local m = v.seq and seq_ok(v.seq) and member(v.seq, id) or nil
        bury(v.queue, id, m, v, ARGV[b + 2], v.status, now, expires)
    end
end
return 0
"""

# ARGV: P, queue. Sent right behind a worker's pop of the queue's inbox into taken (BLMOVE),
# in the same round trip: of the tasks in taken (popped, not recorded yet: see _TAKE), returns
# {ids a worker may start, ids it must not}: an id already in use (a finished task's, say,
# written again by hand) or found twice there is not to be started, but given back to a claim
# (see inbox_put). The popping worker finds its entry's id in one list, or in neither if a
# drain stored it meanwhile (then it asks _TAKE before it starts the task).
_PEEK = r"""
local P = ARGV[1]
local seen, order, ok, bad = {}, {}, {}, {}
for _, e in ipairs(redis.call('LRANGE', P .. 'q:' .. ARGV[2] .. ':taken', 0, 999)) do
    if string.sub(e, 1, 1) == 'r' then
        local z = string.find(e, '\0', 2, true)
        if z and z > 2 then
            local id = string.sub(e, 2, z - 1)
            if not seen[id] then order[#order + 1] = id end
            seen[id] = (seen[id] or 0) + 1
        end
    end
end
for _, id in ipairs(order) do
    if seen[id] > 1 or redis.call('EXISTS', P .. 'task:' .. id) == 1 then
        bad[#bad + 1] = id
    else
        ok[#ok + 1] = id
    end
end
return {ok, bad}
"""

#: The scripts' full sources by name.
# ARGV: P, queue, at. A task of the queue falls due at ``at`` (a retry's run_at): wake one idle
# worker with a token (see inbox_wake), which it claims with as now. Self-contained.
_WAKE = (
    """
local P = ARGV[1]
"""
    + _INBOX
    + """
inbox_wake(ARGV[2], 1, ARGV[3])
return 1
"""
)

SCRIPTS = {
    "push": _PUSH,  # the producers' hot path: no shared prelude (a few us per call)
    "check": _BASE + _CHECK,
    "claim": _CLAIM,  # an idle worker's wake-up: self-contained, like push
    "take": _TAKE,  # a worker that started a task popped from the inbox: self-contained
    "peek": _PEEK,  # right behind a worker's pop of the inbox: self-contained
    "drain": _wrap(_DRAIN, drains=False, may_fill=True),
    "wake": _WAKE,  # a retry fell due: a token for an idle worker
    "settle": _wrap(_SETTLE, drains=False),
    "bury": _wrap(_BURY, drains=False),
    "heartbeat": _wrap(_HEARTBEAT, drains=False, may_fill=True),
    "reap": _wrap(_REAP, may_fill=True),
    "cancel": _wrap(_CANCEL),
    "purge": _wrap(_PURGE, drains=False),
    "requeue": _wrap(_REQUEUE),
    "purge_queue": _wrap(_PURGE_QUEUE),
    "list": _wrap(_LIST),
    "push_keyed": _wrap(_PUSH_KEYED),
    "release": _wrap(_RELEASE),
    "progress": _wrap(_PROGRESS, drains=False),
    "beat": _wrap(_BEAT, drains=False, may_fill=True),
}
