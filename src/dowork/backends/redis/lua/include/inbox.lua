-- The inbox (see the key schema in redis/__init__.py): submit() appends a pending task there
-- with plain commands (RPUSH, SADD), no script, and an idle worker pops it straight into taken
-- and starts it before any script runs (take.lua then records the lease). Every script that
-- reads or writes a queue's waiting tasks drains its inbox first, so that everything else sees
-- the tasks as if push.lua had stored them; wake-up tokens ("t" then a time) go there too.
-- Needs P and checks.lua, included before it.

-- An entry: "r" id NUL name NUL created_at NUL options ("" or "=" json) NUL payload, then
-- created_at as a number; nil if malformed.
local function inbox_fields(e)
    if string.sub(e, 1, 1) ~= 'r' then return nil end
    local f, pos = {}, 2
    for i = 1, 4 do
        local z = string.find(e, '\0', pos, true)
        if not z then return nil end
        f[i] = string.sub(e, pos, z - 1)
        pos = z + 1
    end
    f[5] = string.sub(e, pos)
    f[6] = decimal(f[3])
    if f[1] == '' or not f[6] then return nil end
    return f
end
-- Store entry e of the queue's inbox as a task: waiting, or (owner given) running, leased
-- to owner until lease with attempts 1, as a claim would have. A malformed entry, or one of
-- an id already taken, becomes a task of no known name holding the entry as its payload and
-- saying why in its malformed field, for the next claim to dead-letter (see bury).
-- A running task was updated at now (default: the entry's time). f is inbox_fields(e) if
-- the caller has it. Returns the entry's time (0 for such junk), its id, its status and its
-- time as a number.
local function inbox_put(queue, e, owner, lease, now, f)
    local why = 'inbox entry that cannot be read'
    f = f or inbox_fields(e)
    if f and redis.call('EXISTS', P .. 'task:' .. f[1]) == 1 then  -- (written by hand)
        f, why = nil, 'inbox entry of a task id in use (' .. shown(f[1]) .. ')'
    end
    local s = string.format('%016x', redis.call('INCR', P .. 'seq'))
    local run_at, x = f and f[3], f and f[6]
    if not f then  -- (waiting, due at once, never running: the next claim dead-letters it)
        owner, run_at, x = nil, '0', 0
        local t = redis.call('TIME')
        local at = t[1] .. '.' .. string.format('%06d', t[2])
        f = {'junk-' .. s, '<malformed inbox entry>', at, '', e}
        redis.call('HSET', P .. 'task:' .. f[1], 'malformed', why)
    end
    local id, at = f[1], f[3]
    local key, q, m = P .. 'task:' .. id, P .. 'q:' .. queue .. ':', s .. ':' .. id
    local status = owner and 'running' or 'pending'
    local fields = {'status', status, 'queue', queue, 'seq', s, 'created_at', at,
        'run_at', run_at, 'name', f[2], 'payload', f[5]}
    if f[4] ~= '' then fields[15], fields[16] = 'options', string.sub(f[4], 2) end
    if owner then  -- (popped and started at once: take.lua)
        local n = #fields
        fields[n + 1], fields[n + 2], fields[n + 3], fields[n + 4] = 'attempts', '1', 'started', '1'
        fields[n + 5], fields[n + 6], fields[n + 7], fields[n + 8] = 'lease_until', lease, 'owner',
            owner
        fields[n + 9], fields[n + 10] = 'updated_at', now or at
    end
    redis.call('HSET', key, unpack(fields))
    if owner then
        local keeper = '~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~'  -- KEEPER
        redis.call('ZADD', q .. 'running', '+inf', keeper, lease, id)
    else
        redis.call('ZADD', q .. 'waiting', run_at, m)
        redis.call('ZADD', q .. 'created.pending', at, m)
    end
    if redis.call('HINCRBY', q .. 'counts', status, '1') == 1 then
        redis.call('SADD', P .. 'queues', queue)
    end
    return run_at, id, status, x
end
-- Wake up to n idle workers of the queue: a token in its inbox, unless it holds 8 entries
-- already (so pushes while every worker is busy cost nothing more). A token is a time (the
-- caller's now) by which the work it announces was due: the claim that drains it uses it as
-- its now when later. EMPTIED_INBOX holds the queues whose inbox this run emptied (see
-- drain) and nothing pushed to since: their length is known (a busy claim wakes a worker
-- after its drain). KEPT_TOKEN holds the queues whose inbox a claim's drain found holding a
-- lone token and left as it was (see drain): that token wakes the first worker asked for.
local EMPTIED_INBOX, KEPT_TOKEN = {}, {}
local function inbox_wake(queue, n, at)
    local key = P .. 'q:' .. queue .. ':inbox'
    if KEPT_TOKEN[queue] then
        KEPT_TOKEN[queue] = nil
        n = n - 1
        if n <= 0 then return end
    end
    local room = 8
    if not EMPTIED_INBOX[queue] then room = 8 - redis.call('LLEN', key) end
    if room > 0 then
        EMPTIED_INBOX[queue] = nil
        local tokens = {}
        for i = 1, math.min(n, room) do tokens[i] = 't' .. at end
        redis.call('RPUSH', key, unpack(tokens))
    end
end
-- Store entry e, popped from the inbox into taken, as running for owner until lease; garbage
-- waits instead (see inbox_put), with a token to wake a worker that dead-letters it. Returns
-- its status and id. (now and f: see inbox_put.)
local function inbox_taken(queue, e, owner, lease, now, f)
    local at, id, status = inbox_put(queue, e, owner, lease, now, f)
    if status == 'pending' then inbox_wake(queue, 1, at) end
    return status, id
end
-- The task entries of a drained list (see inbox_fields), each with the seq it is given (f[7]),
-- if every one is well formed, of an id not in use and not twice among them: such entries need
-- no check one by one, and a claim may lease them without storing them as waiting first (see
-- inbox_store). Otherwise nil, having written nothing: inbox_put stores each in turn.
local function inbox_fresh(entries)
    local fresh, seen, keys = {}, {}, {}
    for _, e in ipairs(entries) do
        if string.sub(e, 1, 1) ~= 't' then
            local f = inbox_fields(e)
            if not f or seen[f[1]] then return nil end
            seen[f[1]] = true
            fresh[#fresh + 1] = f
            keys[#keys + 1] = P .. 'task:' .. f[1]
        end
    end
    if #keys == 0 then return fresh end
    if redis.call('EXISTS', unpack(keys)) > 0 then return nil end  -- (1000 keys at most)
    local last = redis.call('INCRBY', P .. 'seq', #fresh)  -- (the seqs inbox_put would give)
    for i, f in ipairs(fresh) do f[7] = string.format('%016x', last - #fresh + i) end
    return fresh
end
-- Store fresh entries (see inbox_fresh) as waiting tasks, as inbox_put would have one by one.
local function inbox_store(queue, fresh)
    if #fresh == 0 then return end
    local q, taskp = P .. 'q:' .. queue .. ':', P .. 'task:'
    local waiting, listed = {}, {}
    for i, f in ipairs(fresh) do
        local id, at, s = f[1], f[3], f[7]
        if f[4] == '' then
            redis.call('HSET', taskp .. id, 'status', 'pending', 'queue', queue, 'seq', s,
                'created_at', at, 'run_at', at, 'name', f[2], 'payload', f[5])
        else
            redis.call('HSET', taskp .. id, 'status', 'pending', 'queue', queue, 'seq', s,
                'created_at', at, 'run_at', at, 'name', f[2], 'payload', f[5],
                'options', string.sub(f[4], 2))
        end
        waiting[2 * i - 1], waiting[2 * i] = at, s .. ':' .. id
    end
    zadd_all(q .. 'waiting', waiting)
    zadd_all(q .. 'created.pending', waiting)
    if redis.call('HINCRBY', q .. 'counts', 'pending', #fresh) == #fresh then
        redis.call('SADD', P .. 'queues', queue)
    end
end
-- Drain the queue's inbox into waiting tasks (at most 1000 entries, oldest first), and store
-- the entries popped by workers that have not taken them yet (taken) as running, leased to
-- no one ('~'), listed in transit with the time of Redis's clock they were found: the popping
-- worker takes them over (see take.lua), and the queue's reaper requeues those still leased to
-- no one once its transit has passed (see reap.lua): a worker died in between, or its pop's
-- reply was lost. A drain runs in any script, of any caller, so it cannot know the queue's
-- lease; the reaper does. Their lease_until, TRANSIT seconds on, only bounds the wait where
-- no reaper names a transit (a worker of an older version). Returns the latest time of the
-- drained tokens and waiting tasks (a time the pushers saw them due), or nil; and with keep,
-- the fresh entries (see inbox_fresh) not stored yet, for the caller to store or lease, or nil.
-- A claim's drain (keep) of an inbox holding a lone wake-up token leaves it there (KEPT_TOKEN):
-- a busy claim that leaves due work behind wakes another worker with it (see inbox_wake), as
-- the token it would push otherwise, and the claim deletes it if it wakes nobody
-- (inbox_unkeep). A busy queue's every claim otherwise deleted the token the last one pushed
-- and pushed its own, some 35k instructions a claim.
local TRANSIT = 60
local function drain(queue, keep)
    local q = P .. 'q:' .. queue .. ':'
    local latest, fresh = nil, nil
    -- (numbers as strings: Redis writes a number argument with %.17g, some 2k instructions)
    local entries = redis.call('LRANGE', q .. 'inbox', '0', '999')
    if #entries == 1000 then
        redis.call('LTRIM', q .. 'inbox', '1000', '-1')
    elseif keep and #entries == 1 and string.sub(entries[1], 1, 1) == 't' then
        KEPT_TOKEN[queue] = true  -- (left in place, for now)
    else  -- (all of it, if any)
        if #entries > 0 then redis.call('DEL', q .. 'inbox') end
        EMPTIED_INBOX[queue] = true
    end
    if #entries > 0 then
        local newest = nil  -- (latest as a number)
        if #entries > 1 or string.sub(entries[1], 1, 1) ~= 't' then  -- (not one token alone:
            fresh = inbox_fresh(entries)  -- a busy queue's claims find the last one's, 8k less)
        end
        local j = 0  -- (the fresh entry at hand)
        for _, e in ipairs(entries) do
            local at, x, _
            if string.sub(e, 1, 1) == 't' then
                at = string.sub(e, 2)
                x = decimal(at)
            elseif fresh then
                j = j + 1
                at, x = fresh[j][3], fresh[j][6]
            else
                at, _, _, x = inbox_put(queue, e)
            end
            if x and (not newest or x > newest) then latest, newest = at, x end
        end
        if fresh and not keep then inbox_store(queue, fresh) end
    end
    local popped = redis.call('LRANGE', q .. 'taken', '0', '-1')
    if #popped > 0 then
        if fresh and keep then  -- (stored first, as inbox_put would have: ids are checked)
            inbox_store(queue, fresh)
            fresh = nil
        end
        redis.call('DEL', q .. 'taken')
        local t = redis.call('TIME')
        local lease = tostring(tonumber(t[1]) + TRANSIT)
        local found = t[1] .. '.' .. string.format('%06d', t[2])
        for _, e in ipairs(popped) do
            if string.sub(e, 1, 1) ~= 't' then
                local status, id = inbox_taken(queue, e, '~', lease)
                if status == 'running' then redis.call('ZADD', q .. 'transit', found, id) end
            end
        end
    end
    return latest, keep and fresh or nil
end
-- The end of a claim that woke nobody: a lone token its drain left in place (see drain) goes,
-- as every drained entry does.
local function inbox_unkeep(queue)
    if KEPT_TOKEN[queue] then
        redis.call('DEL', P .. 'q:' .. queue .. ':inbox')
        KEPT_TOKEN[queue], EMPTIED_INBOX[queue] = nil, true
    end
end
local function drain_all()
    for _, queue in ipairs(redis.call('SMEMBERS', P .. 'queues')) do drain(queue) end
end
