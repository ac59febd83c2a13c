-- ARGV: P, now, batch. Deletes up to batch finished records whose expires_at < now.
--#include prelude

local function body()
local ids = redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', '(' .. ARGV[2],
    'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
    redis.call('ZREM', P .. 'expiry', id)
    local key = tkey(id)
    local rec = redis.call('HMGET', key, 'status', 'queue', 'seq')
    if rec[1] then
        redis.call('DEL', key)
        if rec[2] and status_ok(rec[1]) then  -- (else no count holds it: written by hand)
            if rec[3] and seq_ok(rec[3]) then
                forget(rec[2], rec[1], member(rec[3], id))
            else
                count(rec[2], rec[1], -1)
                EMPTIED[rec[2]] = true
            end
        end
    end
end
return #ids
end
--#include flush
