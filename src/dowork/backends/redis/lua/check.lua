-- ARGV: P, flag, then ids. Returns the first id already taken (or repeated), else sets the
-- flag key and returns "". Runs first in a transaction of several push.lua calls, which write
-- only if the flag is set: a taken id anywhere means none of them writes, and so does this
-- script not running at all (a Redis that lost its scripts answers NOSCRIPT to this call and
-- runs the rest of the transaction).
--#include base

local seen = {}
for i = 3, #ARGV do
    local id = ARGV[i]
    if seen[id] or redis.call('EXISTS', tkey(id)) == 1 then
        return id
    end
    seen[id] = true
end
redis.call('SET', ARGV[2], '1')
return ''
