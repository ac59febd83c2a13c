-- ARGV: P, n, then n x (id, token, status, now, run_at, error?, reason?, result?,
-- expires_at ('' = forget the record), payload?, attempt?, ran). status 'retrying' means RETRY,
-- 'started' the STARTED mark (a reserved record becomes running, started + 1); attempt is a
-- line appended to the task's history; ran is '1' when the function ran, so that an outcome
-- on a record still reserved counts its start. See Backend.settle for late settlements.
-- Returns the ids refused because the record is not leased under that token.
-- lease_until and owner are left in the hash: they mean nothing once the lease is over.
--#include prelude

local function body()
local refused, accepted, leases, broken = {}, {}, {}, {}
-- A settlement for token, whose lapsed lease the reaper charged as a crash (its token is in
-- the charged field, rec[9]): its worker was alive, so the charge moves to lost; and if no
-- lease was granted since and the record waits or was dead-lettered for crashes, the
-- outcome applies after all: the record is made running again (rec[1]) for it. Returns
-- whether it applies. A record whose fields cannot be read is left alone (a claim buries it).
local function late(id, token, rec)
    local kept, found = {}, false
    for t in string.gmatch(rec[9], '[^,]+') do
        if not found and t == token then found = true else kept[#kept + 1] = t end
    end
    if not found then return false end
    local key = tkey(id)
    local more = redis.call('HMGET', key, 'crashes', 'lost', 'reason', 'priority', 'run_at')
    if not (more[1] and count_ok(more[1]) and tonumber(more[1]) > 0)
        or (more[2] and not count_ok(more[2])) or not (rec[4] and seq_ok(rec[4]))
        or not decimal(rec[5]) or (more[4] and not LEVELS[more[4]])
    then
        return false
    end
    local fields = {'crashes', string.format('%d', tonumber(more[1]) - 1),
        'lost', string.format('%d', tonumber(more[2] or '0') + 1)}
    if #kept == 0 then
        redis.call('HDEL', key, 'charged')
    else
        fields[#fields + 1] = 'charged'
        fields[#fields + 1] = table.concat(kept, ',')
    end
    local status, queue, k = rec[1], rec[3], rec[8]
    local revive = tonumber(rec[2]) == tonumber(token)
        and (WAITING[status] or (status == 'dead' and more[3] == 'crashed_worker'))
    if revive then
        local m = member(rec[4], id)
        if WAITING[status] then
            redis.call('ZREM', zkey(queue, more[4], k), m)
            if k then lane_out(qkey(queue, ''), k, decimal(more[5]) and more[5] or '-inf') end
        else
            redis.call('ZREM', P .. 'expiry', id)
        end
        redis.call('HDEL', key, 'reason', 'finished_at', 'expires_at')
        fields[#fields + 1] = 'status'
        fields[#fields + 1] = 'running'
        move(queue, m, rec[5], status, 'running')
        running_key(queue, k, 1)
        rec[1] = 'running'
    end
    redis.call('HSET', key, unpack(fields))
    return revive
end
for i = 0, tonumber(ARGV[2]) - 1 do
    local b = 3 + i * 12
    local id, token, outcome = ARGV[b], ARGV[b + 1], ARGV[b + 2]
    local rec = redis.call('HMGET', tkey(id), 'status', 'attempts', 'queue', 'seq',
        'created_at', 'error', 'history', 'concurrency_key', 'charged', 'started')
    local ok = LEASED[rec[1]] and tonumber(rec[2]) == tonumber(token) and rec[3]
    if not ok and outcome ~= 'started' and rec[3] and rec[9] and tokens_ok(rec[9]) then
        ok = late(id, token, rec)
    end
    if not ok then
        refused[#refused + 1] = id
    elseif outcome == 'started' then  -- (a running record: started already, nothing to do)
        if rec[1] == 'reserved' and ARGV[b + 11] == '1' and (not rec[10] or count_ok(rec[10]))
        then
            redis.call('HSET', tkey(id), 'status', 'running',
                'started', string.format('%d', tonumber(rec[10] or '0') + 1))
            move(rec[3], nil, nil, 'reserved', 'running')
        end
    else
        -- A record changed by hand while it ran is dead-lettered instead (see bury); an
        -- outcome's times that cannot be used are replaced by now.
        local why = nil
        if outcome == 'retrying' then  -- (a finished task needs no priority: an absent
            rec[11] = redis.call('HGET', tkey(id), 'priority')  -- field costs a hash scan)
        end
        if not (rec[4] and seq_ok(rec[4])) then why = 'seq is missing or not 16 hex digits'
        elseif not decimal(rec[5]) then why = 'created_at is not a number'
        elseif rec[11] and not LEVELS[rec[11]] then why = 'priority is ' .. shown(rec[11])
        elseif rec[10] and not count_ok(rec[10]) then why = 'started is ' .. shown(rec[10]) end
        if not decimal(ARGV[b + 4]) then ARGV[b + 4] = ARGV[b + 3] end
        if ARGV[b + 8] ~= '' and not decimal(ARGV[b + 8]) then ARGV[b + 8] = ARGV[b + 3] end
        if why then
            broken[#broken + 1] = {b, rec, why}
        else
            accepted[#accepted + 1] = {b, rec}
        end
        gather(leases, qkey(rec[3], 'running'), id)
    end
end
-- The leases go first: a write that frees memory, after which Redis lets this script finish
-- its writes even at maxmemory (noeviction), so outcomes are stored while submits are refused.
for key, list in pairs(leases) do chunks('ZREM', key, list, 4000) end
for _, a in ipairs(broken) do
    local b, rec = a[1], a[2]
    local id, now = ARGV[b], ARGV[b + 3]
    running_key(rec[3], rec[8], -1)
    local m = seq_ok(rec[4] or '') and member(rec[4], id) or nil
    local expires = ARGV[b + 8] ~= '' and ARGV[b + 8] or now
    bury(rec[3], id, m, {created_at = rec[5]}, a[3], rec[1], now, expires)
end
for _, a in ipairs(accepted) do
    local b, rec = a[1], a[2]
    local id, status, now = ARGV[b], ARGV[b + 2], ARGV[b + 3]
    local key = tkey(id)
    do
        local queue, m = rec[3], member(rec[4], id)
        local err = ARGV[b + 5]
        running_key(queue, rec[8], -1)
        if ARGV[b + 8] == '' and status ~= 'retrying' then
            redis.call('DEL', key)
            forget(queue, rec[1], m)
        else
            if err == '' and rec[6] then redis.call('HDEL', key, 'error') end
            local fields = {'status', status, 'updated_at', now}
            if err ~= '' then
                fields[#fields + 1] = 'error'
                fields[#fields + 1] = string.sub(err, 2)
            end
            if status == 'retrying' then
                fields[#fields + 1] = 'run_at'
                fields[#fields + 1] = ARGV[b + 4]
                if ARGV[b + 9] ~= '' then
                    fields[#fields + 1] = 'payload'
                    fields[#fields + 1] = string.sub(ARGV[b + 9], 2)
                end
                local p = rec[11]
                if rec[8] then  -- (a lane's earliest run_at is read now: no gathering)
                    redis.call('ZADD', zkey(queue, p, rec[8]), ARGV[b + 4], m)
                else
                    gather(ZADDS, wkey(queue, p), ARGV[b + 4], m)
                end
                entered(queue, p, rec[8], ARGV[b + 4])
            else
                fields[#fields + 1] = 'finished_at'
                fields[#fields + 1] = now
                fields[#fields + 1] = 'expires_at'
                fields[#fields + 1] = ARGV[b + 8]
                if ARGV[b + 6] ~= '' then
                    fields[#fields + 1] = 'reason'
                    fields[#fields + 1] = string.sub(ARGV[b + 6], 2)
                end
                if ARGV[b + 7] ~= '' then
                    fields[#fields + 1] = 'result'
                    fields[#fields + 1] = string.sub(ARGV[b + 7], 2)
                end
                gather(ZADDS, P .. 'expiry', ARGV[b + 8], id)
            end
            if ARGV[b + 10] ~= '' then
                fields[#fields + 1] = 'history'
                fields[#fields + 1] = (rec[7] or '') .. string.sub(ARGV[b + 10], 2) .. '\n'
            end
            if rec[1] == 'reserved' and ARGV[b + 11] == '1' then  -- its start counts too
                fields[#fields + 1] = 'started'
                fields[#fields + 1] = string.format('%d', tonumber(rec[10] or '0') + 1)
            end
            redis.call('HSET', key, unpack(fields))
            move(queue, m, rec[5], rec[1], status)
        end
    end
end
return refused
end
--#include flush
