-- ARGV: P, id, now, expires_at. Returns cancelled, requested, finished or unknown.
--#include prelude
--#include inbox

local function body()
local id, now = ARGV[2], ARGV[3]
local key = tkey(id)
local rec = redis.call('HMGET', key, 'status', 'queue', 'seq', 'created_at', 'priority',
    'concurrency_key', 'run_at')
local status, queue = rec[1], rec[2]
if not status then return 'unknown' end
if WAITING[status] and not (queue and rec[3] and seq_ok(rec[3]) and decimal(rec[4])
    and (not rec[5] or level_ok(rec[5]))) then
    return 'unknown'  -- (a record changed by hand: the next claim dead-letters it)
end
if WAITING[status] then
    local m = member(rec[3], id)
    redis.call('HSET', key, 'status', 'cancelled', 'error', 'cancelled', 'updated_at', now,
        'expires_at', ARGV[4])
    redis.call('ZREM', zkey(queue, rec[5], rec[6]), m)
    if rec[6] then lane_out(qkey(queue, ''), rec[6], decimal(rec[7]) and rec[7] or '-inf') end
    redis.call('ZADD', P .. 'expiry', ARGV[4], id)
    move(queue, m, rec[4], status, 'cancelled')
    return 'cancelled'
end
if leased(status) then
    redis.call('HSET', key, 'cancel_requested', '1')
    return 'requested'
end
return 'finished'
end
drain_all()
--#include flush
