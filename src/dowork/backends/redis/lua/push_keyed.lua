-- ARGV: P, n, then n x (id, queue, name, payload, run_at, created_at, status, options?,
-- attempts, priority, slot?, concurrency key?), then k and k x (record index, idempotency
-- key, until ('u': a unique key, held while its task waits or runs), ttl ms). The push of
-- records that carry idempotency keys (push.lua is the fast path for those that do not).
-- Returns {'ok', then the id and holder id of each record whose idempotency key was held (not
-- written)}, or {'duplicate', id} having written nothing.
--#include prelude
--#include inbox

local function body()
local n = tonumber(ARGV[2])
local seen = {}
for i = 0, n - 1 do
    local id = ARGV[3 + i * 12]
    if seen[id] or redis.call('EXISTS', tkey(id)) == 1 then return {'duplicate', id} end
    seen[id] = true
end
local ok, todo, keyed, k0 = {'ok'}, {}, {}, 3 + n * 12
for j = 0, tonumber(ARGV[k0] or '0') - 1 do
    keyed[tonumber(ARGV[k0 + 1 + j * 4])] = k0 + 2 + j * 4
end
for i = 0, n - 1 do
    local b, kb = 3 + i * 12, keyed[i]
    local held = kb and redis.call('HMGET', P .. 'idem:' .. ARGV[kb], 'id', 'until') or {}
    local taken = false
    if held[1] and held[2] == 'u' then  -- a unique key: taken while its task waits or runs
        local st = redis.call('HGET', tkey(held[1]), 'status')
        taken = st and (WAITING[st] or leased(st)) or false
    elseif held[1] then
        taken = tonumber(held[2]) > tonumber(ARGV[b + 5])
    end
    if taken then
        ok[#ok + 1] = ARGV[b]; ok[#ok + 1] = held[1]
    else
        if kb then
            redis.call('HSET', P .. 'idem:' .. ARGV[kb], 'id', ARGV[b], 'until', ARGV[kb + 1])
            redis.call('PEXPIRE', P .. 'idem:' .. ARGV[kb], ARGV[kb + 2])
        end
        todo[#todo + 1] = i
    end
end
local seq = redis.call('INCRBY', P .. 'seq', n) - n
local woken = {}
for _, i in ipairs(todo) do
    local b = 3 + i * 12
    local id, queue, status, at = ARGV[b], ARGV[b + 1], ARGV[b + 6], ARGV[b + 5]
    local prio = ARGV[b + 9]
    local ckey = ARGV[b + 11] ~= '' and string.sub(ARGV[b + 11], 2)
    local key = tkey(id)
    seq = seq + 1
    local m = member(string.format('%016x', seq), id)
    redis.call('HSET', key, 'status', status, 'queue', queue, 'seq', string.format('%016x', seq),
        'created_at', at, 'run_at', ARGV[b + 4], 'name', ARGV[b + 2],
        'payload', ARGV[b + 3], 'attempts', ARGV[b + 8])
    setopt(key, 'options', ARGV[b + 7])
    if prio ~= '0' then redis.call('HSET', key, 'priority', prio) end
    if ARGV[b + 10] ~= '' then setopt(key, 'slot', ARGV[b + 10]) end
    if ckey then redis.call('HSET', key, 'concurrency_key', ckey) end
    if WAITING[status] then
        redis.call('ZADD', zkey(queue, prio, ckey), ARGV[b + 4], m)
        entered(queue, prio, ckey, ARGV[b + 4])
    elseif status == 'running' then  -- never expires, like a lease nobody holds
        redis.call('ZADD', qkey(queue, 'running'), '+inf', KEEPER, '+inf', id)
        running_key(queue, ckey, 1)
    end
    move(queue, m, at, nil, status)
    redis.call('SADD', P .. 'queues', queue)
    woken[queue] = {(woken[queue] or {0})[1] + 1, at}
end
for queue, w in pairs(woken) do inbox_wake(queue, w[1], w[2]) end
return ok
end
drain_all()
--#include flush
