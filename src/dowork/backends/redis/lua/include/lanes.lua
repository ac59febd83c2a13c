-- The lanes of concurrency keys (see the key schema in redis/__init__.py). q is the queue's key
-- prefix ("P:q:Q:") and k a concurrency key; a lane is the key's waiting tasks, a zset per
-- priority. Every lane with waiting tasks is awake (in lanes, its earliest run_at in lanes:due)
-- or asleep (lanes:later, its turn in lanes:turns); a lane that lost its last task stays in
-- lanes with its turn, listed in lanes:drained, until the next claim forgets it (see
-- Backend.claim).

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
