-- ARGV: P, flag, then ids. Sets the flag key and returns the first id already taken (or
-- repeated), else returns "". Runs first in a transaction of several push.lua calls, so that a
-- taken id anywhere means none of them writes.
--#include base

local seen = {}
for i = 3, #ARGV do
    local id = ARGV[i]
    if seen[id] or redis.call('EXISTS', tkey(id)) == 1 then
        redis.call('SET', ARGV[2], '1')
        return id
    end
    seen[id] = true
end
return ''
