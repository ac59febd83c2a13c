-- ARGV: P, queue, entry, owner, lease_until, now. A worker popped entry (a task) from the
-- queue's inbox into taken and started it: lease it to owner until lease_until, with attempts
-- 1, as a claim would have. Returns 1, 2 if it is to be cancelled already, or 0 if the task is
-- not this worker's to run any more (drained, then reaped after TRANSIT, or wiped).
-- Self-contained: a worker runs it for every task it pops.

local P, queue, e, owner, lease, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
--#include checks
--#include inbox

local q = P .. 'q:' .. queue .. ':'
local f = inbox_fields(e)
if redis.call('LREM', q .. 'taken', 1, e) == 1 then
    if inbox_taken(queue, e, owner, lease, now, f) ~= 'running' then return 0 end  -- (garbage)
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
