-- ARGV: P, now, n, then n ids. Makes later-due waiting records due now; returns
-- {id, queue, ...} of those released.
--#include prelude
--#include inbox

local function body()
local now, released, woken = ARGV[2], {}, {}
for i = 1, tonumber(ARGV[3]) do
    local id = ARGV[3 + i]
    local key = tkey(id)
    local rec = redis.call('HMGET', key, 'status', 'queue', 'seq', 'created_at', 'run_at',
        'priority', 'concurrency_key')
    local status, queue = rec[1], rec[2]
    local readable = queue and rec[3] and seq_ok(rec[3]) and decimal(rec[4])
        and (decimal(rec[5]) or rec[5] == 'inf')  -- (call_at(inf): never, unless released)
        and (not rec[6] or level_ok(rec[6]))  -- (else left alone: the next claim buries it)
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
end
drain_all()
--#include flush
