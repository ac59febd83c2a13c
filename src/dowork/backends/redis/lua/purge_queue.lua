-- ARGV: P, queue, batch, then the statuses to delete (none: every status but the leased ones).
-- Deletes up to batch of the queue's tasks in those statuses; returns how many.
--#include prelude
--#include inbox

local function body()
local queue, left = ARGV[2], tonumber(ARGV[3])
local statuses = {}
if #ARGV > 3 then
    for i = 4, #ARGV do statuses[#statuses + 1] = ARGV[i] end
else
    for _, status in ipairs(redis.call('HKEYS', qkey(queue, 'counts'))) do
        if not leased(status) then statuses[#statuses + 1] = status end
    end
end
for _, status in ipairs(statuses) do
    if left <= 0 then break end
    local members
    if leased(status) then  -- (the running zset holds both: a few per worker)
        members = {}
        for _, id in ipairs(redis.call('ZRANGE', qkey(queue, 'running'), 0, -1)) do
            if #members >= left then break end
            if id ~= KEEPER and redis.call('HGET', tkey(id), 'status') == status then
                members[#members + 1] = id
            end
        end
    else
        members = redis.call('ZRANGE', qkey(queue, 'created.' .. status), 0, left - 1)
    end
    for _, m in ipairs(members) do
        if m == KEEPER then
            left = left + 1  -- not a task
        else
            if leased(status) then
                local rec = redis.call('HMGET', tkey(m), 'status', 'concurrency_key')
                running_key(queue, rec[2], -1)
                redis.call('DEL', tkey(m))
                redis.call('ZREM', qkey(queue, 'running'), m)
            else
                local id = string.sub(m, 18)
                if WAITING[status] then
                    local rec = redis.call('HMGET', tkey(id), 'priority', 'concurrency_key',
                        'run_at')  -- (false: 0, none)
                    redis.call('ZREM', zkey(queue, rec[1], rec[2]), m)
                    if rec[2] then
                        lane_out(qkey(queue, ''), rec[2], decimal(rec[3]) and rec[3] or '-inf')
                    end
                else
                    redis.call('ZREM', P .. 'expiry', id)
                end
                redis.call('DEL', tkey(id))
            end
            forget(queue, status, m)
        end
    end
    left = left - #members
end
return tonumber(ARGV[3]) - left
end
drain_all()
--#include flush
