"""Queue.submit rejects extra positional arguments."""

import dowork


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


q = dowork.Queue("x")
# expect: matches argument types "Callable[[int, str], int]", "int", "str", "int"
q.submit(sync_fn, 1, "a", 2)
