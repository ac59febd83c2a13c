"""Queue.submit rejects a keyword the function does not take."""

import dowork


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


q = dowork.Queue("x")
q.submit(sync_fn, 1, c="a")  # expect: Unexpected keyword argument "c"
