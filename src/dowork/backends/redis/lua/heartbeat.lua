-- ARGV: P, lease_until, n, then n x (id, token). Returns one code per lease:
-- 0 lost, 1 extended, 2 extended and asked to cancel.
--#include prelude

local function body()
local codes = {}
for i = 0, tonumber(ARGV[3]) - 1 do
    local id = ARGV[4 + i * 2]
    local key = tkey(id)
    local rec = redis.call('HMGET', key, 'status', 'attempts', 'queue', 'cancel_requested')
    if not leased(rec[1]) or tonumber(rec[2]) ~= tonumber(ARGV[5 + i * 2]) or not rec[3] then
        codes[#codes + 1] = 0
    else
        redis.call('HSET', key, 'lease_until', ARGV[2])
        gather(ZADDS, qkey(rec[3], 'running'), ARGV[2], id)
        codes[#codes + 1] = rec[4] == '1' and 2 or 1
    end
end
return codes
end
--#include may_fill
--#include flush
