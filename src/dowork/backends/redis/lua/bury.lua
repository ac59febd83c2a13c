-- ARGV: P, now, expires_at, n, then n x (id, token, why). Dead-letters as malformed the records
-- a claim gave out that Python cannot read (see bury in include/checks.lua, and split_claimed
-- in records.py), if they still run on that token. Returns the ids dead-lettered.
--#include prelude

local function body()
local now, expires = ARGV[2], ARGV[3]
local buried = {}
for i = 0, tonumber(ARGV[4]) - 1 do
    local b = 5 + i * 3
    local id = ARGV[b]
    local v = fields(redis.call('HGETALL', tkey(id)))
    if leased(v.status) and v.queue and tonumber(v.attempts) == tonumber(ARGV[b + 1]) then
        redis.call('ZREM', qkey(v.queue, 'running'), id)
        running_key(v.queue, v.concurrency_key, -1)
        local m = v.seq and seq_ok(v.seq) and member(v.seq, id) or nil
        bury(v.queue, id, m, v, ARGV[b + 2], v.status, now, expires)
        buried[#buried + 1] = id
    end
end
return buried
end
--#include flush
