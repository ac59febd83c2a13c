-- ARGV: P, queue, now, crash_budget, expires_at[, transit]. Returns {requeued, dead_lettered,
-- the ids of those dead-lettered as malformed (see bury)}.
-- A lapsed lease of a running task is a crash: crashes + 1, its token added to charged (see
-- charge), dead-lettered crashed_worker at crash_budget, else retrying. One of a reserved task
-- (never started) is not: lost + 1, and it waits again, pending. Either way run_at is kept,
-- so the task goes back to its place at the head of the queue. A task popped from the inbox
-- and never taken (listed in transit by a drain, see inbox.lua) lapses once transit seconds
-- have passed since the drain found it, if still leased to no one (its worker died, or its
-- pop's reply was lost): the worker's lease less its maintenance, so that it runs again within
-- a lease of the pop, as a crashed worker's task does; without transit, a minute after.
--#include prelude
--#include inbox

local function body()
local queue, now = ARGV[2], ARGV[3]
local running = qkey(queue, 'running')
local requeued, dead, buried = 0, 0, {}
if ARGV[6] then  -- (a minute of the drain's lease otherwise: TRANSIT)
    local transit, lapsed = qkey(queue, 'transit'), tonumber(now) - tonumber(ARGV[6])
    local found = redis.call('ZRANGEBYSCORE', transit, '-inf', lapsed)
    for _, id in ipairs(found) do
        local h = redis.call('HMGET', tkey(id), 'status', 'owner')
        if h[1] == 'running' and h[2] == '~' then
            redis.call('ZADD', running, 'XX', lapsed, id)  -- (reaped below)
        end
    end
    if #found > 0 then redis.call('ZREMRANGEBYSCORE', transit, '-inf', lapsed) end
end
-- Add token to a charged list, keeping the last 16. (The token the plain way: attempts may be
-- '01', see FRESH in claim.lua.)
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
    if leased(rec[1]) then
        if not (rec[2] and seq_ok(rec[2])) then why = 'seq is missing or not 16 hex digits'
        elseif not decimal(rec[3]) then why = 'created_at is not a number'
        elseif rec[4] and not decimal(rec[4]) then why = 'run_at is ' .. shown(rec[4])
        elseif rec[5] and not level_ok(rec[5]) then why = 'priority is ' .. shown(rec[5])
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
        buried[#buried + 1] = id
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
            'charged', charge(rec[9], string.format('%d', tonumber(rec[8]))))
        if crashes >= tonumber(ARGV[4]) then
            redis.call('HSET', key, 'status', 'dead', 'reason', 'crashed_worker',
                'error', 'the worker running it stopped renewing its lease ' .. crashes ..
                ' times', 'updated_at', now, 'expires_at', ARGV[5])
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
return {requeued, dead, buried}
end
--#include may_fill
drain_all()
--#include flush
