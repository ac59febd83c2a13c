-- ARGV: P, n, then n settlements, each id, token, kind, then unless kind is a STARTED mark:
-- now, expires_at ('' = forget the record), result?, attempt?, and if kind ends in '*' the rest:
-- error?, reason?, run_at, payload?. kind is the status, then '+' if the function ran (so
-- that an outcome on a record still reserved counts its start), then the '*'; status
-- 'retrying' means RETRY (with the rest), 'started' the STARTED mark (a reserved record
-- becomes running, started + 1); attempt is a line appended to the task's history. A
-- success sends 7 arguments, a mark 3 (each costs Redis and the worker some 0.5 us). See
-- Backend.settle for late settlements.
-- Returns {the ids refused because the record is not leased under that token (a record's
-- outcome after another in this batch too, as in memory and SQLite), the ids of the
-- records dead-lettered as malformed instead (changed by hand while they ran: see bury)},
-- or nil (a null reply) for none of either.
-- lease_until and owner are left in the hash: they mean nothing once the lease is over.

-- Every run of a script defines each of its functions and tables again, and the full path's
-- (late settlements, dead letters, retries, records forgotten at once, concurrency keys: see
-- full below) cost more than a few settlements' writes. So the records are read first, and a
-- batch of the common kind is written by the lean path, which defines only what it needs:
-- each settlement the first of the batch for its record (or an outcome after its record's
-- STARTED mark, a busy worker's common pair), leased under its token, of no concurrency key,
-- with fields the full path's checks pass the cheap way, an outcome kept (or a STARTED mark).
-- Its writes are the full path's, in the same order. Any other batch goes to the full path,
-- with the records read.
local P, total = ARGV[1], tonumber(ARGV[2])
local taskp, find = P .. 'task:', string.find
local recs, seen, lean = {}, {}, true
-- A kind as {status, ran ('1' or ''), with the rest}, made when a batch first sends it (a
-- batch sends one or two: a table of every kind, built at each run, cost more than most
-- batches' writes); each settlement's first argument (at) and kind.
local KINDS = {}
-- READ: a record's status, attempts, queue, seq, created_at, error, history, concurrency_key and
-- started. A record leased as pushed (attempts '01', while leased: see FRESH in claim.lua)
-- holds no error, history or concurrency key, and started 0 while reserved, 1 once running:
-- only its first 5 are read (each field read costs some 2k instructions). Only a settlement of
-- token 1 may find the mark; any other reads the 9 fields at once.
local function kind_of(a)
    local s, ran, rest = string.match(a or '', '^(%l+)(%+?)(%*?)$')
    if s ~= 'started' and s ~= 'retrying' and s ~= 'succeeded' and s ~= 'failed'
        and s ~= 'cancelled' and s ~= 'dead' then
        return nil
    end
    local kind = {s, ran == '+' and '1' or '', rest == '*'}
    KINDS[a] = kind
    return kind
end
local at, kinds, b, known, same = {}, {}, 3, nil, {}
for i = 1, total do
    local kind = KINDS[ARGV[b + 2]] or kind_of(ARGV[b + 2])
    if not kind or (kind[1] == 'retrying' and not kind[3]) then
        return redis.error_reply('settle: no kind ' .. tostring(ARGV[b + 2]))
    end
    at[i], kinds[i] = b, kind
    local id, outcome, expires = ARGV[b], kind[1], ARGV[b + 4]
    local first, rec = seen[id], false  -- (a second settlement: the full path reads it again)
    if not first and ARGV[b + 1] ~= '1' then  -- (a later lease, never marked: see READ)
        rec = redis.call('HMGET', taskp .. id, 'status', 'attempts', 'queue', 'seq',
            'created_at', 'error', 'history', 'concurrency_key', 'started')
    elseif not first then
        rec = redis.call('HMGET', taskp .. id, 'status', 'attempts', 'queue', 'seq',
            'created_at')
        local s = rec[1]
        if rec[2] == '01' and (s == 'reserved' or s == 'running') then
            rec[2], rec[9] = '1', s == 'reserved' and '0' or '1'
        else
            local more = redis.call('HMGET', taskp .. id, 'error', 'history', 'concurrency_key',
                'started')
            rec[6], rec[7], rec[8], rec[9] = more[1], more[2], more[3], more[4]
        end
    end
    recs[i] = rec
    if lean and first then  -- (no write comes between: the record is as read for the mark)
        if outcome ~= 'started' and kinds[first][1] == 'started' then
            rec, same[i] = recs[first], first
        else
            lean = false
        end
    end
    if lean then
        local status, seq, created, started = rec[1], rec[4], rec[5], rec[9]
        lean = (status == 'reserved' or status == 'running')
            and rec[2] == ARGV[b + 1] and rec[3] and not rec[8]
            and (outcome == 'started' or outcome ~= 'retrying' and expires ~= ''
                and expires ~= 'nan' and expires ~= 'inf' and expires ~= '-inf')  -- (kept)
            and seq and #seq == 16 and find(seq, '^[0-9a-f]+$')
            and created and (created == known or #created <= 40 and find(created, '^%d+%.?%d*$'))
            and (not started or started == '0' or #started <= 15 and find(started, '^%d+$'))
        if lean then known = created end  -- (a batch's records often share their created_at)
    end
    seen[id] = i
    if outcome == 'started' then b = b + 3 elseif kind[3] then b = b + 11 else b = b + 7 end
end
if b ~= #ARGV + 1 then return redis.error_reply('settle: ' .. #ARGV .. ' arguments') end
if lean then
    local counts, leases, listed = {}, {}, {}
    local function count(queue, status, delta)
        local by = counts[queue]
        if not by then by = {}; counts[queue] = by end
        by[status] = (by[status] or 0) + delta
    end
    local function chunks(cmd, key, list)  -- (see include/base.lua)
        for i = 1, #list, 4000 do
            redis.call(cmd, key, unpack(list, i, math.min(i + 3999, #list)))
        end
    end
    -- A STARTED mark then the outcome of its record: the outcome alone is written, and counts
    -- the start, as in the full path (where a mark is the later outcome's to count).
    local dropped = {}
    for i, j in pairs(same) do recs[i], dropped[j] = recs[j], true end
    local lastq, ids = nil, nil  -- (a batch is mostly of one queue: its list at hand)
    for i = 1, total do
        local rec = recs[i]
        if kinds[i][1] ~= 'started' then
            if rec[3] ~= lastq then
                lastq = rec[3]
                local key = P .. 'q:' .. lastq .. ':running'
                ids = leases[key]
                if not ids then ids = {}; leases[key] = ids end
            end
            ids[#ids + 1] = ARGV[at[i]]
        end
    end
    for key, ids in pairs(leases) do chunks('ZREM', key, ids) end  -- (first: see full)
    if next(leases) == nil then  -- (marks alone: see full)
        redis.call('HDEL', taskp .. ARGV[at[1]], 'slot')
    end
    for i = 1, total do  -- STARTED marks, after the leases as the full path writes them
        local rec, kind = recs[i], kinds[i]
        if kind[1] == 'started' and rec[1] == 'reserved' and kind[2] == '1' and not dropped[i]
        then
            redis.call('HSET', taskp .. ARGV[at[i]], 'status', 'running',
                'started', string.format('%d', tonumber(rec[9] or '0') + 1))
            count(rec[3], 'reserved', -1)
            count(rec[3], 'running', 1)
        end
    end
    -- A run of outcomes of one queue between the same two statuses is counted once, and
    -- listed in its listing's list, at hand.
    local expiring, rq, rold, rnew, run, list = {}, nil, nil, nil, 0, nil
    for i = 1, total do
        local b, rec, kind = at[i], recs[i], kinds[i]
        local id, status, now = ARGV[b], kind[1], ARGV[b + 3]
        if status ~= 'started' then
            local key, queue = taskp .. id, rec[3]
            local err, reason = '', ''
            if kind[3] then err, reason = ARGV[b + 7], ARGV[b + 8] end
            if err == '' and rec[6] then redis.call('HDEL', key, 'error') end
            local result, line, started = ARGV[b + 5], ARGV[b + 6], rec[9]
            if not kind[3] and result ~= '' and line ~= '' and kind[2] == '1'
                and rec[1] == 'reserved'
            then  -- (a function's outcome as most are: its HSET without a table, as below)
                redis.call('HSET', key, 'status', status, 'updated_at', now,
                    'expires_at', ARGV[b + 4], 'result', string.sub(result, 2),
                    'history', (rec[7] or '') .. string.sub(line, 2) .. '\n',
                    'started', (not started or started == '0') and '1'
                        or string.format('%d', tonumber(started) + 1))
            else
                -- (made 16 long at once: a table that grows is copied at 4, 8 and 16)
                local fields, f = {'status', status, 'updated_at', now, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0, 0}, 4
                if err ~= '' then fields[5], fields[6], f = 'error', string.sub(err, 2), 6 end
                fields[f + 1], fields[f + 2], f = 'expires_at', ARGV[b + 4], f + 2
                if reason ~= '' then
                    fields[f + 1], fields[f + 2], f = 'reason', string.sub(reason, 2), f + 2
                end
                if result ~= '' then
                    fields[f + 1], fields[f + 2], f = 'result', string.sub(result, 2), f + 2
                end
                if line ~= '' then
                    fields[f + 1] = 'history'
                    fields[f + 2] = (rec[7] or '') .. string.sub(line, 2) .. '\n'
                    f = f + 2
                end
                if rec[1] == 'reserved' and kind[2] == '1' then  -- its start counts too
                    fields[f + 1] = 'started'
                    fields[f + 2] = (not started or started == '0') and '1'
                        or string.format('%d', tonumber(started) + 1)
                    f = f + 2
                end
                redis.call('HSET', key, unpack(fields, 1, f))
            end
            if queue ~= rq or rec[1] ~= rold or status ~= rnew then
                if run > 0 then count(rq, rold, -run); count(rq, rnew, run) end
                rq, rold, rnew, run = queue, rec[1], status, 0
                local created = P .. 'q:' .. queue .. ':created.' .. status
                list = listed[created]
                if not list then list = {}; listed[created] = list end
            end
            run = run + 1
            list[#list + 1] = rec[5]
            list[#list + 1] = rec[4] .. ':' .. id
            expiring[#expiring + 1] = ARGV[b + 4]
            expiring[#expiring + 1] = id
        end
    end
    if run > 0 then count(rq, rold, -run); count(rq, rnew, run) end
    for queue, by in pairs(counts) do
        for status, delta in pairs(by) do
            if delta ~= 0 then
                redis.call('HINCRBY', P .. 'q:' .. queue .. ':counts', status, delta)
            end
        end
    end
    -- (the finished listings and expiry are rarely small: as they are, see zadd_all)
    for key, list in pairs(listed) do chunks('ZADD', key, list) end
    if #expiring > 0 then chunks('ZADD', P .. 'expiry', expiring) end
    return nil  -- (nothing refused or buried: a table each costs Redis some 3k to answer)
end

-- The full path: every settlement as Backend.settle says, the records read above reused.
local function full()
-- The arguments as 12 a settlement (id, token, status, now, run_at, error, reason, result,
-- expires_at, payload, attempt, ran), which the full path reads.
local ARGV = (function()
    local A = {ARGV[1], ARGV[2]}
    for i = 1, total do
        local b, kind, o = at[i], kinds[i], i * 12 - 9
        A[o], A[o + 1], A[o + 2], A[o + 11] = ARGV[b], ARGV[b + 1], kind[1], kind[2]
        local now, rest = '', kind[3]
        if kind[1] ~= 'started' then
            now = ARGV[b + 3]
            A[o + 7], A[o + 8], A[o + 10] = ARGV[b + 5], ARGV[b + 4], ARGV[b + 6]
        else
            A[o + 7], A[o + 8], A[o + 10] = '', '', ''
        end
        A[o + 3] = now
        if rest then
            A[o + 4], A[o + 5], A[o + 6], A[o + 9] = ARGV[b + 9], ARGV[b + 7], ARGV[b + 8],
                ARGV[b + 10]
        else
            A[o + 4], A[o + 5], A[o + 6], A[o + 9] = now, '', '', ''
        end
    end
    return A
end)()
--#include prelude

local function body()
local refused, leases, broken = {}, {}, {}
-- A settlement for token, whose lapsed lease the reaper charged as a crash (its token is in
-- the charged field): its worker was alive, so the charge moves to lost; and if no lease was
-- granted since and the record waits or was dead-lettered for crashes, the outcome applies
-- after all: the record is made running again (rec[1]) for it. Returns whether it applies.
-- A record whose fields cannot be read is left alone (a claim buries it).
local function late(id, token, rec, charged)
    local kept, found = {}, false
    for t in string.gmatch(charged, '[^,]+') do
        if not found and (t == token or tonumber(t) == tonumber(token)) then  -- ('01': reaped
            found = true  -- by an older version, see FRESH in claim.lua)
        else
            kept[#kept + 1] = t
        end
    end
    if not found then return false end
    local key = tkey(id)
    local more = redis.call('HMGET', key, 'crashes', 'lost', 'reason', 'priority', 'run_at')
    if not (more[1] and count_ok(more[1]) and tonumber(more[1]) > 0)
        or (more[2] and not count_ok(more[2])) or not (rec[4] and seq_ok(rec[4]))
        or not decimal(rec[5]) or (more[4] and not level_ok(more[4]))
    then
        return false
    end
    -- This runs before the batch's leases end: its first write must be one a full Redis
    -- takes (noeviction refuses a script's first write that may use memory, an HSET, and
    -- the batch with it), so 'charged' goes first, and comes back if tokens are kept.
    redis.call('HDEL', key, 'charged')
    local fields = {'crashes', string.format('%d', tonumber(more[1]) - 1),
        'lost', string.format('%d', tonumber(more[2] or '0') + 1)}
    if #kept > 0 then
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
-- The checks of the hot path, made the cheap way. A stored time is a decimal (see decimal)
-- without strtod when plain, as repr writes a time; the last one that passed is known (a
-- batch's records often share their created_at). The times a settlement sends are repr's of
-- floats (num in records.py), decimals unless nan or +-inf.
local find = string.find
local known = nil
local function time_ok(s)
    if s == known then return true end
    if s and (#s <= 40 and find(s, '^%d+%.?%d*$') or decimal(s)) then
        known = s
        return true
    end
    return false
end
local function sent_ok(s) return s ~= 'nan' and s ~= 'inf' and s ~= '-inf' end
-- The settlements to write (their first argument, record and key), and the leases to end,
-- by queue (the last queue's list at hand).
local ok_b, ok_rec, ok_key, n = {}, {}, {}, 0
local taskp, lastq, ended = P .. 'task:', nil, nil
local over = {}  -- the ids whose lease a settlement of this batch ended (read before it was)
local marks, marked = {}, {}  -- the STARTED marks to write once the leases are (see there)
for i = 0, tonumber(ARGV[2]) - 1 do
    local b = 3 + i * 12
    local id, token, outcome = ARGV[b], ARGV[b + 1], ARGV[b + 2]
    local key = taskp .. id
    local rec = recs[i + 1]
    if not rec then  -- (read again once a record comes twice: the batch applies in order)
        rec = redis.call('HMGET', key, 'status', 'attempts', 'queue', 'seq', 'created_at',
            'error', 'history', 'concurrency_key', 'started')
    end
    -- (the token as stored, or the same number written another way)
    local ok = leased(rec[1]) and (rec[2] == token or tonumber(rec[2]) == tonumber(token))
        and rec[3]
    if over[id] then
        ok = false
    elseif not ok and outcome ~= 'started' and rec[3] then  -- (charged: read only now)
        local charged = redis.call('HGET', key, 'charged')
        if charged and tokens_ok(charged) then ok = late(id, token, rec, charged) end
    end
    if not ok then
        refused[#refused + 1] = id
    elseif outcome == 'started' then  -- (a running record: started already, nothing to do)
        if rec[1] == 'reserved' and ARGV[b + 11] == '1' and (not rec[9] or count_ok(rec[9]))
            and not marked[id]
        then
            marked[id] = true
            marks[#marks + 1] = {id, key, rec}
        end
    else
        over[id] = true
        -- A record changed by hand while it ran is dead-lettered instead (see bury); an
        -- outcome's times that cannot be used are replaced by now.
        local why = nil
        if outcome == 'retrying' then  -- (a finished task needs no priority: an absent
            rec[11] = redis.call('HGET', key, 'priority')  -- field costs a hash scan)
        end
        local seq, started = rec[4], rec[9]
        if not (seq and #seq == 16 and find(seq, '^[0-9a-f]+$')) then  -- (seq_ok)
            why = 'seq is missing or not 16 hex digits'
        elseif not time_ok(rec[5]) then why = 'created_at is not a number'
        elseif rec[11] and not level_ok(rec[11]) then why = 'priority is ' .. shown(rec[11])
        elseif started and started ~= '0' and (#started > 15 or not find(started, '^%d+$'))
        then  -- (count_ok)
            why = 'started is ' .. shown(started)
        end
        -- (run_at is used by a retry only)
        if outcome == 'retrying' and not sent_ok(ARGV[b + 4]) then ARGV[b + 4] = ARGV[b + 3] end
        if ARGV[b + 8] ~= '' and not sent_ok(ARGV[b + 8]) then ARGV[b + 8] = ARGV[b + 3] end
        if why then
            broken[#broken + 1] = {b, rec, why}
        else
            n = n + 1
            ok_b[n], ok_rec[n], ok_key[n] = b, rec, key
        end
        if rec[3] ~= lastq then
            lastq = rec[3]
            local running = qkey(lastq, 'running')
            ended = leases[running]
            if not ended then ended = {}; leases[running] = ended end
        end
        ended[#ended + 1] = id
    end
end
-- The leases go first: a write that frees memory, after which Redis lets this script finish
-- its writes even at maxmemory (noeviction), so outcomes are stored while submits are refused.
-- The STARTED marks follow (a mark first would be refused there, and the batch with it);
-- a mark whose record's outcome came later in the batch is that outcome's to count. A batch
-- of marks alone ends no lease: its first write is then an HDEL of the field a claim cleared
-- (slot: nothing to delete, and no write that could enlarge memory), after which the marks
-- are let through too; a mark rewrites two fields of a record (reserved to running, started
-- n to n + 1), so that a full Redis still learns that the functions started.
for key, list in pairs(leases) do chunks('ZREM', key, list, 4000) end
if next(leases) == nil and marks[1] then redis.call('HDEL', marks[1][2], 'slot') end
for _, a in ipairs(marks) do
    local rec = a[3]
    if not over[a[1]] then
        redis.call('HSET', a[2], 'status', 'running',
            'started', string.format('%d', tonumber(rec[9] or '0') + 1))
        move(rec[3], nil, nil, 'reserved', 'running')
    end
end
local buried = {}
for _, a in ipairs(broken) do
    local b, rec = a[1], a[2]
    local id, now = ARGV[b], ARGV[b + 3]
    buried[#buried + 1] = id
    running_key(rec[3], rec[8], -1)
    local m = seq_ok(rec[4] or '') and member(rec[4], id) or nil
    local expires = ARGV[b + 8] ~= '' and ARGV[b + 8] or now
    bury(rec[3], id, m, {created_at = rec[5]}, a[3], rec[1], now, expires)
end
-- The moves of a run of records of one queue between the same two statuses are gathered as
-- one (see move): the run's count, and the list of its listing at hand.
local expiring, mq, mold, mnew, moved, listing = {}, nil, nil, nil, 0, nil
local function moves_end()
    if moved > 0 then
        count(mq, mold, -moved)
        count(mq, mnew, moved)
    end
end
for j = 1, n do
    local b, rec, key = ok_b[j], ok_rec[j], ok_key[j]
    local id, status, now = ARGV[b], ARGV[b + 2], ARGV[b + 3]
    local queue, m = rec[3], rec[4] .. ':' .. id  -- (member)
    local err = ARGV[b + 5]
    if rec[8] then running_key(queue, rec[8], -1) end
    if ARGV[b + 8] == '' and status ~= 'retrying' then
        redis.call('DEL', key)
        forget(queue, rec[1], m)
    else
        if err == '' and rec[6] then redis.call('HDEL', key, 'error') end
        local fields, f = {'status', status, 'updated_at', now}, 4
        if err ~= '' then
            fields[5], fields[6], f = 'error', string.sub(err, 2), 6
        end
        if status == 'retrying' then
            fields[f + 1], fields[f + 2], f = 'run_at', ARGV[b + 4], f + 2
            if ARGV[b + 9] ~= '' then
                fields[f + 1], fields[f + 2], f = 'payload', string.sub(ARGV[b + 9], 2), f + 2
            end
            local p = rec[11]
            if rec[8] then  -- (a lane's earliest run_at is read now: no gathering)
                redis.call('ZADD', zkey(queue, p, rec[8]), ARGV[b + 4], m)
            else
                gather(ZADDS, wkey(queue, p), ARGV[b + 4], m)
            end
            entered(queue, p, rec[8], ARGV[b + 4])
        else
            fields[f + 1], fields[f + 2], f = 'expires_at', ARGV[b + 8], f + 2
            if ARGV[b + 6] ~= '' then
                fields[f + 1], fields[f + 2], f = 'reason', string.sub(ARGV[b + 6], 2), f + 2
            end
            if ARGV[b + 7] ~= '' then
                fields[f + 1], fields[f + 2], f = 'result', string.sub(ARGV[b + 7], 2), f + 2
            end
            expiring[#expiring + 1] = ARGV[b + 8]
            expiring[#expiring + 1] = id
        end
        if ARGV[b + 10] ~= '' then
            fields[f + 1] = 'history'
            fields[f + 2] = (rec[7] or '') .. string.sub(ARGV[b + 10], 2) .. '\n'
            f = f + 2
        end
        if rec[1] == 'reserved' and ARGV[b + 11] == '1' then  -- its start counts too
            local started = rec[9]
            fields[f + 1] = 'started'
            fields[f + 2] = (not started or started == '0') and '1'
                or string.format('%d', tonumber(started) + 1)
        end
        redis.call('HSET', key, unpack(fields))
        if queue ~= mq or rec[1] ~= mold or status ~= mnew then  -- (move, gathered)
            moves_end()
            mq, mold, mnew, moved = queue, rec[1], status, 0
            listing = nil
            if not leased(status) then  -- (rec[1] is leased: listed in no created.S)
                local created = qkey(queue, 'created.' .. status)
                listing = ZADDS[created]
                if not listing then listing = {}; ZADDS[created] = listing end
            end
        end
        moved = moved + 1
        if listing then
            listing[#listing + 1] = rec[5]
            listing[#listing + 1] = m
        end
    end
end
moves_end()
if #expiring > 0 then
    local list = ZADDS[P .. 'expiry']
    if not list then ZADDS[P .. 'expiry'] = expiring else
        for _, v in ipairs(expiring) do list[#list + 1] = v end
    end
end
if #refused == 0 and #buried == 0 then return nil end  -- (as the lean path: see the top)
return {refused, buried}
end
--#include flush
end
return full()
