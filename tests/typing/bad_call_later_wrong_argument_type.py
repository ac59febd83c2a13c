"""Queue.call_later checks the function's arguments."""

import dowork


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


q = dowork.Queue("x")
q.call_later(1.0, sync_fn, 1, b=2)  # expect: Argument "b" to "call_later" of "Queue"
