-- ARGV: P, queue, offset, limit, newest ('1' or ''), then the statuses (none: all).
-- Returns one page of the queue's task hashes (HGETALL lists, with an id field: see NEEDED)
-- in created_at order.
--#include prelude
--#include inbox

local function body()
local queue, offset, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local newest = ARGV[5] == '1'
local range = newest and 'ZREVRANGE' or 'ZRANGE'
local statuses = {}
for i = 6, #ARGV do statuses[#statuses + 1] = ARGV[i] end
if #statuses == 0 then
    statuses = {'pending', 'scheduled', 'retrying', 'reserved', 'running', 'succeeded',
        'failed', 'cancelled', 'dead'}
end
local page = {}
if #statuses == 1 and not leased(statuses[1]) then
    local key = qkey(queue, 'created.' .. statuses[1])
    for _, m in ipairs(redis.call(range, key, offset, offset + limit - 1)) do
        page[#page + 1] = string.sub(m, 18)
    end
else
    -- Merge by (created_at, seq): the page lies within the first offset + limit of each
    -- listing; leased tasks (a few per worker) come from the running zset.
    local all = {}
    for _, status in ipairs(statuses) do
        if leased(status) then
            for _, id in ipairs(redis.call('ZRANGE', qkey(queue, 'running'), 0, -1)) do
                local rec = redis.call('HMGET', tkey(id), 'created_at', 'seq', 'status')
                if rec[3] == status then  -- (a field changed by hand sorts first)
                    all[#all + 1] = {decimal(rec[1]) or 0, tonumber(rec[2] or '', 16) or 0, id}
                end
            end
        else
            local key = qkey(queue, 'created.' .. status)
            local flat = redis.call(range, key, 0, offset + limit - 1, 'WITHSCORES')
            for j = 1, #flat, 2 do
                local m = flat[j]
                all[#all + 1] = {tonumber(flat[j + 1]), tonumber(string.sub(m, 1, 16), 16),
                    string.sub(m, 18)}
            end
        end
    end
    table.sort(all, function(a, b)  -- by (created_at, seq), like the zsets
        local x, y = a, b
        if newest then x, y = b, a end
        if x[1] ~= y[1] then return x[1] < y[1] end
        return x[2] < y[2]
    end)
    for i = offset + 1, math.min(#all, offset + limit) do page[#page + 1] = all[i][3] end
end
local out = {}
for _, id in ipairs(page) do
    local h = redis.call('HGETALL', tkey(id))
    if #h > 0 then
        local named = false
        for j = 1, #h, 2 do if h[j] == 'id' then named = true; break end end
        if not named then h[#h + 1], h[#h + 2] = 'id', id end
        out[#out + 1] = h
    end
end
return out
end
drain_all()
--#include flush
