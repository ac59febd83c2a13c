-- ARGV: P, worker id, queue, beat JSON, now, expires_at ('' = the worker left), oldest minute
-- kept, then pairs of "minute:outcome", n. Stores the beat, drops expired ones, adds the counts.
--#include prelude

local function body()
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
end
--#include may_fill
--#include flush
