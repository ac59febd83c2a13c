-- ARGV: P, n, then n x (id, token, progress). Stores progress on records still on that attempt.
--#include prelude

local function body()
for i = 0, tonumber(ARGV[2]) - 1 do
    local key = tkey(ARGV[3 + i * 3])
    local attempts = redis.call('HGET', key, 'attempts')
    if attempts and tonumber(attempts) == tonumber(ARGV[4 + i * 3]) then
        redis.call('HSET', key, 'progress', ARGV[5 + i * 3])
    end
end
return 0
end
--#include flush
