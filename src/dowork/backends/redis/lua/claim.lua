-- ARGV: P, queue, now, limit, lease_until, owner, max_running ('' = no cap), alone_from
-- ('' = none: see Backend.claim), popped, lease, aging, per_key ('' = no cap), keep_dead
-- (seconds), then (name, n, per) per rate limit. The claim drains the queue's inbox first
-- (see include/inbox.lua); popped ('' = none) is an entry the caller popped from the inbox
-- into taken and gives back, and lease the lease in seconds: the latest time of the drained
-- tokens and tasks, when later than now, replaces now, and the lease runs from it. A due
-- record that cannot be read (see unreadable) is dead-lettered as malformed, kept keep_dead
-- seconds, and takes no place in the claim.
-- Returns now and lease_until as used, the records dead-lettered (a flat list of id, why), then
-- the claimed records as HGETALL lists (with an id field: see NEEDED), in claim order, read
-- before the claim: the caller applies it (status reserved, attempts + 1, lease_until, owner,
-- updated_at, no slot). A record written before dowork counted starts (no started field) gets
-- started = attempts: every claim of it counted as one (OLD). A record as pushed (the fields
-- push.lua writes, an earlier version's id field too, and nothing else, all fine) goes as
-- the 6 values id, name, payload, run_at, created_at, options (false: none) instead, in the
-- answer itself, not a list of its own: a third of the strings to return (each costs ~1k
-- instructions to turn into a reply), and no list for Redis to answer and the worker to
-- build (some 4k instructions a record in Python).
-- An idle worker's wake-up: self-contained, like push.lua.
-- FRESH: a record leased as pushed gets attempts '01' (the number 1, as every reader takes it),
-- which tells settle.lua that it holds no error, history or concurrency key and that its
-- started is 0 (1 once its STARTED mark is written), so that the settle reads 5 fields of it,
-- not 9. The next lease writes attempts + 1 the plain way, which ends the mark. So does any
-- first lease (no attempts field) of a record read whole that holds none of those and no
-- started but 0 (a priority, a rate limit's slot: see read's DIRTY).

local P, queue, now, lease, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[5], ARGV[6]
local alone = ARGV[8] ~= '' and tonumber(ARGV[8])
--#include may_fill
--#include checks
--#include inbox

local WAITS = {pending = true, scheduled = true, retrying = true}
-- The claim reads every record it hands out in one pass (read): the fields it uses, and
-- unreadable's checks made the cheap way, so that a healthy record costs a few us less; only
-- a record they do not pass is read again by unreadable, which says why (or finds it fine).
-- KIND: 1 status, 0 and 2 the times that must be there (run_at, created_at), 3 another time,
-- 4 slot, 5-8 counts (attempts, crashes, started, lost), 9 seq, 10 priority, 11 charged,
-- 12 malformed, 13 id (an earlier version's: see NEEDED), then the other fields that must be
-- there: 14 queue, 15 name, 16 payload; and 17 options; 18 the fields a record as pushed lacks
-- and FRESH rules out (error, history, concurrency_key). (Built when first needed: a record as
-- pushed is read by load, and the table costs some 7k instructions at every run.)
local KIND = nil
local find = string.find
local known = nil  -- the last time that passed: a record's run_at is often its created_at
-- The record (HGETALL list h) of a due member: its status, attempts, crashes, started, slot
-- (true if set) and name, and why it should be dead-lettered if it should: a waiting record
-- (or one of no known status) that cannot be read (see unreadable). Others are stale. Last,
-- the row the claim returns for it (see the top), which names its id. DIRTY: whether it
-- holds an error, a history or a concurrency key (see FRESH).
local DIRTY = false
local function read(h, id)
    local status, attempts, crashes, started, slot, name, options, payload, run_at, at, named
    local fine, got = true, 0
    if not KIND then
        KIND = {status = 1, run_at = 0, created_at = 2, updated_at = 3, finished_at = 3,
            slot = 4, attempts = 5, crashes = 6, started = 7, lost = 8, seq = 9, priority = 10,
            charged = 11, malformed = 12, id = 13, queue = 14, name = 15, payload = 16,
            options = 17, error = 18, history = 18, concurrency_key = 18}
    end
    DIRTY = false
    for j = 1, #h, 2 do
        local k = KIND[h[j]]
        if k then
            local s = h[j + 1]
            if k == 18 then
                DIRTY = true
            elseif k == 17 then
                options = s
            elseif k == 13 then
                named = true
                if s ~= id then fine = false end
            elseif k >= 14 then
                got = got + 1
                if k == 14 then
                    if s ~= queue then fine = false end
                elseif k == 15 then
                    name = s
                else
                    payload = s
                end
            elseif k == 1 then
                status = s
                got = got + 1
                if not status_ok(s) then fine = false end
            elseif k <= 4 then  -- (a plain decimal passes decimal: no strtod needed)
                if k <= 2 then
                    got = got + 1
                    if k == 0 then run_at = s else at = s end
                elseif k == 4 then
                    slot = true
                end
                if s ~= known then
                    if #s <= 40 and find(s, '^%d+%.?%d*$') then known = s else fine = false end
                end
            elseif k == 9 then
                got = got + 1
                if #s ~= 16 or not find(s, '^[0-9a-f]+$') then fine = false end
            elseif k <= 8 then
                if k == 5 then attempts = s elseif k == 6 then crashes = s
                elseif k == 7 then started = s end
                if #s > 15 or not find(s, '^%d+$') then fine = false end
            elseif k == 10 then
                if not level_ok(s) then fine = false end
            elseif k == 11 then
                if not tokens_ok(s) then fine = false end
            else
                fine = false  -- malformed (see inbox_put)
            end
        end
    end
    local why = nil
    if (not fine or got < 7) and status and (WAITS[status] or not status_ok(status))  -- (7: NEEDED)
    then
        why = unreadable(h, id, queue)
    end
    local row = h
    if fine and got == 7 and #h == 14 + (named and 2 or 0) + (options and 2 or 0) then
        row = {id, name, payload, run_at, at, options}  -- (as pushed)
    elseif not why and not named then
        h[#h + 1], h[#h + 2] = 'id', id
    end
    return status, attempts, crashes, started, slot, name, why, row
end
-- The record of key as read (the HGETALL list, or nil), then what read gives. A record as
-- pushed (7 fields, or 8 with options) is read by HLEN and HMGET, which make 8 or 9 strings
-- for Lua where HGETALL makes 14 or 16 (each some 1k instructions), and checked as read checks
-- it; any other, or one those checks do not pass the cheap way, is read whole by read. Such a
-- record's row is true, followed by its payload, run_at, created_at and options (a table
-- made for each costs some 3k instructions: see answer).
local PUSHED = {'status', 'queue', 'seq', 'created_at', 'run_at', 'name', 'payload', 'options'}
local function load(key, id)
    local n = redis.call('HLEN', key)
    if n == 7 or n == 8 then
        local v = redis.call('HMGET', key, unpack(PUSHED, 1, n))
        local status, seq, at, run_at = v[1], v[3], v[4], v[5]
        if WAITS[status] and v[2] == queue and v[6] and v[7] and v[n]
            and seq and #seq == 16 and find(seq, '^[0-9a-f]+$')
            and at and (at == known or #at <= 40 and find(at, '^%d+%.?%d*$'))
            and run_at and (run_at == at or #run_at <= 40 and find(run_at, '^%d+%.?%d*$'))
        then
            known = at
            return nil, status, nil, nil, nil, nil, v[6], nil, true, v[7], run_at, at, v[8]
        end
    end
    local h = redis.call('HGETALL', key)
    return h, read(h, id)
end
-- Dead-letter such a record (listing member m) as malformed, kept ARGV[13] seconds; listed
-- in BURIED (id, why) for the caller to log.
local BURIED = {}
local function bury_due(id, m, h, why)
    BURIED[#BURIED + 1] = id
    BURIED[#BURIED + 1] = why
    local v = fields(h)
    local expires = string.format('%.17g', tonumber(now) + tonumber(ARGV[13]))
    bury(queue, id, m, v, why, WAITS[v.status] and v.status or nil, now, expires)
end

local woke = nil
if ARGV[9] ~= '' then  -- an entry this worker popped from the inbox and gives back
    local e = ARGV[9]
    if redis.call('LREM', P .. 'q:' .. queue .. ':taken', '1', e) == 1 then
        woke = string.sub(e, 2)  -- a token's time
        if string.sub(e, 1, 1) ~= 't' then woke = inbox_put(queue, e) end
        if not decimal(woke) then woke = nil end
    end
end
local drained, fresh = drain(queue, true)
if drained and (not woke or tonumber(drained) > tonumber(woke)) then woke = drained end
local function store_fresh()  -- the drained tasks this claim does not lease at once
    if fresh then inbox_store(queue, fresh) end
    fresh = nil
end
if woke and tonumber(woke) > tonumber(now) then
    now = woke
    lease = string.format('%.17g', tonumber(woke) + tonumber(ARGV[10]))
end
local function many(cmd, key, list)  -- chunks (see include/base.lua)
    for i = 1, #list, 4000 do
        redis.call(cmd, key, unpack(list, i, math.min(i + 3999, #list)))
    end
end
local q = P .. 'q:' .. queue .. ':'
local running = q .. 'running'
local keeper = '~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~'
local limit = tonumber(ARGV[4])
if ARGV[7] ~= '' then
    local held = redis.call('ZCARD', running)
    if redis.call('ZSCORE', running, keeper) then held = held - 1 end
    limit = math.min(limit, tonumber(ARGV[7]) - held)
end
local out = {now, lease, BURIED}
-- A claimed record's row (see load) into the answer (see the top).
local function answer(row, id, name, payload, run_at, at, options)
    local k = #out
    if row == true then
        out[k + 1], out[k + 2], out[k + 3], out[k + 4] = id, name, payload, run_at
        out[k + 5], out[k + 6] = at, options or false
    elseif #row < 8 then
        out[k + 1], out[k + 2], out[k + 3], out[k + 4] = row[1], row[2], row[3], row[4]
        out[k + 5], out[k + 6] = row[5], row[6] or false
    else
        out[k + 1] = row
    end
end
if limit <= 0 then
    store_fresh()
    inbox_unkeep(queue)  -- (woke nobody: see drain)
    return out
end
local waiting, turn = q .. 'waiting', q .. 'turn'
local leases, left, n = {'+inf', keeper}, {}, 0
-- The claimed records leave the created.S listings for reserved (counts follow).
local function lease_all()
    if n == 0 then return end
    many('ZADD', running, leases)
    for status, l in pairs(left) do
        many('ZREM', q .. 'created.' .. status, l)
        redis.call('HINCRBY', q .. 'counts', status, -#l)
    end
    redis.call('HINCRBY', q .. 'counts', 'reserved', n)
end
local function wake_one()  -- more may be due: wake another idle worker to help (with the
    inbox_wake(queue, 1, now)  -- token the drain left, if it did: see drain)
end

-- The plain claim when the drained tasks are the only ones due (an idle queue's, or one whose
-- workers keep up): they come after every waiting task by seq, so the claim takes the first
-- of them by (created_at, seq), as it would from waiting, and leases them without storing them
-- as waiting first; the rest are stored as waiting. The records it returns are those the
-- waiting tasks would have been.
local function lease_fresh()
    local order, k = {}, #fresh
    for i = 1, k do order[i] = i end
    for i = 2, k do
        if fresh[i][6] < fresh[i - 1][6] then  -- (pushers' clocks disagree: sort)
            table.sort(order, function(a, b)
                local x, y = fresh[a][6], fresh[b][6]
                return x < y or (x == y and a < b)
            end)
            break
        end
    end
    local m, taskp, rest = math.min(limit, k), P .. 'task:', {}
    for j = 1, m do
        local f = fresh[order[j]]
        local id, at, s = f[1], f[3], f[7]
        local k, options = #out, false  -- (a record as pushed: see the top)
        if f[4] == '' then
            redis.call('HSET', taskp .. id, 'status', 'reserved', 'queue', queue, 'seq', s,
                'created_at', at, 'run_at', at, 'name', f[2], 'payload', f[5],
                'attempts', '01', 'lease_until', lease, 'owner', owner, 'updated_at', now,
                'started', '0')
        else
            options = string.sub(f[4], 2)
            redis.call('HSET', taskp .. id, 'status', 'reserved', 'queue', queue, 'seq', s,
                'created_at', at, 'run_at', at, 'name', f[2], 'payload', f[5],
                'options', options, 'attempts', '01', 'lease_until', lease, 'owner', owner,
                'updated_at', now, 'started', '0')
        end
        leases[2 * j + 1], leases[2 * j + 2] = lease, id
        out[k + 1], out[k + 2], out[k + 3], out[k + 4] = id, f[2], f[5], at
        out[k + 5], out[k + 6] = at, options
    end
    for j = m + 1, k do rest[#rest + 1] = fresh[order[j]] end
    fresh = rest
    store_fresh()
    many('ZADD', running, leases)
    if redis.call('HINCRBY', q .. 'counts', 'reserved', m) == m then
        redis.call('SADD', P .. 'queues', queue)
    end
    if k > limit then
        wake_one()
        redis.call('HSETNX', turn, '', '1')
    elseif redis.call('EXISTS', waiting) == 0 then
        redis.call('DEL', turn)
    else
        redis.call('HSETNX', turn, '', '1')
    end
    inbox_unkeep(queue)
    return out
end

if #ARGV <= 13 and redis.call('EXISTS', q .. 'levels', q .. 'lanes', q .. 'lanes:later') == 0
then
    -- Plain tasks only (priority 0, no concurrency key, no rate limits): the oldest due, by
    -- (run_at, seq). The tasks without a key are the only ones taking turns, so all their
    -- turn needs is to be marked served (1, less than any turn given later), and forgotten
    -- once none waits (see Backend.claim).
    local due = redis.call('ZRANGEBYSCORE', waiting, '-inf', now, 'LIMIT', '0', limit + 1)
    if fresh and #fresh > 0 and #due == 0 then return lease_fresh() end
    if fresh and #fresh > 0 then
        store_fresh()
        due = redis.call('ZRANGEBYSCORE', waiting, '-inf', now, 'LIMIT', '0', limit + 1)
    end
    fresh = nil
    local taken, served, taskp = 0, false, P .. 'task:'
    for i = 1, math.min(#due, limit) do
        local m = due[i]
        local id = string.sub(m, 18)
        local key = taskp .. id
        local h, status, attempts, crashes, started, reserved, name, why, row, payload, run_at,
            at, options = load(key, id)
        -- A repeat crasher is claimed alone (see Backend.claim).
        local crasher = not why and alone and (crashes and tonumber(crashes) or 0) >= alone
        if crasher and n > 0 then break end
        taken = i
        if why then
            bury_due(id, m, h, why)
        elseif WAITS[status] then
            local a = attempts and string.format('%d', tonumber(attempts) + 1)
                or (row == true or not DIRTY and (not started or started == '0')) and '01'
                or '1'  -- (see FRESH)
            if started then
                redis.call('HSET', key, 'status', 'reserved', 'attempts', a, 'lease_until',
                    lease, 'owner', owner, 'updated_at', now)
            else  -- (OLD)
                redis.call('HSET', key, 'status', 'reserved', 'attempts', a, 'lease_until',
                    lease, 'owner', owner, 'updated_at', now, 'started', attempts or '0')
            end
            if reserved then redis.call('HDEL', key, 'slot') end  -- delayed by an earlier limit
            leases[2 * n + 3] = lease
            leases[2 * n + 4] = id
            local l = left[status]
            if not l then l = {}; left[status] = l end
            l[#l + 1] = m
            n = n + 1
            answer(row, id, name, payload, run_at, at, options)
            if crasher then break end
            served = true
        end
    end
    -- (the members taken are the first of waiting, which nothing changed since they were read)
    if taken > 0 then redis.call('ZREMRANGEBYRANK', waiting, '0', taken - 1) end
    lease_all()
    if #due > limit then
        wake_one()
        if served then redis.call('HSETNX', turn, '', '1') end
    elseif redis.call('EXISTS', waiting) == 0 then
        redis.call('DEL', turn)
    elseif served then
        redis.call('HSETNX', turn, '', '1')
    end
    inbox_unkeep(queue)
    return out
end
--#include lanes
store_fresh()

-- Priorities, rate limits or concurrency keys. Each step serves the lane (the tasks of one
-- concurrency key, or those without one) served longest ago, ties by its most urgent due
-- task (rank = run_at - p * aging, then seq), and takes that task (see Backend.claim); a
-- task over a rate limit is delayed to the start time the limit gives it. Lanes are read in
-- turn order, a page at a time; a lane's due tasks a few at a time. Writes to the waiting
-- zsets wait for the end, so that what was read stays in place.
local aging, nowf, look = tonumber(ARGV[11]), tonumber(now), 2 * limit
local cap = ARGV[12] ~= '' and tonumber(ARGV[12])
local rates, starts = {}, {}
for i = 14, #ARGV, 3 do rates[ARGV[i]] = {tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])} end
local shared = rates[''] and ''
local LANES, DUE, LATER = q .. 'lanes', q .. 'lanes:due', q .. 'lanes:later'
local TURNS, LEVELS, KEYRUN = q .. 'lanes:turns', q .. 'lanes:levels', q .. 'keyrun'
local function hmget(key, names)  -- in chunks
    if #names <= 1000 then return redis.call('HMGET', key, unpack(names)) end
    local all = {}
    for i = 1, #names, 1000 do
        local got = redis.call('HMGET', key, unpack(names, i, math.min(i + 999, #names)))
        for j = 1, #got do all[i + j - 1] = got[j] end
    end
    return all
end

-- Sleeping lanes due by now wake, with the turn they kept.
local woke = redis.call('ZRANGEBYSCORE', LATER, '-inf', now, 'WITHSCORES')
if #woke > 0 then
    local names = {}
    for j = 1, #woke, 2 do names[#names + 1] = woke[j] end
    local turns = hmget(TURNS, names)
    for j, k in ipairs(names) do
        redis.call('ZADD', LANES, turns[j] or 0, k)
        redis.call('ZADD', DUE, woke[2 * j], k)
    end
    many('ZREM', LATER, names)
    many('HDEL', TURNS, names)
end
local keyed = redis.call('EXISTS', LANES) == 1
local tv = redis.call('HMGET', turn, 'n', '')
local counter = math.max(tonumber(tv[1] or '0'), tonumber(tv[2] or '0'))
local counter0 = counter

-- A lane's levels: z (zset), p, shift (p * aging), and a buffer of its due members and
-- scores, read size at a time (done: none left to read). The levels of the tasks without a
-- key gather their writes (rm, add: written at the end), so they read on from offset off;
-- a keyed lane's writes go at once (a lane gives a task or two per claim), and since every
-- member taken leaves the due range (claimed, dropped, or delayed past now), it reads on from
-- the start of the range.
local EMPTY = {}
local function fill(lv)
    local flat = redis.call('ZRANGEBYSCORE', lv.z, '-inf', now, 'WITHSCORES', 'LIMIT', lv.off,
        lv.size)
    lv.buf, lv.pos, lv.done = flat, 1, #flat < 2 * lv.size
    if lv.rm then lv.off = lv.off + #flat / 2 end
    lv.size = math.min(2 * lv.size, look)
end
local function new_level(z, p, size, gathers)
    return {z = z, p = p, shift = tonumber(p) * aging, buf = EMPTY, pos = 1, off = 0,
        done = false, size = size, rm = gathers and {}, add = gathers and {}}
end
-- The lane's most urgent due task: lane.lv (its level, nil: none due), lane.rank and
-- lane.m (its member).
local function head(lane)
    local best, br, bm
    for _, lv in ipairs(lane.levels) do
        if lv.pos > #lv.buf and not lv.done then fill(lv) end
        if lv.pos <= #lv.buf then
            local m = lv.buf[lv.pos]
            local r = tonumber(lv.buf[lv.pos + 1]) - lv.shift
            if not best or r < br or (r == br and m < bm) then best, br, bm = lv, r, m end
        end
    end
    lane.lv, lane.rank, lane.m = best, br, bm
    return best
end
-- The lanes with a due task, by (turn, rank of that task, its member): a binary heap. A lane
-- is in it at most once, and not while it is served, so its fields are its key.
local heap = {}
local function before(a, b)
    if a.turn ~= b.turn then return a.turn < b.turn end
    if a.rank ~= b.rank then return a.rank < b.rank end
    return a.m < b.m
end
local function offer(lane)
    if not head(lane) then return false end
    local i = #heap + 1
    heap[i] = lane
    while i > 1 do
        local up = math.floor(i / 2)
        if not before(lane, heap[up]) then break end
        heap[i], heap[up] = heap[up], lane
        i = up
    end
    return true
end
local function take()
    local top, last = heap[1], heap[#heap]
    heap[#heap] = nil
    if #heap > 0 then
        local i = 1
        heap[1] = last
        while true do
            local l, r, m = 2 * i, 2 * i + 1, i
            if l <= #heap and before(heap[l], heap[m]) then m = l end
            if r <= #heap and before(heap[r], heap[m]) then m = r end
            if m == i then break end
            heap[i], heap[m] = heap[m], heap[i]
            i = m
        end
    end
    return top
end

-- The tasks without a key: one lane over the waiting zsets of every level.
local levels = redis.call('SMEMBERS', q .. 'levels')
levels[#levels + 1] = '0'
local plain = {k = false, turn = tonumber(tv[2] or '0'), levels = {}}
local first = keyed and math.min(look, 8) or look
for _, p in ipairs(levels) do
    local z = p == '0' and waiting or waiting .. ':' .. p
    plain.levels[#plain.levels + 1] = new_level(z, p, first, true)
end
offer(plain)
for _, lv in ipairs(plain.levels) do
    if lv.p ~= '0' and lv.off == 0 and redis.call('EXISTS', lv.z) == 0 then
        redis.call('SREM', q .. 'levels', lv.p)  -- a level no longer used
    end
end

-- The keyed lanes read so far. Those never served (turn 0) are read at once, since their
-- order is their heads'; the others a page at a time, in turn order, while the most
-- urgent lane read may come after one not read yet (turns are unique, so a lane whose turn
-- is at most the last read one's comes first).
local lanes, read_all, frontier, offset, page = {}, not keyed, 0, 0, limit + 8
local function add_lanes(names, turns)
    if #names == 0 then return end
    local lvs, held = hmget(LEVELS, names), hmget(KEYRUN, names)
    for j, k in ipairs(names) do
        local ran = tonumber(held[j] or '0')
        local lane = {k = k, turn = tonumber(turns[j]), took = 0, held = ran, ran = ran}
        lanes[#lanes + 1] = lane
        if not (cap and lane.held >= cap) then  -- (else passed over: see the loop)
            lane.levels = {new_level(lkey(q, '0', k), '0', math.min(look, 2))}
            if lvs[j] then
                for p in string.gmatch(lvs[j], '%S+') do
                    lane.levels[#lane.levels + 1] = new_level(lkey(q, p, k), p, math.min(look, 2))
                end
            end
            lane.idle = not offer(lane)  -- nothing due: it sleeps (see below)
        end
    end
end
if keyed then
    local fresh = redis.call('ZRANGEBYSCORE', LANES, 0, 0)
    local zeros = {}
    for j = 1, #fresh do zeros[j] = 0 end
    add_lanes(fresh, zeros)
end
local function more_lanes()
    local flat = redis.call('ZRANGEBYSCORE', LANES, '(0', '+inf', 'WITHSCORES', 'LIMIT', offset,
        page)
    local names, turns = {}, {}
    for j = 1, #flat, 2 do
        names[#names + 1] = flat[j]
        turns[#turns + 1] = flat[j + 1]
    end
    offset = offset + #names
    if #names < page then read_all = true else frontier = tonumber(turns[#turns]) end
    page = 2 * page
    add_lanes(names, turns)
end

-- The start time the rate limit rk gives a record now (see take_slot); the last n start
-- times of each limit are read once and written back at the end.
local function slot(rk)
    local st = starts[rk]
    if not st then
        local list = q .. 'rate:' .. rk
        local times = redis.call('LRANGE', list, -rates[rk][1], -1)
        for i, t in ipairs(times) do times[i] = tonumber(t) end
        st = {rk = rk, list = list, times = times, added = {}}
        starts[rk] = st
    end
    local times, cap_n, per = st.times, rates[rk][1], rates[rk][2]
    local start = nowf
    if #times >= cap_n then start = math.max(nowf, times[#times - cap_n + 1] + per) end
    times[#times + 1] = start
    st.added[#st.added + 1] = string.format('%.17g', start)
    return start
end

local looked, stopped = 0, false
local function drop(lv, m)  -- the member leaves its level's zset (see fill)
    if lv.rm then lv.rm[#lv.rm + 1] = m else redis.call('ZREM', lv.z, m) end
end
local function delay(lv, s, m)  -- the member's score becomes s (after now)
    if lv.add then
        lv.add[#lv.add + 1] = s
        lv.add[#lv.add + 1] = m
    else
        redis.call('ZADD', lv.z, s, m)
    end
end
while n < limit and looked < look do
    while not read_all and (#heap == 0 or heap[1].turn > frontier) do more_lanes() end
    if #heap == 0 then break end
    local lane = take()
    local m, lv = lane.m, lane.lv
    if not (lane.k and cap and lane.held >= cap) then  -- (a key at its cap is passed over)
        lv.pos = lv.pos + 2
        looked = looked + 1
        lane.touched = true
        local id = string.sub(m, 18)
        local tk = P .. 'task:' .. id
        local h, status, attempts, crashes, started, reserved, name, why, row, payload, run_at,
            at, options = load(tk, id)
        if why then
            drop(lv, m)
            bury_due(id, m, h, why)
        elseif status ~= 'pending' and status ~= 'scheduled' and status ~= 'retrying' then
            drop(lv, m)  -- a stale member
        else
            -- A repeat crasher is claimed alone (see Backend.claim).
            local crasher = alone and (crashes and tonumber(crashes) or 0) >= alone
            if crasher and n > 0 then  -- (it stays at the head of its lane)
                lv.pos = lv.pos - 2
                stopped = true
                break
            end
            local rk = not reserved and (rates[name] and name or shared)
            local start = rk and slot(rk)
            if start and start > nowf then  -- over the limit: delayed, its turn kept
                local s = string.format('%.17g', start)
                redis.call('HSET', tk, 'run_at', s, 'slot', s)
                delay(lv, s, m)
            else
                local a = attempts and string.format('%d', tonumber(attempts) + 1)
                    or (row == true or not DIRTY and (not started or started == '0')) and '01'
                    or '1'  -- (see FRESH)
                if started then
                    redis.call('HSET', tk, 'status', 'reserved', 'attempts', a, 'lease_until',
                        lease, 'owner', owner, 'updated_at', now)
                else  -- (OLD)
                    redis.call('HSET', tk, 'status', 'reserved', 'attempts', a, 'lease_until',
                        lease, 'owner', owner, 'updated_at', now, 'started', attempts or '0')
                end
                if reserved then redis.call('HDEL', tk, 'slot') end
                drop(lv, m)
                leases[#leases + 1] = lease
                leases[#leases + 1] = id
                local l = left[status]
                if not l then l = {}; left[status] = l end
                l[#l + 1] = m
                n = n + 1
                answer(row, id, name, payload, run_at, at, options)
                lane.took = (lane.took or 0) + 1
                if crasher then stopped = true; break end
                counter = counter + 1
                lane.turn, lane.served = counter, true
                lane.held = (lane.held or 0) + 1
            end
        end
        if n < limit and looked < look then offer(lane) end  -- its next due task, in turn
    end
end
if stopped or n == limit or looked >= look then wake_one() end  -- (more may be due)
for _, lv in ipairs(plain.levels) do
    if #lv.rm > 0 then many('ZREM', lv.z, lv.rm) end
    if #lv.add > 0 then many('ZADD', lv.z, lv.add) end
end
lease_all()
for _, st in pairs(starts) do  -- keep the last n starts, for as long as they matter
    local last = nowf
    for _, t in ipairs(st.times) do last = math.max(last, t) end
    many('RPUSH', st.list, st.added)
    redis.call('LTRIM', st.list, -rates[st.rk][1], -1)
    local ms = math.floor((last - nowf + rates[st.rk][2]) * 1000) + 1000
    redis.call('PEXPIRE', st.list, string.format('%d', ms))
end

-- The earliest run_at of a lane's waiting tasks now (nil: none): the next buffered member
-- of a level (members before it left, or moved after now), else the head of its zset; a
-- level whose zset is gone is unlisted.
local function lane_at(lane)
    local best, kept, gone = nil, {}, false
    for _, lv in ipairs(lane.levels) do
        local at = lv.buf[lv.pos + 1]
        if not at then at = redis.call('ZRANGE', lv.z, 0, 0, 'WITHSCORES')[2] end
        if at and (not best or tonumber(at) < tonumber(best)) then best = at end
        if lv.p ~= '0' then
            if at then kept[#kept + 1] = lv.p else gone = true end
        end
    end
    if gone then
        if #kept == 0 then
            redis.call('HDEL', LEVELS, lane.k)
        else
            redis.call('HSET', LEVELS, lane.k, table.concat(kept, ' '))
        end
    end
    return best
end
-- Where each keyed lane read stands now: forgotten once it has no waiting task (see
-- Backend.claim), asleep while none is due, else awake with its new turn.
local function forget(k)
    redis.call('ZREM', LANES, k)
    redis.call('ZREM', DUE, k)
    redis.call('ZREM', LATER, k)
    redis.call('HDEL', TURNS, k)
    redis.call('HDEL', LEVELS, k)
end
local dues, served, runs = {}, {}, {}  -- (score, key) and (key, count) pairs: one write each
for _, lane in ipairs(lanes) do
    if lane.took > 0 then
        runs[#runs + 1] = lane.k
        runs[#runs + 1] = lane.ran + lane.took
    end
    if lane.touched or lane.idle then
        local at = lane_at(lane)
        if not at then
            forget(lane.k)
        elseif tonumber(at) > nowf then
            redis.call('ZREM', LANES, lane.k)
            redis.call('ZREM', DUE, lane.k)
            redis.call('ZADD', LATER, at, lane.k)
            if lane.turn > 0 then redis.call('HSET', TURNS, lane.k, lane.turn) end
        else
            dues[#dues + 1] = at
            dues[#dues + 1] = lane.k
            if lane.served then
                served[#served + 1] = lane.turn
                served[#served + 1] = lane.k
            end
        end
    end
end
if #dues > 0 then many('ZADD', DUE, dues) end
if #runs > 0 then many('HSET', KEYRUN, runs) end
if #served > 0 then many('ZADD', LANES, served) end
if keyed then  -- lanes emptied since the last claim
    local drained = redis.call('SMEMBERS', q .. 'lanes:drained')
    for _, k in ipairs(drained) do
        if not redis.call('ZSCORE', DUE, k) and not redis.call('ZSCORE', LATER, k) then
            forget(k)
        end
    end
    if #drained > 0 then redis.call('DEL', q .. 'lanes:drained') end
end
-- The tasks without a key lose their turn once none waits; with no turn left to remember,
-- the count starts again.
local t0 = plain.turn
if t0 > 0 then
    local zs = {}
    for _, lv in ipairs(plain.levels) do zs[#zs + 1] = lv.z end
    if redis.call('EXISTS', unpack(zs)) == 0 then t0 = 0 end
end
if t0 == 0 and redis.call('EXISTS', LANES, LATER) == 0 then
    redis.call('DEL', turn)
else
    if counter ~= counter0 then redis.call('HSET', turn, 'n', string.format('%d', counter)) end
    if t0 ~= tonumber(tv[2] or '0') then
        if t0 == 0 then
            redis.call('HDEL', turn, '')
        else
            redis.call('HSET', turn, '', string.format('%d', t0))
        end
    end
end
inbox_unkeep(queue)
return out
