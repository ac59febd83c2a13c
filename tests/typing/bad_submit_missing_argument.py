"""Queue.submit rejects a call that leaves out a parameter."""

import dowork


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


q = dowork.Queue("x")
# expect: matches argument types "Callable[[int, str], int]", "int"
q.submit(sync_fn, 1)
