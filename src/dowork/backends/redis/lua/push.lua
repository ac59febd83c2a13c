-- ARGV: P, check, then groups of records sharing their fields: queue, name, run_at,
-- created_at, status, options?, attempts, priority, slot?, concurrency key?, k, then
-- k x (id, payload). A priority other than '0' puts the group in its level's waiting zset, a
-- concurrency key in its key's lane (see include/lanes.lua). check is "1" to refuse ids
-- already taken, or the name of a flag key (see check.lua): write nothing unless it exists.
-- Returns {'ok'}, {'duplicate', id} having written nothing, or {'skipped'}.
-- The producers' hot path: no shared prelude (a few us per call); what it needs of the
-- includes is inlined.

local P = ARGV[1]
local SPARE = '\255~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~'  -- (see zadd_all)
local function zadd(key, list)  -- zadd_all (see include/checks.lua), inlined
    local convert = redis.call('OBJECT', 'ENCODING', key) ~= 'skiplist'
    for i = 1, #list, 8000 do
        local j = math.min(i + 7999, #list)
        if convert and i == 1 then
            redis.call('ZADD', key, '+inf', SPARE, unpack(list, i, j))
        else
            redis.call('ZADD', key, unpack(list, i, j))
        end
    end
    if convert then redis.call('ZREM', key, SPARE) end
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
elseif check ~= '' and redis.call('EXISTS', check) == 0 then
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
        redis.call('HSET', taskp .. id, 'status', status, 'queue', queue, 'seq', s,
            'created_at', at, 'run_at', run_at, 'name', name,
            'payload', ARGV[j + 1], unpack(extra))
        n = n + 2
        listed[n - 1] = at
        listed[n] = s .. ':' .. id
        if status == 'running' then ids[#ids + 1] = id end
    end
    local q = P .. 'q:' .. queue .. ':'
    if status == 'pending' or status == 'scheduled' or status == 'retrying' then
        local waiting = {}
        for j = 1, n, 2 do waiting[j] = run_at; waiting[j + 1] = listed[j + 1] end
        if ckey then  -- the key's lane (see include/lanes.lua: lkey, lane_level, lane_in), inlined
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
        local keeper = '~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~'
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
for queue, n in pairs(woken) do  -- inbox_wake (see include/inbox.lua), inlined
    local key = P .. 'q:' .. queue .. ':inbox'
    local room = 8 - redis.call('LLEN', key)
    if room > 0 then
        local tokens = {}
        for t = 1, math.min(n, room) do tokens[t] = 't' .. woken_at[queue] end
        redis.call('RPUSH', key, unpack(tokens))
    end
end
return {'ok'}
