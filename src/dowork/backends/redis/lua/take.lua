-- ARGV: P, queue, entry, owner, lease_until, now. A worker popped entry (a task) from the
-- queue's inbox into taken and started it: lease it to owner until lease_until, with attempts
-- 1, as a claim would have. Returns 1, 2 if it is to be cancelled already, or 0 if the task is
-- not this worker's to run any more (drained, then reaped after the queue's transit: see
-- reap.lua; or wiped).
-- Self-contained: a worker runs it for every task it pops. An entry still in taken, of an id
-- not in use and a time written the plain way, is stored at once, as inbox_put would store it,
-- without the checks and the inbox (every run of a script defines each of its functions
-- again); any other case goes to full. The record stored at once is leased as pushed, with
-- attempts '01' (see FRESH in claim.lua).

local P, queue, e, owner, lease, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local q = P .. 'q:' .. queue .. ':'

local function full(removed)
--#include checks
--#include inbox
    local f = inbox_fields(e)
    if removed then
        if inbox_taken(queue, e, owner, lease, now, f) ~= 'running' then return 0 end  -- (junk)
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
end

if redis.call('LREM', q .. 'taken', '1', e) ~= 1 then return full(false) end
-- The entry's fields (see inbox_fields): "r" id NUL name NUL created_at NUL options NUL payload.
local find, sub = string.find, string.sub
local a = sub(e, 1, 1) == 'r' and find(e, '\0', 2, true)
local b = a and find(e, '\0', a + 1, true)
local c = b and find(e, '\0', b + 1, true)
local d = c and find(e, '\0', c + 1, true)
local id, at = a and sub(e, 2, a - 1), c and sub(e, b + 1, c - 1)
if not (d and a > 2 and #at <= 40 and find(at, '^%d+%.?%d*$')) then return full(true) end
local key = P .. 'task:' .. id
if redis.call('EXISTS', key) == 1 then return full(true) end  -- (junk: see inbox_put)
local s = string.format('%016x', redis.call('INCR', P .. 'seq'))
local fields = {'status', 'running', 'queue', queue, 'seq', s, 'created_at', at, 'run_at', at,
    'name', sub(e, a + 1, b - 1), 'payload', sub(e, d + 1)}
if d > c + 1 then fields[15], fields[16] = 'options', sub(e, c + 2, d - 1) end
local n = #fields
fields[n + 1], fields[n + 2], fields[n + 3], fields[n + 4] = 'attempts', '01', 'started', '1'
fields[n + 5], fields[n + 6], fields[n + 7], fields[n + 8] = 'lease_until', lease, 'owner', owner
fields[n + 9], fields[n + 10] = 'updated_at', now
redis.call('HSET', key, unpack(fields))
local keeper = '~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~'  -- KEEPER
redis.call('ZADD', q .. 'running', '+inf', keeper, lease, id)
if redis.call('HINCRBY', q .. 'counts', 'running', '1') == 1 then
    redis.call('SADD', P .. 'queues', queue)
end
return 1
