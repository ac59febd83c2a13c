"""Queue.call_at takes a datetime or epoch seconds, not a string."""

import dowork


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


q = dowork.Queue("x")
# expect: No overload variant of "call_at" of "Queue" matches argument types "str"
q.call_at("tomorrow", sync_fn, 1, "a")
