-- ARGV: P, queue ('' = every queue). Drains the inbox (see include/inbox.lua); returns 1 if a
-- queue's inbox still holds entries (a drain takes 1000 at most), else 0.
--#include prelude
--#include inbox

local function body()
local queues = {ARGV[2]}
if ARGV[2] == '' then queues = redis.call('SMEMBERS', P .. 'queues') end
local more = 0
for _, queue in ipairs(queues) do
    drain(queue)
    if redis.call('EXISTS', qkey(queue, 'inbox')) == 1 then more = 1 end
end
return more
end
--#include may_fill
--#include flush
