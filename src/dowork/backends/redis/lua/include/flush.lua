-- The end of a script that gathers its writes: the script's body (a function, after
-- prelude.lua) runs after the lines above this include, may_fill.lua for a worker's script that
-- must run at maxmemory too, and drain_all() for one that reads or writes waiting tasks (it
-- moves every queue's inbox into the store, so that the body sees the tasks pushed there; those
-- that touch only running or finished tasks need not). Then flush() writes what the body
-- gathered, and the script returns the body's answer.

local r = body()
flush()
return r
