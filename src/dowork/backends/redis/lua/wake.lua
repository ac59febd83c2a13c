
local P = ARGV[1]
--#include inbox

inbox_wake(ARGV[2], 1, ARGV[3])
return 1
