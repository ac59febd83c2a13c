-- A Redis at maxmemory with noeviction refuses a script's first write if that command may grow
-- memory (HSET, ZADD...), but lets every write through once the script has written: a worker's
-- own scripts (claim, heartbeat, beat, reap, drain) start with a DEL of a key that never
-- exists, so that a full Redis can always be drained. They move tasks between structures (a
-- few bytes more at most) and settlements free memory; only producers' pushes are refused, as
-- BackendFull.

redis.call('DEL', P .. 'never')
