-- Reading stored records. A task hash may have been written by an older or hostile writer, so
-- every script reads a record through these checks before it writes anything: a record that
-- fails them is left alone (no script stops half way), and the claim, the settle and the reaper
-- move it to the dead letters with reason malformed (bury), its other fields kept for
-- `dowork inspect`. CHECKS is the table of the stored fields and their tests; Python adds the
-- check Lua cannot make cheaply (text that is not UTF-8: see records.py), and the worker checks
-- the payload and options, as on every backend. Needs only P.

-- A finite number written as Python's repr writes one ("12", "1.5", "1e+16"), or nil: Lua's
-- tonumber alone takes "nan", "inf", "0x1f" and spaces, which Redis and Python refuse.
local function decimal(s)
    local x = tonumber(s)
    if x and x - x == 0 and #s <= 40 and string.find(s, '^[0-9.eE+-]+$') then  -- (finite)
        return x
    end
    return nil
end
local function count_ok(s) return #s <= 15 and string.find(s, '^%d+$') ~= nil end
local function seq_ok(s) return #s == 16 and string.find(s, '^[0-9a-f]+$') ~= nil end
-- The statuses a record may hold, and those of a leased task (claimed: reserved until its
-- function starts, then running; both are listed from the running zset, which holds every
-- lease). Comparisons, not tables: a table is built at every run of a script (5k
-- instructions for the nine statuses), and most runs never ask.
local function status_ok(s)
    return s == 'pending' or s == 'scheduled' or s == 'retrying' or s == 'reserved'
        or s == 'running' or s == 'succeeded' or s == 'failed' or s == 'cancelled' or s == 'dead'
end
local function leased(s) return s == 'reserved' or s == 'running' end
-- A list of at most 16 lease tokens (see charge).
local function tokens_ok(s) return #s <= 16 * 16 and string.find(s, '^[%d,]*$') ~= nil end
-- A priority: -9 to 9. (Tables are built at every run of a script, so the checks that only
-- a bad record needs are functions, or built when first needed: see unreadable.)
local function level_ok(s)
    return s == '0' or #s <= 2 and string.find(s, '^%-?[1-9]$') ~= nil
end
-- The stored fields a worker reads (NEEDED must be there), and what each must hold when
-- present (CHECKS, built by unreadable). The id is the key's: an id field, which versions
-- before 2026-12-07 wrote, must match it.
local NEEDED, CHECKS, NEED = nil, nil, nil  -- (built by unreadable, as few runs need them)
-- A HGETALL list as a table of fields.
local function fields(h)
    local v = {}
    for j = 1, #h, 2 do v[h[j]] = h[j + 1] end
    return v
end
-- A stored value as an error message shows it: printable, at most 40 characters.
local function shown(s)
    local cut = string.gsub(string.sub(s, 1, 40), '[^%w%p ]', '?')
    if #s > 40 then cut = cut .. '...' end
    return "'" .. cut .. "'"
end
-- Why the record (HGETALL list h) of id in queue cannot be read, or nil if it can: one pass
-- over its fields (a claim reads every record it hands out). A record made of a malformed
-- inbox entry says why in its malformed field (see inbox_put).
local function unreadable(h, id, queue)
    if not CHECKS then
        CHECKS = {
            status = status_ok,
            run_at = decimal, created_at = decimal, updated_at = decimal, finished_at = decimal,
            slot = decimal,
            attempts = count_ok, crashes = count_ok, started = count_ok, lost = count_ok,
            charged = tokens_ok,
            priority = level_ok,
            seq = seq_ok,
        }
        NEEDED = {'queue', 'name', 'payload', 'status', 'run_at', 'created_at', 'seq'}
        NEED = {}
        for _, f in ipairs(NEEDED) do NEED[f] = true end
    end
    local got = 0
    for j = 1, #h, 2 do
        local f, s = h[j], h[j + 1]
        local test = CHECKS[f]
        if test then
            if not test(s) then return f .. ' is ' .. shown(s) end
        elseif f == 'malformed' then
            return s
        elseif f == 'id' and s ~= id then
            return 'id ' .. shown(s) .. ' does not match its key'
        end
        if NEED[f] then
            got = got + 1
            if f == 'queue' and queue and s ~= queue then
                return 'queue ' .. shown(s) .. ' is not the queue holding it'
            end
        end
    end
    if got < #NEEDED then
        local v = fields(h)
        for _, f in ipairs(NEEDED) do
            if not v[f] then return f .. ' is missing' end
        end
    end
    return nil
end
-- Move the record of id (listing member m, or nil if its seq cannot be read; fields v) of
-- queue to the dead letters with reason malformed (why: see unreadable), kept until expires.
-- old is the status it is counted in (a leased one, a waiting one, or nil: the listing holding
-- m says). Its other fields stay as they were; its queue, and a seq or created_at that
-- cannot be read, are replaced, so that it is listed and counted like any dead letter.
local function bury(queue, id, m, v, why, old, now, expires)
    local q = P .. 'q:' .. queue .. ':'
    local key = P .. 'task:' .. id
    if not old and m then
        for _, s in ipairs({'pending', 'scheduled', 'retrying'}) do
            if redis.call('ZSCORE', q .. 'created.' .. s, m) then old = s; break end
        end
    end
    if old then
        if not leased(old) and m then redis.call('ZREM', q .. 'created.' .. old, m) end
        redis.call('HINCRBY', q .. 'counts', old, -1)
    end
    if not m then m = string.format('%016x', redis.call('INCR', P .. 'seq')) .. ':' .. id end
    local at = decimal(v.created_at) and v.created_at or now
    redis.call('HSET', key, 'status', 'dead', 'reason', 'malformed',
        'error', 'malformed record: ' .. why, 'queue', queue, 'seq', string.sub(m, 1, 16),
        'created_at', at,
        'updated_at', now, 'expires_at', expires)
    redis.call('ZADD', q .. 'created.dead', at, m)
    if redis.call('HINCRBY', q .. 'counts', 'dead', 1) == 1 then
        redis.call('SADD', P .. 'queues', queue)
    end
    redis.call('ZADD', P .. 'expiry', expires, id)
end
-- Add the (score, member) pairs of list to the listing or waiting zset key, as a skiplist. A
-- small zset is a listpack (up to zset-max-listpack-entries, 128 by default), and each insert
-- into one parses the score of every member before it (strtod of a repr time: ~80k
-- instructions to insert a member among 50, 8k into a skiplist). A member longer than
-- zset-max-listpack-value (SPARE: 80 bytes, the first 0xff, in no UTF-8 id or member) makes it
-- a skiplist, which stays one when that member goes again at once: nobody ever sees it. (A
-- literal costs nothing at a run, string.rep some 5k instructions.)
local SPARE = '\255~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~'
local function zadd_all(key, list)
    local convert = redis.call('OBJECT', 'ENCODING', key) ~= 'skiplist'
    for i = 1, #list, 4000 do
        local j = math.min(i + 3999, #list)
        if convert and i == 1 then
            redis.call('ZADD', key, '+inf', SPARE, unpack(list, i, j))
        else
            redis.call('ZADD', key, unpack(list, i, j))
        end
    end
    if convert then redis.call('ZREM', key, SPARE) end
end
