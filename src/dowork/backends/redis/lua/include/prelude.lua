-- The start of every script that gathers its writes (see flush.lua): base and lanes, then the
-- gathering of count changes and listing-zset moves and their one write at the end (flush),
-- and the moves of a task between statuses.
--#include base
--#include lanes

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
    for key, list in pairs(ZADDS) do zadd_all(key, list) end
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
                qkey(queue, 'lanes:drained'), qkey(queue, 'transit'))
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
        if not leased(old) then gather(ZREMS, qkey(queue, 'created.' .. old), m) end
    end
    if new then
        count(queue, new, 1)
        if not leased(new) then gather(ZADDS, qkey(queue, 'created.' .. new), at, m) end
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
