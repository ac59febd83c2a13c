-- ARGV: P, now, n, then n ids. Sends failed, cancelled and dead tasks back to pending
-- (attempts kept: it is the fencing token). Returns id, queue of each task requeued.
--#include prelude
--#include inbox

local function body()
local now = ARGV[2]
local done, queues = {}, {}
for i = 1, tonumber(ARGV[3]) do
    local id = ARGV[3 + i]
    local key = tkey(id)
    local rec = redis.call('HMGET', key, 'status', 'queue', 'seq', 'created_at', 'priority',
        'concurrency_key')
    local status, queue = rec[1], rec[2]
    local readable = queue and rec[3] and seq_ok(rec[3]) and decimal(rec[4])
        and (not rec[5] or level_ok(rec[5]))  -- (else left alone: changed by hand)
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
end
drain_all()
--#include flush
