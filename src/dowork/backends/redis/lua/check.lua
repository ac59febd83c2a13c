--#include base

local seen = {}
for i = 3, #ARGV do
    local id = ARGV[i]
    if seen[id] or redis.call('EXISTS', tkey(id)) == 1 then
        redis.call('SET', ARGV[2], '1')
        return id
    end
    seen[id] = true
end
return ''
