-- ARGV: P, queue. Sent right behind a worker's pop of the queue's inbox into taken (BLMOVE),
-- in the same round trip: of the tasks in taken (popped, not recorded yet: see take.lua),
-- returns {ids a worker may start, ids it must not}: an id already in use (a finished task's,
-- say, written again by hand) or found twice there is not to be started, but given back to a
-- claim (see inbox_put). The popping worker finds its entry's id in one list, or in neither if
-- a drain stored it meanwhile (then it asks take.lua before it starts the task).
-- Self-contained.

local P = ARGV[1]
local seen, order, ok, bad = {}, {}, {}, {}
for _, e in ipairs(redis.call('LRANGE', P .. 'q:' .. ARGV[2] .. ':taken', '0', '999')) do
    if string.sub(e, 1, 1) == 'r' then
        local z = string.find(e, '\0', 2, true)
        if z and z > 2 then
            local id = string.sub(e, 2, z - 1)
            if not seen[id] then order[#order + 1] = id end
            seen[id] = (seen[id] or 0) + 1
        end
    end
end
for _, id in ipairs(order) do
    if seen[id] > 1 or redis.call('EXISTS', P .. 'task:' .. id) == 1 then
        bad[#bad + 1] = id
    else
        ok[#ok + 1] = id
    end
end
return {ok, bad}
