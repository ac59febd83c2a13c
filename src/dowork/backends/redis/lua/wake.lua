-- ARGV: P, queue, at. A task of the queue falls due at `at` (a retry's run_at): wake one idle
-- worker with a token (see inbox_wake), which it claims with as now. Self-contained.

local P = ARGV[1]
--#include checks
--#include inbox

inbox_wake(ARGV[2], 1, ARGV[3])
return 1
