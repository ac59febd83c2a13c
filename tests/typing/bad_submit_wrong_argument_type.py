"""Queue.submit checks the arguments against the function's parameters."""

import dowork


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


q = dowork.Queue("x")
# expect: matches argument types "Callable[[int, str], int]", "str", "str"
q.submit(sync_fn, "not-int", "a")
