-- What the scripts wrapped by flush.lua need, and check.lua: the prefix P (ARGV[1]), the checks,
-- key names and small helpers. The inbox (inbox.lua) comes after it in the scripts that drain
-- or wake: a script's every run defines each of its functions again, so a script includes only
-- what it uses.

local P = ARGV[1]
--#include checks

local WAITING = {pending = true, scheduled = true, retrying = true}
local function tkey(id) return P .. 'task:' .. id end
local function qkey(queue, kind) return P .. 'q:' .. queue .. ':' .. kind end
-- The waiting zset of a task of priority p (its hash field: absent or '0' is the plain one).
local function wkey(queue, p)
    if not p or p == '0' then return qkey(queue, 'waiting') end
    return qkey(queue, 'waiting:' .. p)
end
-- A task of priority p enters its waiting zset again: list its level (claims drop a level
-- whose zset they find gone).
local function level(queue, p)
    if p and p ~= '0' then redis.call('SADD', qkey(queue, 'levels'), p) end
end
local function chunks(cmd, key, list, step)
    for i = 1, #list, step do
        redis.call(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
    end
end
-- The running zset keeps this member (longer than zset-max-listpack-value, 64 by default),
-- so Redis stores it as a skiplist from the start: leases churn in batches, and every insert
-- into a small (listpack) zset parses the scores before it, several times slower.
local KEEPER = '~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~'  -- (80: a literal costs
-- nothing at a run, string.rep some 5k instructions)
